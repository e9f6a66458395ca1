import type { Acc } from './accumulator.js';

/** What an aggregate reads of a closed window: its running totals (Welford's mean and m2 for the variance). */
export type WindowTotals = Readonly<Pick<Acc, 'n' | 'sum' | 'min' | 'max' | 'first' | 'last' | 'mean' | 'm2'>>;

/**
 * One aggregate a window rule can emit, registered by name (as eKuiper registers its aggregate
 * functions): adding one is one entry in a registry, not a case in the window code.
 */
export interface Aggregate {
  /** Used in configs, output point names (`{point}.{name}`) and output ids: letters, digits, `_` and `-`. */
  readonly name: string;
  /**
   * The window keeps every value it takes (up to MAX_WINDOW_VALUES) for this aggregate. It costs
   * memory and saved-state size, so a rule keeps them only when one of its aggregates needs them.
   */
  readonly needsValues: boolean;
  /** The result counts readings instead of measuring them, so it carries no unit. */
  readonly unitless?: boolean;
  /** The window's result; null (emitted with bad quality) when it has none, e.g. no good reading. */
  compute(totals: WindowTotals, sortedValues: readonly number[]): number | null;
}

/** Linear interpolation between the two nearest ranks (numpy's default). */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const x = p * (sorted.length - 1);
  const lo = Math.floor(x);
  const hi = Math.ceil(x);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (x - lo);
}

const BUILT_IN = [
  { name: 'avg', needsValues: false, compute: (t) => (t.n === 0 ? null : t.sum / t.n) },
  { name: 'min', needsValues: false, compute: (t) => t.min },
  { name: 'max', needsValues: false, compute: (t) => t.max },
  { name: 'sum', needsValues: false, compute: (t) => t.sum },
  { name: 'count', needsValues: false, unitless: true, compute: (t) => t.n },
  { name: 'first', needsValues: false, compute: (t) => t.first },
  { name: 'last', needsValues: false, compute: (t) => t.last },
  // Population standard deviation.
  { name: 'stddev', needsValues: false, compute: (t) => (t.n === 0 ? null : Math.sqrt(t.m2 / t.n)) },
  { name: 'p50', needsValues: true, compute: (_t, sorted) => percentile(sorted, 0.5) },
  { name: 'p95', needsValues: true, compute: (_t, sorted) => percentile(sorted, 0.95) },
  { name: 'p99', needsValues: true, compute: (_t, sorted) => percentile(sorted, 0.99) },
] as const satisfies readonly Aggregate[];

/** The name of a built-in aggregate. */
export type AggregateFn = (typeof BUILT_IN)[number]['name'];

/** Aggregates by name. Immutable once built: a registry with more is a new one (`aggregateRegistry`). */
export type AggregateRegistry = ReadonlyMap<string, Aggregate>;

/** Names end up in point names and output ids, whose parts are separated by `.` and `:`. */
const NAME = /^[A-Za-z0-9_-]+$/;

/** A registry of `aggregates`; a name that is unsafe or given twice is refused. */
export function aggregateRegistry(aggregates: Iterable<Aggregate>): AggregateRegistry {
  const byName = new Map<string, Aggregate>();
  for (const a of aggregates) {
    if (!NAME.test(a.name)) throw new Error(`aggregate name "${a.name}" may only have letters, digits, "_" and "-"`);
    if (byName.has(a.name)) throw new Error(`aggregate "${a.name}" is registered twice`);
    byName.set(a.name, a);
  }
  return byName;
}

/** The aggregates Outpost ships (docs/rules.md); rule engines use these unless given another registry. */
export const BUILT_IN_AGGREGATES: AggregateRegistry = aggregateRegistry(BUILT_IN);

/** The names a site config may use (its `aggregates` enum). */
export const AGGREGATES: readonly AggregateFn[] = BUILT_IN.map((a) => a.name);

/** The aggregates `names` refer to, in order; an unknown name is an error naming what there is. */
export function resolveAggregates(names: readonly string[], registry: AggregateRegistry): Aggregate[] {
  return names.map((name) => {
    const a = registry.get(name);
    if (!a) throw new Error(`unknown aggregate "${name}"; there are ${[...registry.keys()].join(', ')}`);
    return a;
  });
}
