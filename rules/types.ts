/** Rule definitions as the engine needs them; the runtime's validated site config satisfies these. */
export interface RuleMatch {
  readonly device: string;
  readonly point: string;
  /** An MQTT topic filter (`+`, `#`) matched against `{device}/{point}`. */
  readonly topic?: string | undefined;
}

export type GroupKey = 'device' | 'point' | 'unit';

export interface FilterRuleSpec {
  readonly id: string;
  readonly type: 'filter';
  readonly match: RuleMatch;
  readonly min?: number | undefined;
  readonly max?: number | undefined;
  /** A JSONata expression over the reading's fields; the reading passes when it is true. */
  readonly where?: string | undefined;
  /** JSONata expressions giving the passed reading a new value, point name or unit. */
  readonly set?: { readonly value?: string | undefined; readonly point?: string | undefined; readonly unit?: string | undefined } | undefined;
  /** Readings whose quality is not good: pass untouched (default), drop, or go through `where` too. */
  readonly bad?: 'pass' | 'drop' | 'filter' | undefined;
  /** What the stateful operators keep their memory per; default device and point. */
  readonly groupBy?: readonly GroupKey[] | undefined;
  /** Pass a good reading only when it moved beyond this since the last one passed. */
  readonly deadband?: { readonly absolute?: number | undefined; readonly percent?: number | undefined } | undefined;
  /** Pass a good reading only when its value differs from the last one passed. */
  readonly changeOfValue?: boolean | undefined;
  /** At most `count` good readings per group in any `perMs` window (fixed windows from the first). */
  readonly rateLimit?: { readonly count: number; readonly perMs: number } | undefined;
  readonly route: 'cloud';
  readonly stream: string;
}

export type AggregateFn = 'avg' | 'min' | 'max' | 'count';

export interface WindowRuleSpec {
  readonly id: string;
  readonly type: 'window';
  readonly match: RuleMatch;
  readonly windowMs: number;
  readonly aggregates: readonly AggregateFn[];
  readonly route: 'cloud';
  readonly stream: string;
}

export type RuleSpec = FilterRuleSpec | WindowRuleSpec;
