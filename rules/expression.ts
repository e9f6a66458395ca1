import { lazyModule } from '../runtime/contracts/index.js';
import { checkArgs, EXPRESSION_FUNCTIONS, expressionFunction } from './expression-functions.js';
import { boolize, EvaluationError, isNumber, show, toText } from './expression-values.js';

/** The JSONata parser, loaded by the first rule with an expression. */
const jsonata = lazyModule<typeof import('jsonata')>('jsonata');

/**
 * Rule expressions in JSONata syntax, the language Node-RED users already write. JSONata parses
 * them (its syntax, its error messages and positions); we compile the parsed tree into plain
 * closures. JSONata's own evaluator returns a Promise per evaluation and walks the tree every
 * time (about 3 µs for `value > 50` on this machine), too slow and not synchronous for a rule
 * engine that runs inside the store's transaction; the closures follow JSONata's semantics (checked
 * against it by a differential test) for the subset that applies to one reading: its fields,
 * literals, arithmetic, comparison, `and`/`or`, `&`, `in`, conditionals, blocks and a set of
 * functions. Anything else (paths into structures, lambdas, variables, regexes, objects) is
 * refused when the rule is validated, with its position. No eval, no Function.
 */

/** What an expression sees: the reading's fields. */
export type Scope = Readonly<Record<string, unknown>>;
export type Compiled = (scope: Scope) => unknown;

/** A problem with an expression: where (1-based character position in its text) and what. */
export class ExpressionError extends Error {
  constructor(
    message: string,
    readonly position: number | undefined,
    readonly code?: string,
  ) {
    super(position === undefined ? message : `${message} (at character ${position})`);
  }
}

export { boolize, EvaluationError } from './expression-values.js';
export { EXPRESSION_FUNCTIONS } from './expression-functions.js';

interface Node {
  readonly type: string;
  readonly value?: unknown;
  readonly position?: number;
  readonly steps?: readonly Node[];
  readonly stages?: readonly Node[];
  readonly predicate?: readonly Node[];
  readonly group?: unknown;
  readonly focus?: unknown;
  readonly index?: unknown;
  readonly tuple?: unknown;
  readonly keepArray?: boolean;
  readonly lhs?: Node;
  readonly rhs?: Node;
  readonly expression?: Node;
  readonly expressions?: readonly Node[];
  readonly condition?: Node;
  readonly then?: Node;
  readonly else?: Node;
  readonly procedure?: Node;
  readonly arguments?: readonly Node[];
}

/** Parses and compiles `text`; `fields` are the names an expression may read. */
export function compileExpression(text: string, fields: readonly string[]): Compiled {
  let ast: Node;
  try {
    ast = jsonata()(text).ast() as unknown as Node;
  } catch (err) {
    const e = err as { message?: string; position?: number; code?: string };
    throw new ExpressionError(e.message ?? String(err), e.position, e.code);
  }
  return compile(ast, new Set(fields));
}

function refuse(node: Node, what: string): never {
  throw new ExpressionError(`${what} is not supported in rule expressions`, node.position);
}

function compile(node: Node, fields: ReadonlySet<string>): Compiled {
  switch (node.type) {
    case 'number':
    case 'string':
    case 'value': {
      const v = node.value;
      return () => v;
    }
    case 'path':
      return compilePath(node, fields);
    case 'name':
      return compilePath({ type: 'path', steps: [node] }, fields);
    case 'block': {
      const parts = (node.expressions ?? []).map((e) => compile(e, fields));
      if (parts.length === 1) return parts[0]!;
      return (s) => {
        let r: unknown;
        for (const p of parts) r = p(s);
        return r;
      };
    }
    case 'unary':
      if (node.value === '-') {
        const e = compile(node.expression!, fields);
        return (s) => negate(e(s));
      }
      if (node.value === '[') {
        const items = (node.expressions ?? []).map((e) => {
          if (e.type === 'binary' && e.value === '..') refuse(e, 'a range');
          return compile(e, fields);
        });
        return (s) => {
          const out: unknown[] = [];
          for (const item of items) {
            const v = item(s);
            if (v !== undefined) out.push(v);
          }
          return out;
        };
      }
      return refuse(node, node.value === '{' ? 'an object constructor' : `the operator ${String(node.value)}`);
    case 'binary':
      return compileBinary(node, fields);
    case 'condition': {
      const c = compile(node.condition!, fields);
      const t = compile(node.then!, fields);
      const e = node.else ? compile(node.else, fields) : undefined;
      return (s) => (boolize(c(s)) ? t(s) : e?.(s));
    }
    case 'function':
      return compileCall(node, fields);
    case 'variable':
      return refuse(node, node.value === '' ? 'the context variable $' : `the variable $${String(node.value)}`);
    case 'lambda':
      return refuse(node, 'a function definition');
    case 'partial':
      return refuse(node, 'a partial function application');
    case 'apply':
      return refuse(node, 'the ~> operator');
    case 'bind':
      return refuse(node, 'an assignment');
    case 'regex':
      return refuse(node, 'a regular expression');
    case 'transform':
      return refuse(node, 'a transform');
    case 'wildcard':
    case 'descendant':
    case 'parent':
      return refuse(node, 'a wildcard or parent path');
    default:
      return refuse(node, `a ${node.type} expression`);
  }
}

function compilePath(node: Node, fields: ReadonlySet<string>): Compiled {
  const steps = node.steps ?? [];
  const step = steps[0];
  // A field declared as `name.*` is a map of names to values (a device's labels): `labels.line`.
  const key = steps[1];
  if (steps.length === 2 && step?.type === 'name' && key?.type === 'name' && fields.has(`${String(step.value)}.*`)) {
    for (const s of steps) if (s.stages?.length || s.predicate?.length || s.group || s.focus || s.index || s.tuple) return refuse(s, 'a filter or index on a field');
    const map = String(step.value);
    const name = String(key.value);
    return (s) => {
      const m = s[map];
      return m !== null && typeof m === 'object' && Object.hasOwn(m, name) ? (m as Record<string, unknown>)[name] : undefined;
    };
  }
  if (steps.length !== 1 || !step || step.type !== 'name') return refuse(step ?? node, 'a path into a structure (readings are flat)');
  if (step.stages?.length || step.predicate?.length || step.group || step.focus || step.index || step.tuple || node.keepArray) return refuse(step, 'a filter or index on a field');
  const name = String(step.value);
  if (!fields.has(name)) throw new ExpressionError(`unknown field "${name}"; a reading has ${[...fields].join(', ')}`, step.position);
  return (s) => s[name];
}

type Binary = (l: unknown, r: unknown) => unknown;

const ARITHMETIC: Record<string, (a: number, b: number) => number> = {
  '+': (a, b) => a + b,
  '-': (a, b) => a - b,
  '*': (a, b) => a * b,
  '/': (a, b) => a / b,
  '%': (a, b) => a % b,
};

function compileBinary(node: Node, fields: ReadonlySet<string>): Compiled {
  const op = String(node.value);
  const l = compile(node.lhs!, fields);
  const r = compile(node.rhs!, fields);
  // `and` / `or` evaluate their right side only when needed, as JSONata does.
  if (op === 'and') return (s) => boolize(l(s)) && boolize(r(s));
  if (op === 'or') return (s) => boolize(l(s)) || boolize(r(s));
  let f: Binary;
  const arith = ARITHMETIC[op];
  if (arith) f = (a, b) => arithmetic(op, arith, a, b);
  else if (op === '<' || op === '<=' || op === '>' || op === '>=') f = (a, b) => compare(op, a, b);
  else if (op === '=') f = (a, b) => a !== undefined && b !== undefined && deepEqual(a, b);
  else if (op === '!=') f = (a, b) => a !== undefined && b !== undefined && !deepEqual(a, b);
  else if (op === '&') f = (a, b) => (a === undefined ? '' : toText(a)) + (b === undefined ? '' : toText(b));
  else if (op === 'in') f = (a, b) => a !== undefined && b !== undefined && (Array.isArray(b) ? b : [b]).some((x) => x === a);
  else return refuse(node, op === '..' ? 'a range' : `the operator ${op}`);
  return (s) => f(l(s), r(s));
}

function arithmetic(op: string, f: (a: number, b: number) => number, a: unknown, b: unknown): unknown {
  if (a !== undefined && !isNumber(a)) throw new EvaluationError('T2001', `the left side of "${op}" must be a number, not ${show(a)}`);
  if (b !== undefined && !isNumber(b)) throw new EvaluationError('T2002', `the right side of "${op}" must be a number, not ${show(b)}`);
  if (a === undefined || b === undefined) return undefined;
  return f(a, b);
}

function compare(op: string, a: unknown, b: unknown): unknown {
  const ta = typeof a;
  const tb = typeof b;
  const ok = (t: string): boolean => t === 'undefined' || t === 'string' || t === 'number';
  if (!ok(ta) || !ok(tb)) throw new EvaluationError('T2010', `both sides of "${op}" must be numbers or strings, not ${show(a)} and ${show(b)}`);
  if (ta === 'undefined' || tb === 'undefined') return undefined;
  if (ta !== tb) throw new EvaluationError('T2009', `both sides of "${op}" must be of the same type, not ${show(a)} and ${show(b)}`);
  const x = a as number | string;
  const y = b as number | string;
  return op === '<' ? x < y : op === '<=' ? x <= y : op === '>' ? x > y : x >= y;
}

function negate(v: unknown): unknown {
  if (v === undefined) return undefined;
  if (isNumber(v)) return -v;
  throw new EvaluationError('D1002', `cannot negate ${show(v)}`);
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  return false;
}

function compileCall(node: Node, fields: ReadonlySet<string>): Compiled {
  const proc = node.procedure;
  if (!proc || proc.type !== 'variable') return refuse(node, 'calling this');
  const name = String(proc.value);
  const fn = expressionFunction(name);
  if (!fn) throw new ExpressionError(`unknown function $${name}; rule expressions may call ${EXPRESSION_FUNCTIONS.map((f) => `$${f}`).join(', ')}`, proc.position);
  const args = (node.arguments ?? []).map((a) => {
    if (a.type === 'operator' && a.value === '?') refuse(a, 'a partial function application');
    return compile(a, fields);
  });
  if (args.length < fn.min || args.length > fn.max) {
    throw new ExpressionError(`$${name} takes ${fn.min === fn.max ? fn.min : `${fn.min} to ${fn.max}`} argument(s), not ${args.length}`, node.position);
  }
  return (s) => {
    const values = args.map((a) => a(s));
    checkArgs(name, fn, values);
    return fn.call(values);
  };
}
