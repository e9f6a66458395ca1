/**
 * What a stream does when it is over its byte budget. A policy is a strategy the outbox consults
 * for each stream: whether to measure each new reading against the budget before taking it, and
 * what to give up after an append. Every reading refused or given up is counted as `dropped`.
 */
export interface OverflowPolicy {
  readonly name: string;
  /** True when each new reading must pass `admit` before it is taken. */
  readonly measuresEach: boolean;
  /** A new reading of `size` bytes for a stream holding `bytes` of its `quotaBytes`: take it (true) or refuse it. */
  admit(bytes: number, size: number, quotaBytes: number): boolean;
  /** After an append: how many bytes the stream gives up from its oldest readings (0: none). */
  excess(bytes: number, quotaBytes: number): number;
}
