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

/** A reading the cloud kept refusing, set aside with the reason (replayable). */
export interface DeadLetter {
  readonly id: number;
  readonly stream: string;
  /** The reading as JSON text, as it was stored. */
  readonly body: string;
  readonly reason: string;
  readonly failedAt: number;
}

export interface Outbox {
  append(items: readonly OutboxItem[], now: number): void;
  /** Streams in drain order: highest priority (lowest number) first. */
  drainOrder(): readonly { readonly name: string; readonly priority: number }[];
  /** Oldest rows of `stream` with rowid greater than `afterRowid` (and at most `upToRowid`), at most `limit`. */
  peek(stream: string, afterRowid: number, limit: number, upToRowid?: number): OutboxRow[];
  /** The newest row id ever stored (0 when none). */
  newestRowid(): number;
  /** Delete rows `first..last` of `stream` after the cloud acknowledged them; returns rows deleted. */
  ack(stream: string, first: number, last: number): number;
  /** Move rows to the dead-letter table (the cloud refused them); returns rows moved. */
  deadLetter(stream: string, rowids: readonly number[], reason: string, now: number): number;
  /** Delete rows older than their stream's TTL; returns rows expired. */
  expire(now: number): number;
  /** Dead letters in the order they were set aside, at most `limit`. */
  listDeadLetters(limit?: number): DeadLetter[];
  deadLetterCount(): number;
  /**
   * Puts dead letters (all, or the given ids) back into their streams as new readings, counted as
   * `replayed`; returns how many. Its own transaction.
   */
  replayDeadLetters(now: number, ids?: readonly number[]): number;
  /** After the caller's transaction that ran `append` committed: count what it did. */
  committed(): void;
  /** After it rolled back: forget what it did. */
  rolledBack(): void;
  stats(): OutboxStats;
}
