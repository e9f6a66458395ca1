import type { Envelope } from './envelope.js';

/**
 * The durable queue between rules and the uplink. `append` runs inside the caller's store
 * transaction. Rows leave only through `ack` (the cloud broker acknowledged them) or a counted
 * drop by policy.
 */
export interface OutboxRow {
  readonly rowid: number;
  /** The envelope as JSON text, kept as text so a batch is built without re-encoding. */
  readonly body: string;
  readonly bytes: number;
}

export interface OutboxStats {
  readonly depth: number;
  readonly bytes: number;
  readonly appended: number;
  readonly delivered: number;
  readonly dropped: number;
}

export interface Outbox {
  append(envelopes: readonly Envelope[]): void;
  /** Oldest rows with rowid greater than `afterRowid`, at most `limit`. */
  peek(afterRowid: number, limit: number): OutboxRow[];
  /** Delete rows `first..last` (inclusive) after the cloud acknowledged them; returns rows deleted. */
  ack(first: number, last: number): number;
  stats(): OutboxStats;
}
