import jsonata from 'jsonata';
import { describe, expect, it } from 'vitest';
import { compileExpression, ExpressionError, type Scope } from '../../rules/expression.js';

const FIELDS = ['value', 'device', 'point', 'quality', 'ts', 'unit'];

function rng(seed: number): (n: number) => number {
  let s = seed;
  return (n) => (s = (s * 16807) % 2147483647) % n;
}

/** A random expression of the supported subset, small enough to read in a failure message. */
function randomExpression(r: (n: number) => number, depth: number): string {
  const leaf = (): string => {
    switch (r(7)) {
      case 0:
        return ['value', 'device', 'point', 'quality', 'unit', 'ts'][r(6)]!;
      case 1:
        return String([0, 1, -2, 2.5, 3.5, 50, 0.1, 1e3, 12.345][r(9)]);
      case 2:
        return JSON.stringify(['', 'a', 'good', 'm1', 'temp', '12', 'x y'][r(7)]);
      case 3:
        return ['true', 'false', 'null'][r(3)]!;
      case 4:
        return 'nothing';
      default:
        return 'value';
    }
  };
  if (depth <= 0) return leaf();
  const sub = (): string => randomExpression(r, depth - 1);
  switch (r(12)) {
    case 0:
    case 1:
      return `(${sub()} ${['+', '-', '*', '/', '%'][r(5)]} ${sub()})`;
    case 2:
    case 3:
      return `(${sub()} ${['<', '<=', '>', '>=', '=', '!='][r(6)]} ${sub()})`;
    case 4:
      return `(${sub()} ${['and', 'or'][r(2)]} ${sub()})`;
    case 5:
      return `(${sub()} & ${sub()})`;
    case 6:
      return `(${sub()} ? ${sub()}${r(2) ? ` : ${sub()}` : ''})`;
    case 7:
      return `(${sub()} in [${sub()}, ${sub()}])`;
    case 8:
      return `-${leaf()}`;
    case 9: {
      const f = ['abs', 'floor', 'ceil', 'round', 'sqrt', 'string', 'number', 'boolean', 'not', 'exists', 'length', 'uppercase', 'trim'][r(13)];
      return `$${f}(${sub()})`;
    }
    case 10: {
      const f = ['round', 'power', 'contains', 'substring'][r(4)];
      return `$${f}(${sub()}, ${sub()})`;
    }
    default:
      return `$${['max', 'min', 'sum', 'average'][r(4)]}([${sub()}, ${sub()}])`;
  }
}

function randomReading(r: (n: number) => number): Scope {
  const values = [0, 1, 60, -3.5, 2.5, 1234.5678, 0.1, null, true, false, 'hot', '12', ''];
  const reading: Record<string, unknown> = {
    value: values[r(values.length)],
    device: ['m1', 'pump-2', ''][r(3)],
    point: ['temp', 'flow'][r(2)],
    quality: ['good', 'bad', 'stale'][r(3)],
    ts: 1_764_000_000_000 + r(1000),
  };
  if (r(2)) reading.unit = 'degC';
  return reading;
}

type Outcome = { ok: true; value: unknown } | { ok: false };

function normalize(v: unknown): unknown {
  if (Array.isArray(v)) return Array.from(v, normalize);
  if (typeof v === 'number' && Object.is(v, -0)) return 0;
  return v;
}

describe('rule expressions', () => {
  it('evaluate exactly as JSONata does, on thousands of random expressions and readings', async () => {
    const r = rng(Number(process.env.EXPR_SEED ?? 42));
    let compared = 0;
    let errors = 0;
    const mismatches: unknown[] = [];
    for (let i = 0; i < 3000 * Number(process.env.EXPR_ROUNDS ?? 1); i++) {
      const text = randomExpression(r, 1 + r(3));
      const scope = randomReading(r);
      const ours: Outcome = (() => {
        try {
          return { ok: true, value: normalize(compileExpression(text, [...FIELDS, 'nothing'])(scope)) };
        } catch {
          return { ok: false };
        }
      })();
      let theirs: Outcome;
      try {
        theirs = { ok: true, value: normalize(await jsonata(text).evaluate(scope)) };
      } catch {
        theirs = { ok: false };
      }
      if (!theirs.ok) errors++;
      if (JSON.stringify(ours) !== JSON.stringify(theirs) || ours.ok !== theirs.ok) mismatches.push({ text, scope, ours, theirs });
      compared++;
    }
    expect(mismatches.slice(0, 8)).toEqual([]);
    expect(compared).toBe(3000 * Number(process.env.EXPR_ROUNDS ?? 1));
    // Both outcomes occur often enough to mean something.
    expect(errors).toBeGreaterThan(compared * 0.03);
    expect(errors).toBeLessThan(compared * 0.85);
  });

  it('refuse what they do not support, naming it and where it is', () => {
    const cases: Array<[string, RegExp]> = [
      ['value.x > 1', /path into a structure.*character/],
      ['$x := 1', /assignment/],
      ['function($v){$v}', /function definition/],
      ['value ~> $abs()', /~>/],
      ['$', /context variable/],
      ['/ab/', /regular expression/],
      ['{"a": 1}', /object constructor/],
      ['[1..3]', /range/],
      ['value[0]', /filter or index/],
      ['$eval("1")', /unknown function \$eval.*\$abs/],
      ['$round()', /takes 1 to 2 argument/],
      ['temperature > 1', /unknown field "temperature"; a reading has value, device/],
      ['value > > 1', /cannot be used as a unary operator \(at character 9\)/],
      ['value > (1', /character/],
    ];
    for (const [text, message] of cases) {
      let error: unknown;
      try {
        compileExpression(text, FIELDS);
      } catch (err) {
        error = err;
      }
      expect(error, text).toBeInstanceOf(ExpressionError);
      expect((error as Error).message, text).toMatch(message);
    }
  });

  it('compile once and evaluate without a Promise', () => {
    const f = compileExpression('quality = "good" and value > 50 ? $round(value * 1.8 + 32, 1) : null', FIELDS);
    expect(f({ quality: 'good', value: 60 })).toBe(140);
    expect(f({ quality: 'good', value: 10 })).toBe(null);
    expect(f({ quality: 'bad', value: null })).toBe(null);
  });
});
