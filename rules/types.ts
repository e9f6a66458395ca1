/** Rule definitions as the engine needs them; the runtime's validated site config satisfies these. */
export interface RuleMatch {
  readonly device: string;
  readonly point: string;
}

export interface FilterRuleSpec {
  readonly id: string;
  readonly type: 'filter';
  readonly match: RuleMatch;
  readonly min?: number | undefined;
  readonly max?: number | undefined;
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
