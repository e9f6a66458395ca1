import type { Envelope } from '../runtime/contracts/index.js';

/** Values kept per window for the aggregates that need them, and readings per sliding window, at most. */
export const MAX_WINDOW_VALUES = 50_000;

/**
 * One window's running totals. Saved as JSON with every commit (inside its group), so its fields
 * and their order are the saved state format: a window saved by an earlier release must restore.
 */
export interface Acc {
  /** Window bounds on the rule's clock; for session and count windows, first and last reading. */
  start: number;
  end: number;
  /** Stable part of the output ids (a crash re-emits a window with the same ids). */
  key: string;
  n: number;
  sum: number;
  min: number | null;
  max: number | null;
  first: number | null;
  last: number | null;
  mean: number;
  m2: number;
  /** The values taken, in arrival order: only when one of the rule's aggregates needs them. */
  values?: number[];
  /** Readings that were not good or not numbers: counted, not aggregated. */
  skipped: number;
  unit?: string | undefined;
  /** Processing time of the last reading taken (event-time windows also close when idle this long). */
  touched: number;
}

export const emptyAcc = (start: number, end: number, key: string, now: number, values: boolean): Acc => ({
  start,
  end,
  key,
  n: 0,
  sum: 0,
  min: null,
  max: null,
  first: null,
  last: null,
  mean: 0,
  m2: 0,
  ...(values ? { values: [] } : {}),
  skipped: 0,
  touched: now,
});

export function add(acc: Acc, v: number): void {
  acc.n++;
  acc.sum += v;
  acc.min = acc.min === null || v < acc.min ? v : acc.min;
  acc.max = acc.max === null || v > acc.max ? v : acc.max;
  acc.first ??= v;
  acc.last = v;
  // Welford: a running variance without keeping the values.
  const d = v - acc.mean;
  acc.mean += d / acc.n;
  acc.m2 += d * (v - acc.mean);
  if (acc.values && acc.values.length < MAX_WINDOW_VALUES) acc.values.push(v);
}

/** A reading into a window: its value (undefined when not a good number, counted as skipped) and unit. */
export function take(acc: Acc, r: Envelope, value: number | undefined, now: number): void {
  if (value === undefined) acc.skipped++;
  else add(acc, value);
  if (r.unit !== undefined) acc.unit = r.unit;
  acc.touched = now;
}
