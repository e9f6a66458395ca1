import type Database from 'better-sqlite3';
import {
  ReadingBatch,
  type Db,
  type DeadLetter,
  type Envelope,
  type Metrics,
  type Outbox,
  type OutboxItem,
  type OutboxRow,
  type OutboxStats,
  type OutboxStreamConfig,
} from '../runtime/contracts/index.js';
import { CHUNK_BYTES, CHUNK_ROWS, readingBytes, splitChunk } from './outbox-chunks.js';
import { StreamAccounts, type StreamState } from './outbox-accounts.js';

export { outboxMigrations } from './outbox-schema.js';
export { splitChunk } from './outbox-chunks.js';

/** A stream of the outbox (runtime/contracts/outbox.ts). */
export type StreamConfig = OutboxStreamConfig;

interface Chunk {
  readonly first: number;
  readonly last: number;
  readonly createdAt: number;
  readonly bytes: number;
  readonly bodies: string;
}

interface Removed {
  rows: number;
  bytes: number;
  readonly bodies: { seq: number; body: string; bytes: number }[];
}

/**
 * The durable store-and-forward queue. Every reading gets a sequence number (the `rowid` of
 * `OutboxRow`), unique for the life of the database and increasing within a stream; readings are
 * stored in chunks of up to CHUNK_ROWS consecutive readings of one stream, one SQLite row each.
 * Removing part of a chunk (an acknowledgement that ends inside it, a dead letter, a drop that
 * frees just enough) rewrites the chunk as the pieces that remain, with their numbers unchanged.
 *
 * Overflow: a stream over its own budget rejects new readings (`reject-new`) or drops its oldest
 * (`drop-oldest`); when the whole outbox is over the storage quota, the oldest readings of the
 * lowest-priority stream that has any are dropped first. Every drop, expiry and delivery is
 * counted per stream in `outbox_counters`, in the same transaction as the rows it counts, so the
 * accounting survives restarts and crashes exactly.
 */
export class SqliteOutbox implements Outbox {
  private readonly accounts: StreamAccounts;
  /** Next sequence number, including appends of the open transaction. */
  private nextSeq: number;
  /** Next sequence number as of the last commit. */
  private committedSeq: number;
  private readonly insertChunk: Database.Statement<[number, string, number, number, number, string]>;
  private readonly chunksFrom: Database.Statement<[string, number], Chunk>;
  private readonly deleteChunk: Database.Statement<[number]>;
  private readonly expireOlder: Database.Statement<[string, number], { first: number; last: number; bytes: number }>;
  private readonly saveSeq: Database.Statement<[number]>;
  private readonly insertDeadLetter: Database.Statement<[string, string, number, string, number]>;
  private readonly tx: <A extends unknown[], R>(fn: (...args: A) => R) => (...args: A) => R;

  constructor(
    private readonly db: Db,
    private readonly quotaBytes: number,
    metrics: Metrics,
    streams: readonly StreamConfig[] = [{ name: 'telemetry', priority: 5, quotaBytes, overflow: 'drop-oldest' }],
  ) {
    this.tx = (fn) => db.transaction(fn);
    this.accounts = new StreamAccounts(db, quotaBytes, metrics, streams);
    const seq = db
      .prepare(
        `SELECT max(coalesce((SELECT value FROM outbox_meta WHERE key = 'next_seq'), 1),
                    coalesce((SELECT max(last_seq) FROM outbox_chunks), 0) + 1) AS n`,
      )
      .get() as { n: number };
    this.nextSeq = seq.n;
    this.committedSeq = seq.n;
    this.insertChunk = db.prepare('INSERT INTO outbox_chunks (rowid, stream, last_seq, created_at, bytes, bodies) VALUES (?, ?, ?, ?, ?, ?)');
    this.chunksFrom = db.prepare(
      'SELECT rowid AS first, last_seq AS last, created_at AS createdAt, bytes, bodies FROM outbox_chunks WHERE stream = ? AND last_seq > ? ORDER BY last_seq',
    );
    this.deleteChunk = db.prepare('DELETE FROM outbox_chunks WHERE rowid = ?');
    this.expireOlder = db.prepare(
      'DELETE FROM outbox_chunks WHERE stream = ? AND created_at < ? RETURNING rowid AS first, last_seq AS last, bytes',
    );
    this.saveSeq = db.prepare(
      "INSERT INTO outbox_meta (key, value) VALUES ('next_seq', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    );
    this.insertDeadLetter = db.prepare('INSERT INTO dead_letters (stream, body, bytes, reason, failed_at) VALUES (?, ?, ?, ?, ?)');
  }

  /**
   * Must run inside the caller's transaction; the caller then calls `committed()` or
   * `rolledBack()`. `now` stamps the rows for their TTL.
   */
  append(items: readonly OutboxItem[], now: number): void {
    if (items.length === 0) return;
    // Per stream, in arrival order: each stream's readings get consecutive numbers.
    const groups = new Map<StreamState, { pieces: (Envelope | ReadingBatch)[]; readings: number; batches: boolean }>();
    for (const { envelope, batch, stream } of items) {
      const s = this.accounts.of(stream);
      let g = groups.get(s);
      if (!g) groups.set(s, (g = { pieces: [], readings: 0, batches: false }));
      if (batch) {
        g.pieces.push(batch);
        g.readings += batch.length;
        g.batches = true;
      } else {
        g.pieces.push(envelope);
        g.readings++;
      }
    }
    for (const [s, g] of groups) {
      s.pending.produced += g.readings;
      if (!s.policy.measuresEach && !g.batches) {
        const envelopes = g.pieces as Envelope[];
        for (let i = 0; i < envelopes.length; i += CHUNK_ROWS) this.storeEnvelopes(s, envelopes.slice(i, i + CHUNK_ROWS), now);
        continue;
      }
      // Batches are encoded reading by reading (ReadingBatch.json, no objects); a policy that
      // measures each reading (reject-new) decides before it is taken.
      const bodies: string[] = [];
      const measure = s.policy.measuresEach;
      let bytes = 0;
      const take = (body: string): void => {
        if (measure) {
          const size = Buffer.byteLength(body);
          if (!s.policy.admit(s.bytes + bytes, size, s.config.quotaBytes)) {
            s.pending.dropped++;
            return;
          }
          bytes += size;
        }
        bodies.push(body);
      };
      for (const piece of g.pieces) {
        if (piece instanceof ReadingBatch) for (let k = 0; k < piece.length; k++) take(piece.json(k));
        else take(JSON.stringify(piece));
      }
      this.storeBodies(s, bodies, now);
    }
    this.saveSeq.run(this.nextSeq);
    this.enforceQuotas();
    this.accounts.flush();
  }

  /** One chunk from envelopes (one JSON.stringify for all), halved while it is over CHUNK_BYTES. */
  private storeEnvelopes(s: StreamState, envelopes: readonly Envelope[], createdAt: number): void {
    const text = JSON.stringify(envelopes);
    const bytes = readingBytes(text, envelopes.length);
    if (bytes > CHUNK_BYTES && envelopes.length > 1) {
      const half = envelopes.length >> 1;
      this.storeEnvelopes(s, envelopes.slice(0, half), createdAt);
      this.storeEnvelopes(s, envelopes.slice(half), createdAt);
      return;
    }
    this.writeChunk(s, envelopes.length, bytes, text, createdAt);
  }

  /** Chunks from readings already encoded. */
  private storeBodies(s: StreamState, bodies: readonly string[], createdAt: number): void {
    for (let start = 0; start < bodies.length; ) {
      let end = start;
      let bytes = 0;
      while (end < bodies.length && end - start < CHUNK_ROWS) {
        const size = Buffer.byteLength(bodies[end]!);
        if (end > start && bytes + size > CHUNK_BYTES) break;
        bytes += size;
        end++;
      }
      this.writeChunk(s, end - start, bytes, `[${bodies.slice(start, end).join(',')}]`, createdAt);
      start = end;
    }
  }

  /** Number the next `rows` readings and write them as one chunk. Inside a transaction. */
  private writeChunk(s: StreamState, rows: number, bytes: number, text: string, createdAt: number): void {
    const first = this.nextSeq;
    this.insertChunk.run(first, s.config.name, first + rows - 1, createdAt, bytes, text);
    this.nextSeq = first + rows;
    s.depth += rows;
    s.bytes += bytes;
  }

  /** Streams over their budget give up what their policy says; then the lowest priority gives way first. */
  private enforceQuotas(): void {
    for (const s of this.accounts.all()) {
      const excess = s.policy.excess(s.bytes, s.config.quotaBytes);
      if (excess > 0) this.dropOldest(s, excess);
    }
    let excess = this.accounts.totalBytes() - this.quotaBytes;
    const order = this.accounts.byPriority();
    for (let i = order.length - 1; i >= 0 && excess > 0; i--) {
      const s = this.accounts.of(order[i]!);
      excess -= this.dropOldest(s, excess);
    }
  }

  drainOrder(): readonly { readonly name: string; readonly priority: number }[] {
    return this.accounts.drainOrder();
  }

  peek(stream: string, afterRowid: number, limit: number, upToRowid?: number): OutboxRow[] {
    const out: OutboxRow[] = [];
    if (limit <= 0) return out;
    for (const c of this.chunksFrom.iterate(stream, afterRowid)) {
      if (upToRowid !== undefined && c.first > upToRowid) break;
      const parts = splitChunk(c.bodies);
      const to = upToRowid === undefined ? c.last : Math.min(c.last, upToRowid);
      for (let seq = Math.max(c.first, afterRowid + 1); seq <= to; seq++) {
        const body = parts[seq - c.first]!;
        out.push({ rowid: seq, stream, body, bytes: parts.length === 1 ? c.bytes : Buffer.byteLength(body), createdAt: c.createdAt });
        if (out.length >= limit) return out;
      }
    }
    return out;
  }

  newestRowid(): number {
    return this.committedSeq - 1;
  }

  ack(stream: string, first: number, last: number): number {
    return this.inTransaction(() => {
      const s = this.accounts.find(stream);
      if (!s) return 0;
      const r = this.removeRange(s, first, last, false);
      this.accounts.removed(s, r.rows, r.bytes, 'delivered');
      this.accounts.flush();
      return r.rows;
    });
  }

  /**
   * Remove readings `first..last` of `s` (those still there), rewriting chunks that are cut. Inside
   * a transaction; returns what was removed, with the bodies when `keepBodies`.
   */
  private removeRange(s: StreamState, first: number, last: number, keepBodies: boolean): Removed {
    const removed: Removed = { rows: 0, bytes: 0, bodies: [] };
    if (last < first) return removed;
    const hit: Chunk[] = [];
    for (const c of this.chunksFrom.iterate(s.config.name, first - 1)) {
      if (c.first > last) break;
      hit.push(c);
    }
    for (const c of hit) {
      this.deleteChunk.run(c.first);
      const lo = Math.max(first, c.first);
      const hi = Math.min(last, c.last);
      if (lo === c.first && hi === c.last && !keepBodies) {
        removed.rows += c.last - c.first + 1;
        removed.bytes += c.bytes;
        continue;
      }
      const parts = splitChunk(c.bodies);
      let gone = 0;
      for (let seq = lo; seq <= hi; seq++) {
        const body = parts[seq - c.first]!;
        const bytes = parts.length === 1 ? c.bytes : Buffer.byteLength(body);
        gone += bytes;
        if (keepBodies) removed.bodies.push({ seq, body, bytes });
      }
      removed.rows += hi - lo + 1;
      removed.bytes += gone;
      const before = parts.slice(0, lo - c.first);
      const after = parts.slice(hi - c.first + 1);
      let beforeBytes = 0;
      for (const b of before) beforeBytes += Buffer.byteLength(b);
      if (before.length > 0) this.insertChunk.run(c.first, s.config.name, lo - 1, c.createdAt, beforeBytes, `[${before.join(',')}]`);
      if (after.length > 0) this.insertChunk.run(hi + 1, s.config.name, c.last, c.createdAt, c.bytes - gone - beforeBytes, `[${after.join(',')}]`);
    }
    return removed;
  }

  /** Delete rows older than their stream's TTL; returns rows expired. */
  expire(now: number): number {
    return this.inTransaction(() => {
      let n = 0;
      for (const s of this.accounts.all()) {
        if (s.config.ttlMs === undefined || s.depth === 0) continue;
        const r: Removed = { rows: 0, bytes: 0, bodies: [] };
        for (const c of this.expireOlder.all(s.config.name, now - s.config.ttlMs)) {
          r.rows += c.last - c.first + 1;
          r.bytes += c.bytes;
        }
        this.accounts.removed(s, r.rows, r.bytes, 'expired');
        n += r.rows;
      }
      this.accounts.flush();
      return n;
    });
  }

  deadLetter(stream: string, rowids: readonly number[], reason: string, now: number): number {
    return this.inTransaction(() => {
      const s = this.accounts.find(stream);
      if (!s || rowids.length === 0) return 0;
      const moved: Removed = { rows: 0, bytes: 0, bodies: [] };
      for (const id of rowids) {
        const r = this.removeRange(s, id, id, true);
        for (const b of r.bodies) this.insertDeadLetter.run(stream, b.body, b.bytes, reason, now);
        moved.rows += r.rows;
        moved.bytes += r.bytes;
      }
      this.accounts.removed(s, moved.rows, moved.bytes, 'deadLettered');
      this.accounts.flush();
      return moved.rows;
    });
  }

  listDeadLetters(limit = 100): DeadLetter[] {
    return (
      this.db.prepare('SELECT id, stream, body, reason, failed_at FROM dead_letters ORDER BY id LIMIT ?').all(limit) as {
        id: number;
        stream: string;
        body: string;
        reason: string;
        failed_at: number;
      }[]
    ).map((r) => ({ id: r.id, stream: r.stream, body: r.body, reason: r.reason, failedAt: r.failed_at }));
  }

  /** Put dead letters back into their streams (all, or the given ids); returns rows replayed. */
  replayDeadLetters(now: number, ids?: readonly number[]): number {
    return this.inTransaction(() => {
      const rows = (
        ids === undefined
          ? this.db.prepare('SELECT id, stream, body, bytes FROM dead_letters ORDER BY id').all()
          : // An id given twice is one dead letter: replayed once.
            [...new Set(ids)].map((id) => this.db.prepare('SELECT id, stream, body, bytes FROM dead_letters WHERE id = ?').get(id)).filter((r) => r !== undefined)
      ) as { id: number; stream: string; body: string; bytes: number }[];
      const del = this.db.prepare('DELETE FROM dead_letters WHERE id = ?');
      for (const r of rows) {
        const s = this.accounts.of(r.stream);
        this.storeBodies(s, [r.body], now);
        del.run(r.id);
        s.pending.replayed++;
      }
      this.saveSeq.run(this.nextSeq);
      this.enforceQuotas();
      this.accounts.flush();
      return rows.length;
    });
  }

  deadLetterCount(): number {
    return (this.db.prepare('SELECT count(*) AS n FROM dead_letters').get() as { n: number }).n;
  }

  /** Drop the oldest readings of `s` until at least `atLeast` bytes are freed; returns bytes freed. */
  private dropOldest(s: StreamState, atLeast: number): number {
    let freed = 0;
    let upTo = 0;
    for (const c of this.chunksFrom.iterate(s.config.name, 0)) {
      if (freed >= atLeast) break;
      if (freed + c.bytes <= atLeast || c.first === c.last) {
        freed += c.bytes;
        upTo = c.last;
        continue;
      }
      // The chunk holds more than is needed: only its oldest readings go.
      const parts = splitChunk(c.bodies);
      for (let i = 0; i < parts.length && freed < atLeast; i++) {
        freed += Buffer.byteLength(parts[i]!);
        upTo = c.first + i;
      }
    }
    if (upTo === 0) return 0;
    const r = this.removeRange(s, 1, upTo, false);
    this.accounts.removed(s, r.rows, r.bytes, 'dropped');
    return r.bytes;
  }

  /** The transaction that carried the last changes committed: count them. */
  committed(): void {
    this.committedSeq = this.nextSeq;
    this.accounts.committed();
  }

  /** The transaction rolled back: forget its changes and read depth and bytes again. */
  rolledBack(): void {
    this.nextSeq = this.committedSeq;
    this.accounts.rolledBack();
  }

  stats(): OutboxStats {
    return this.accounts.stats();
  }

  /** Runs `fn` in its own transaction and settles the counters either way. */
  private inTransaction<R>(fn: () => R): R {
    let result: R;
    try {
      result = this.tx(fn)();
    } catch (err) {
      this.rolledBack();
      throw err;
    }
    this.committed();
    return result;
  }

}
