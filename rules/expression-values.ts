/**
 * JSONata's value semantics for what a rule expression can produce (numbers, strings, booleans and
 * arrays of them): shared by the operators (expression.ts) and the functions (expression-functions.ts).
 */

/** Thrown by a compiled expression for a value it cannot work with (e.g. `"a" + 1`). */
export class EvaluationError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** A number JSONata can compute with: NaN is not one, an infinite one is an error. */
export function isNumber(v: unknown): v is number {
  if (typeof v !== 'number' || Number.isNaN(v)) return false;
  if (!Number.isFinite(v)) throw new EvaluationError('D1001', `number out of range: ${v}`);
  return true;
}

/** JSONata's boolean cast: NaN is false, an infinite number an error. */
export function boolize(v: unknown): boolean {
  if (v === undefined || v === null) return false;
  if (Array.isArray(v)) return v.length === 1 ? boolize(v[0]) : v.some((x) => boolize(x));
  if (typeof v === 'string') return v.length > 0;
  if (typeof v === 'number') return isNumber(v) && v !== 0;
  if (typeof v === 'boolean') return v;
  return false;
}

/** JSONata's $string for what an expression here can produce: fractions to 15 significant digits. */
export function toText(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new EvaluationError('D3001', 'attempting to invoke string function on Infinity or NaN');
    return String(Number.isInteger(v) ? v : Number(v.toPrecision(15)));
  }
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'number' && Number.isFinite(x) && !Number.isInteger(x) ? Number(x.toPrecision(15)) : x));
}

/** A value as an error message shows it. */
export function show(v: unknown): string {
  return v === undefined ? 'nothing' : JSON.stringify(v);
}
