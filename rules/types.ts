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
  /**
   * cloud: the outbox stream `stream`; alert: an alert reading (value "severity: message") to
   * `stream`; mqtt: published on the local broker at `topic` ({device} and {point} filled in);
   * write: the reading's value written to `write.device`/`write.point` (any driver with the write
   * capability; `modbus`, the earlier name of this route, is still accepted in configs); call: the
   * method `call.method` of child `call.device`, with the reading as payload.
   */
  readonly route: 'cloud' | 'alert' | 'mqtt' | 'write' | 'call';
  readonly stream: string;
  readonly alert?:
    | {
        readonly severity: 'info' | 'warning' | 'critical';
        readonly message?: string | undefined;
        readonly mode?: 'transition' | 'every' | undefined;
        readonly clearWhere?: string | undefined;
        readonly holdMs?: number | undefined;
      }
    | undefined;
  readonly mqtt?: { readonly topic: string; readonly qos: 0 | 1; readonly retain: boolean } | undefined;
  readonly write?: { readonly device: string; readonly point: string; readonly minIntervalMs: number; readonly sources: readonly string[] } | undefined;
  readonly call?: { readonly device: string; readonly method: string; readonly timeoutMs: number; readonly sources: readonly string[] } | undefined;
}

export type { AggregateFn } from './aggregates.js';

export type WindowKind = 'tumbling' | 'hopping' | 'sliding' | 'session' | 'count';

export interface WindowRuleSpec {
  readonly id: string;
  readonly type: 'window';
  readonly match: RuleMatch;
  /** Only readings this JSONata expression is true for enter the window. */
  readonly where?: string | undefined;
  readonly kind?: WindowKind | undefined;
  /** Length of tumbling, hopping and sliding windows. */
  readonly windowMs?: number | undefined;
  /** Hopping: a new window starts every hopMs. */
  readonly hopMs?: number | undefined;
  /** Session: the window closes after this long without a reading. */
  readonly gapMs?: number | undefined;
  /** Count: readings per window. */
  readonly count?: number | undefined;
  /** Which clock places a reading in a window: its own `ts` (event) or the gateway's (processing). */
  readonly time?: 'processing' | 'event' | undefined;
  /** Event time: how long after its end a window still takes readings. */
  readonly allowedLatenessMs?: number | undefined;
  readonly groupBy?: readonly GroupKey[] | undefined;
  /**
   * Names in the rule engine's aggregate registry: the built-in ones (AggregateFn, the names a site
   * config may use) unless the engine was given another registry.
   */
  readonly aggregates: readonly string[];
  /** Decimals numeric aggregates are rounded to (default 6). */
  readonly precision?: number | undefined;
  readonly route: 'cloud';
  readonly stream: string;
}

export type RuleSpec = FilterRuleSpec | WindowRuleSpec;
