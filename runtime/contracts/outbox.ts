import type { Envelope } from './envelope.js';
import type { ReadingBatch } from './reading-batch.js';

/**
 * The durable queue between rules and the uplink, divided into streams. Each stream has a
 * priority class, a byte budget, an optional TTL and an overflow policy. `append` runs inside the
 * caller's store transaction. Rows leave only through `ack` (the cloud broker acknowledged them),
 * expiry, a counted drop by policy, or the dead-letter table; so for each stream, over its whole
 * life: produced + replayed = delivered + expired + dropped + deadLettered + depth.
 */
export type OutboxItem = { readonly stream: string } & (
  | { readonly envelope: Envelope; readonly batch?: undefined }
  | { readonly batch: ReadingBatch; readonly envelope?: undefined }
);

export interface OutboxRow {
  readonly rowid: number;
  readonly stream: string;
  /** The envelope as JSON text, kept as text so a batch is built without re-encoding. */
  readonly body: string;
  readonly bytes: number;
  /** When the row was appended (ms since the epoch). */
  readonly createdAt: number;
}

export interface StreamStats {
  readonly stream: string;
  readonly priority: number;
  readonly depth: number;
  readonly bytes: number;
  readonly produced: number;
  readonly delivered: number;
  readonly expired: number;
  readonly dropped: number;
  readonly deadLettered: number;
  readonly replayed: number;
}

export interface OutboxStats {
  readonly depth: number;
  readonly bytes: number;
  /** Readings produced for the cloud (all streams). */
  readonly appended: number;
  readonly delivered: number;
  readonly expired: number;
  readonly dropped: number;
  readonly deadLettered: number;
  readonly replayed: number;
  readonly streams: readonly StreamStats[];
}

/** A stream of the outbox: its priority class, byte budget, TTL and what happens when it is full. */
export interface OutboxStreamConfig {
  readonly name: string;
  /** 0 is the highest priority: drained first, dropped last when the storage quota is reached. */
  readonly priority: number;
  /** Byte budget of this stream; beyond it the overflow policy applies. */
  readonly quotaBytes: number;
  readonly ttlMs?: number | undefined;
  /** The name of an overflow policy (`drop-oldest`, `reject-new`). */
  readonly overflow: string;
}

/** A reading the cloud refused, kept aside until an operator replays it. */
export interface DeadLetter {
  readonly id: number;
  readonly stream: string;
  /** The envelope as JSON text, as it was in its stream. */
  readonly body: string;
  readonly reason: string;
  /** When it was dead-lettered (ms since the epoch). */
  readonly failedAt: number;
}

/**
 * Sequence numbers: every reading stored gets a row id, unique for the life of the store (never
 * reused, also after the outbox emptied or the gateway restarted) and increasing within a stream,
 * so a late acknowledgement can never remove a newer reading.
 *
 * Transactions: `append` writes inside the caller's transaction and is counted only after the
 * caller says `committed()`; after `rolledBack()` it left no row and no count. Every other write
 * (`ack`, `deadLetter`, `expire`, `replayDeadLetters`) runs in a transaction of its own and is
 * counted when it returns; they are not called inside the caller's transaction.
 *
 * Overflow: each stream has a policy for its byte budget (refuse new readings, or drop its
 * oldest); after every write, a stream still over its budget drops its oldest, then, while the
 * whole outbox is over the storage quota, the oldest readings of the lowest-priority stream that
 * has any are dropped. Each reading refused or dropped counts as `dropped` in its stream, in the
 * same transaction.
 *
 * Readings for a stream that is not configured (or no longer: found in the store) are kept in a
 * stream of the lowest priority, drained last, with the whole quota as budget and drop-oldest.
 *
 * Reporting: every outcome committed is also added to the counter
 * `outpost_outbox_readings_total{stream, outcome}` of the Metrics the outbox was given (outcome:
 * produced, delivered, expired, dropped, dead-lettered, replayed).
 */
export interface Outbox {
  /** Stores readings in their streams, stamped `now` for their TTL; counted as `produced`. Inside the caller's transaction. */
  append(items: readonly OutboxItem[], now: number): void;
  /** Streams in drain order: highest priority (lowest number) first. */
  drainOrder(): readonly { readonly name: string; readonly priority: number }[];
  /** Oldest rows of `stream` with rowid greater than `afterRowid` (and at most `upToRowid`), at most `limit`. */
  peek(stream: string, afterRowid: number, limit: number, upToRowid?: number): OutboxRow[];
  /** The newest row id ever stored (0 when none). */
  newestRowid(): number;
  /**
   * Delete rows `first..last` of `stream` after the cloud acknowledged them; returns rows deleted.
   * Rows of the range already gone are skipped, rows outside it and of other streams are kept with
   * their ids. Each row deleted counts as `delivered`.
   */
  ack(stream: string, first: number, last: number): number;
  /**
   * Move rows to the dead-letter table (the cloud refused them); returns rows moved. Each leaves
   * its stream and counts as `deadLettered` there; ids not in the stream are skipped.
   */
  deadLetter(stream: string, rowids: readonly number[], reason: string, now: number): number;
  /**
   * Dead letters, oldest first, at most `limit` (100 when not given). Dead letters are outside
   * every stream: not in `depth`, not expired, not subject to budgets; reading them changes nothing.
   */
  listDeadLetters(limit?: number): DeadLetter[];
  /** How many dead letters there are. */
  deadLetterCount(): number;
  /**
   * Put dead letters back at the end of their streams, with new row ids, stamped `now` for their
   * TTL: all, or those of `ids` (ids not found are skipped). Each leaves the dead-letter table and
   * counts as `replayed` in its stream (so a reading dead-lettered and replayed is on both sides
   * of the equation). Replayed readings are never refused: a stream they take over its budget
   * drops its oldest, whatever its policy; then the storage quota applies. Returns rows replayed.
   */
  replayDeadLetters(now: number, ids?: readonly number[]): number;
  /** Delete rows older than their stream's TTL; returns rows expired, each counted as `expired`. */
  expire(now: number): number;
  /** After the caller's transaction that ran `append` committed: count what it did. */
  committed(): void;
  /** After it rolled back: forget what it did. */
  rolledBack(): void;
  /** Every stream (drain order) with what it holds and its committed counters, and their sums. */
  stats(): OutboxStats;
}
