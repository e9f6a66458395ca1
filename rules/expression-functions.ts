import { boolize, EvaluationError, show, toText } from './expression-values.js';

/**
 * The functions rule expressions may call, JSONata's subset for one reading's values: one entry
 * each in FUNCTIONS, with JSONata's argument checks and results (the differential test compares).
 */

const chars = (s: string): string[] => Array.from(s);

/**
 * Each function: its arity range, the type of each argument (n number, s string, a numbers or an
 * array of numbers, x anything), checked for every argument given before the call as JSONata's
 * signatures do, and the implementation.
 */
export interface ExpressionFunction {
  readonly min: number;
  readonly max: number;
  readonly types?: string;
  readonly call: (args: unknown[]) => unknown;
}

export function checkArgs(name: string, fn: ExpressionFunction, args: readonly unknown[]): void {
  const types = fn.types ?? '';
  args.forEach((v, i) => {
    const t = types[i] ?? 'x';
    if (v === undefined || t === 'x') return;
    const ok = t === 'n' ? typeof v === 'number' : t === 's' ? typeof v === 'string' : (Array.isArray(v) ? v : [v]).every((x) => typeof x === 'number');
    if (!ok) throw new EvaluationError('T0410', `argument ${i + 1} of $${name} must be ${t === 'n' ? 'a number' : t === 's' ? 'a string' : 'numbers'}, not ${show(v)}`);
  });
}

function num(name: string, v: unknown, i = 1): number {
  if (typeof v !== 'number') throw new EvaluationError('T0410', `argument ${i} of $${name} must be a number, not ${show(v)}`);
  return v;
}
function str(name: string, v: unknown, i = 1): string {
  if (typeof v !== 'string') throw new EvaluationError('T0410', `argument ${i} of $${name} must be a string, not ${show(v)}`);
  return v;
}
function numbers(name: string, v: unknown): number[] {
  const list = Array.isArray(v) ? v : [v];
  return list.map((x) => {
    if (typeof x !== 'number') throw new EvaluationError('T0412', `$${name} takes numbers, not ${show(x)}`);
    return x;
  });
}

const unary = (name: string, f: (x: number) => number): ExpressionFunction => ({
  min: 1,
  max: 1,
  types: 'n',
  call: ([x]) => (x === undefined ? undefined : f(num(name, x))),
});

function round(x: number, precision: number | undefined): number {
  let v = x;
  if (precision) {
    const [m, e] = v.toString().split('e');
    v = +`${m}e${e ? +e + precision : precision}`;
  }
  let r = Math.round(v);
  if (Math.abs(r - v) === 0.5 && Math.abs(r % 2) === 1) r -= 1;
  if (precision) {
    const [m, e] = r.toString().split('e');
    r = +`${m}e${e ? +e - precision : -precision}`;
  }
  return Object.is(r, -0) ? 0 : r;
}

const NUMBER_TEXT = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([Ee][-+]?[0-9]+)?$/;

const FUNCTIONS: Record<string, ExpressionFunction> = {
  abs: unary('abs', Math.abs),
  floor: unary('floor', Math.floor),
  ceil: unary('ceil', Math.ceil),
  sqrt: unary('sqrt', (x) => {
    if (x < 0) throw new EvaluationError('D3060', `$sqrt of a negative number: ${x}`);
    return Math.sqrt(x);
  }),
  round: {
    min: 1,
    max: 2,
    types: 'nn',
    call: ([x, p]) => (x === undefined ? undefined : round(num('round', x), p === undefined ? undefined : num('round', p, 2))),
  },
  power: {
    min: 2,
    max: 2,
    types: 'nn',
    call: ([x, p]) => {
      if (x === undefined) return undefined;
      const base = num('power', x);
      const exponent = num('power', p, 2);
      const r = Math.pow(base, exponent);
      if (!Number.isFinite(r)) throw new EvaluationError('D3061', `$power(${base}, ${exponent}) is not a finite number`);
      return r;
    },
  },
  string: { min: 1, max: 1, call: ([x]) => (x === undefined ? undefined : toText(x)) },
  number: {
    min: 1,
    max: 1,
    call: ([x]) => {
      if (x === undefined || typeof x === 'number') return x;
      if (typeof x === 'boolean') return x ? 1 : 0;
      if (typeof x === 'string' && NUMBER_TEXT.test(x)) return Number(x);
      throw new EvaluationError('D3030', `cannot cast ${show(x)} to a number`);
    },
  },
  boolean: { min: 1, max: 1, call: ([x]) => (x === undefined ? undefined : boolize(x)) },
  not: { min: 1, max: 1, call: ([x]) => (x === undefined ? undefined : !boolize(x)) },
  exists: { min: 1, max: 1, call: ([x]) => x !== undefined },
  length: { min: 1, max: 1, types: 's', call: ([x]) => (x === undefined ? undefined : chars(str('length', x)).length) },
  uppercase: { min: 1, max: 1, types: 's', call: ([x]) => (x === undefined ? undefined : str('uppercase', x).toUpperCase()) },
  lowercase: { min: 1, max: 1, types: 's', call: ([x]) => (x === undefined ? undefined : str('lowercase', x).toLowerCase()) },
  trim: { min: 1, max: 1, types: 's', call: ([x]) => (x === undefined ? undefined : str('trim', x).replace(/[ \t\n\r]+/gm, ' ').trim()) },
  contains: {
    min: 2,
    max: 2,
    types: 'ss',
    call: ([x, t]) => (x === undefined || t === undefined ? undefined : str('contains', x).includes(str('contains', t, 2))),
  },
  substring: {
    min: 2,
    max: 3,
    types: 'snn',
    call: ([x, st, len]) => {
      if (x === undefined) return undefined;
      const cs = chars(str('substring', x));
      if (st === undefined) return cs.join('');
      let start = num('substring', st, 2);
      if (cs.length + start < 0) start = 0;
      if (len === undefined) return cs.slice(start).join('');
      const n = num('substring', len, 3);
      if (n <= 0) return '';
      return cs.slice(start, start >= 0 ? start + n : cs.length + start + n).join('');
    },
  },
  max: { min: 1, max: 1, types: 'a', call: ([x]) => (x === undefined || (Array.isArray(x) && x.length === 0) ? undefined : Math.max(...numbers('max', x))) },
  min: { min: 1, max: 1, types: 'a', call: ([x]) => (x === undefined || (Array.isArray(x) && x.length === 0) ? undefined : Math.min(...numbers('min', x))) },
  sum: { min: 1, max: 1, types: 'a', call: ([x]) => (x === undefined ? undefined : numbers('sum', x).reduce((a, b) => a + b, 0)) },
  average: {
    min: 1,
    max: 1,
    types: 'a',
    call: ([x]) => {
      if (x === undefined || (Array.isArray(x) && x.length === 0)) return undefined;
      const ns = numbers('average', x);
      return ns.reduce((a, b) => a + b, 0) / ns.length;
    },
  },
};

/** The functions rule expressions may call. */
export const EXPRESSION_FUNCTIONS: readonly string[] = Object.keys(FUNCTIONS);

/** The function `$name`, if rule expressions may call it (not one inherited from Object). */
export const expressionFunction = (name: string): ExpressionFunction | undefined => (Object.hasOwn(FUNCTIONS, name) ? FUNCTIONS[name] : undefined);
