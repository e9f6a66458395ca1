import type Database from 'better-sqlite3';
import type {
  Counter,
  Envelope,
  Gauge,
  Metrics,
  Outbox,
  OutboxItem,
  OutboxRow,
  OutboxStats,
  StreamStats,
} from '../runtime/contracts/index.js';
import { ReadingBatch } from '../runtime/contracts/index.js';

type Db = Database.Database;

export const outboxMigrations = [
  {
    version: 1,
    sql: `CREATE TABLE outbox (
      rowid INTEGER PRIMARY KEY,
      body TEXT NOT NULL,
      bytes INTEGER NOT NULL
    );`,
  },
  {
    // Row ids must never be reused: the uplink's cursor and the acknowledgement of a batch refer
    // to row ids, and a plain INTEGER PRIMARY KEY starts again at 1 once the table is empty.
    version: 2,
    sql: `CREATE TABLE outbox_v2 (
      rowid INTEGER PRIMARY KEY AUTOINCREMENT,
      body TEXT NOT NULL,
      bytes INTEGER NOT NULL
    );
    INSERT INTO outbox_v2 (rowid, body, bytes) SELECT rowid, body, bytes FROM outbox;
    DROP TABLE outbox;
    ALTER TABLE outbox_v2 RENAME TO outbox;`,
  },
  {
    // Streams, with their accounting kept in the same transactions as the rows it counts, and the
    // dead-letter table for readings the cloud refused.
    version: 3,
    sql: `ALTER TABLE outbox ADD COLUMN stream TEXT NOT NULL DEFAULT 'telemetry';
    ALTER TABLE outbox ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX outbox_by_stream ON outbox (stream, rowid);
    CREATE TABLE outbox_counters (
      stream TEXT NOT NULL,
      name TEXT NOT NULL,
      value INTEGER NOT NULL,
      PRIMARY KEY (stream, name)
    );
    INSERT INTO outbox_counters (stream, name, value) SELECT stream, 'produced', count(*) FROM outbox GROUP BY stream;
    CREATE TABLE dead_letters (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      stream TEXT NOT NULL,
      body TEXT NOT NULL,
      bytes INTEGER NOT NULL,
      reason TEXT NOT NULL,
      failed_at INTEGER NOT NULL
    );`,
  },
  {
    // Readings stored in chunks: one row holds up to CHUNK_ROWS consecutive readings of one stream
    // (a JSON array of their envelopes) with sequence numbers first..last. One insert per chunk
    // instead of per reading is what makes the durable append cheap. outbox_meta keeps the next
    // sequence number, so numbers are never reused once the outbox has emptied.
    version: 4,
    sql: `CREATE TABLE outbox_chunks (
      rowid INTEGER PRIMARY KEY,
      stream TEXT NOT NULL,
      last_seq INTEGER NOT NULL,
      created_at INTEGER NOT NULL,
      bytes INTEGER NOT NULL,
      bodies TEXT NOT NULL
    );
    CREATE INDEX outbox_chunks_by_stream ON outbox_chunks (stream, last_seq);
    CREATE TABLE outbox_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO outbox_chunks (rowid, stream, last_seq, created_at, bytes, bodies)
      SELECT rowid, stream, rowid, created_at, bytes, '[' || body || ']' FROM outbox;
    INSERT INTO outbox_meta (key, value)
      SELECT 'next_seq', coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0) + 1;
    DROP TABLE outbox;`,
  },
] as const;

export type OverflowPolicy = 'drop-oldest' | 'reject-new';

export interface StreamConfig {
  readonly name: string;
  /** 0 is the highest priority; drained first, dropped last. */
  readonly priority: number;
  /** Byte budget of this stream; beyond it the overflow policy applies. */
  readonly quotaBytes: number;
  readonly ttlMs?: number | undefined;
  readonly overflow: OverflowPolicy;
}

export interface DeadLetter {
  readonly id: number;
  readonly stream: string;
  readonly body: string;
  readonly reason: string;
  readonly failedAt: number;
}

type CounterName = 'produced' | 'delivered' | 'expired' | 'dropped' | 'deadLettered' | 'replayed';
const COUNTERS: readonly CounterName[] = ['produced', 'delivered', 'expired', 'dropped', 'deadLettered', 'replayed'];
const OUTCOME: Record<CounterName, string> = {
  produced: 'produced',
  delivered: 'delivered',
  expired: 'expired',
  dropped: 'dropped',
  deadLettered: 'dead-lettered',
  replayed: 'replayed',
};

interface StreamState {
  readonly config: StreamConfig;
  depth: number;
  bytes: number;
  readonly counts: Record<CounterName, number>;
  /** Changes not yet written to outbox_counters. */
  readonly pending: Record<CounterName, number>;
  /** Written in the open transaction, counted once it commits. */
  readonly staged: Record<CounterName, number>;
}

function zeroCounts(): Record<CounterName, number> {
  return { produced: 0, delivered: 0, expired: 0, dropped: 0, deadLettered: 0, replayed: 0 };
}

/** Readings per chunk row at most, and bytes per chunk row at most (a single larger reading gets its own). */
const CHUNK_ROWS = 64;
const CHUNK_BYTES = 64 * 1024;

/**
 * The elements of a chunk's JSON array text, as text. Chunks are written by JSON.stringify, so
 * the only commas at depth 0 outside strings separate elements; strings are skipped with indexOf.
 */
export function splitChunk(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 1;
  const end = text.length - 1;
  for (let i = 1; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // To the closing quote: one not preceded by an odd number of backslashes.
      for (;;) {
        i = text.indexOf('"', i + 1);
        if (i < 0) throw new Error('outbox chunk is not valid JSON: unterminated string');
        let k = i - 1;
        while (text.charCodeAt(k) === 0x5c) k--;
        if ((i - 1 - k) % 2 === 0) break;
      }
    } else if (c === 0x7b || c === 0x5b) depth++;
    else if (c === 0x7d || c === 0x5d) depth--;
    else if (c === 0x2c && depth === 0) {
      out.push(text.slice(start, i));
      start = i + 1;
    }
  }
  if (end > start || out.length > 0) out.push(text.slice(start, end));
  return out;
}

/** Bytes of the readings in a chunk's text: without the brackets and the commas between them. */
const readingBytes = (text: string, rows: number): number => Buffer.byteLength(text) - rows - 1;

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
  private readonly states = new Map<string, StreamState>();
  private order: string[] = [];
  private drain: { name: string; priority: number }[] = [];
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
  private readonly bumpCounter: Database.Statement<[string, string, number]>;
  private readonly mCount: Counter;
  private readonly mDepth: Gauge;
  private readonly mBytes: Gauge;
  private readonly tx: <A extends unknown[], R>(fn: (...args: A) => R) => (...args: A) => R;

  constructor(
    private readonly db: Db,
    private readonly quotaBytes: number,
    metrics: Metrics,
    streams: readonly StreamConfig[] = [{ name: 'telemetry', priority: 5, quotaBytes, overflow: 'drop-oldest' }],
  ) {
    this.tx = (fn) => db.transaction(fn);
    for (const config of streams) this.addStream(config);
    // Rows of streams no longer configured still drain, last, within the global quota.
    for (const r of db.prepare('SELECT DISTINCT stream FROM outbox_chunks UNION SELECT DISTINCT stream FROM outbox_counters').all() as {
      stream: string;
    }[]) {
      if (!this.states.has(r.stream)) this.addStream({ name: r.stream, priority: 9, quotaBytes, overflow: 'drop-oldest' });
    }
    this.loadDepth();
    for (const r of db.prepare('SELECT stream, name, value FROM outbox_counters').all() as { stream: string; name: string; value: number }[]) {
      const s = this.states.get(r.stream);
      if (s && (COUNTERS as readonly string[]).includes(r.name)) s.counts[r.name as CounterName] = r.value;
    }
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
    this.bumpCounter = db.prepare(
      'INSERT INTO outbox_counters (stream, name, value) VALUES (?, ?, ?) ON CONFLICT (stream, name) DO UPDATE SET value = value + excluded.value',
    );
    this.mCount = metrics.counter('outpost_outbox_readings_total', 'Readings per stream and outcome (produced, delivered, expired, dropped, dead-lettered, replayed)', [
      'stream',
      'outcome',
    ]);
    this.mDepth = metrics.gauge('outpost_outbox_depth', 'Readings waiting in the outbox', ['stream']);
    this.mBytes = metrics.gauge('outpost_outbox_bytes', 'Bytes waiting in the outbox', ['stream']);
    this.publishGauges();
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
      const s = this.states.get(stream) ?? this.unknownStream(stream);
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
      if (s.config.overflow === 'drop-oldest' && !g.batches) {
        const envelopes = g.pieces as Envelope[];
        for (let i = 0; i < envelopes.length; i += CHUNK_ROWS) this.storeEnvelopes(s, envelopes.slice(i, i + CHUNK_ROWS), now);
        continue;
      }
      // Batches are encoded reading by reading (ReadingBatch.json, no objects); reject-new
      // measures each reading against the budget before it is taken.
      const bodies: string[] = [];
      const budget = s.config.overflow === 'reject-new';
      let bytes = 0;
      const take = (body: string): void => {
        if (budget) {
          const size = Buffer.byteLength(body);
          if (s.bytes + bytes + size > s.config.quotaBytes) {
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
    this.flushCounters();
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

  /** Streams over their budget drop their oldest; then the lowest priority gives way first. */
  private enforceQuotas(): void {
    for (const s of this.states.values()) {
      if (s.bytes > s.config.quotaBytes) this.dropOldest(s, s.bytes - s.config.quotaBytes);
    }
    let excess = this.totalBytes() - this.quotaBytes;
    for (let i = this.order.length - 1; i >= 0 && excess > 0; i--) {
      const s = this.states.get(this.order[i]!)!;
      excess -= this.dropOldest(s, excess);
    }
  }

  drainOrder(): readonly { readonly name: string; readonly priority: number }[] {
    return this.drain;
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
      const s = this.states.get(stream);
      if (!s) return 0;
      const r = this.removeRange(s, first, last, false);
      this.count(s, r, 'delivered');
      this.flushCounters();
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
      for (const s of this.states.values()) {
        if (s.config.ttlMs === undefined || s.depth === 0) continue;
        const r: Removed = { rows: 0, bytes: 0, bodies: [] };
        for (const c of this.expireOlder.all(s.config.name, now - s.config.ttlMs)) {
          r.rows += c.last - c.first + 1;
          r.bytes += c.bytes;
        }
        this.count(s, r, 'expired');
        n += r.rows;
      }
      this.flushCounters();
      return n;
    });
  }

  deadLetter(stream: string, rowids: readonly number[], reason: string, now: number): number {
    return this.inTransaction(() => {
      const s = this.states.get(stream);
      if (!s || rowids.length === 0) return 0;
      const moved: Removed = { rows: 0, bytes: 0, bodies: [] };
      for (const id of rowids) {
        const r = this.removeRange(s, id, id, true);
        for (const b of r.bodies) this.insertDeadLetter.run(stream, b.body, b.bytes, reason, now);
        moved.rows += r.rows;
        moved.bytes += r.bytes;
      }
      this.count(s, moved, 'deadLettered');
      this.flushCounters();
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
          : ids.map((id) => this.db.prepare('SELECT id, stream, body, bytes FROM dead_letters WHERE id = ?').get(id)).filter((r) => r !== undefined)
      ) as { id: number; stream: string; body: string; bytes: number }[];
      const del = this.db.prepare('DELETE FROM dead_letters WHERE id = ?');
      for (const r of rows) {
        const s = this.states.get(r.stream) ?? this.unknownStream(r.stream);
        this.storeBodies(s, [r.body], now);
        del.run(r.id);
        s.pending.replayed++;
      }
      this.saveSeq.run(this.nextSeq);
      this.enforceQuotas();
      this.flushCounters();
      return rows.length;
    });
  }

  deadLetterCount(): number {
    return (this.db.prepare('SELECT count(*) AS n FROM dead_letters').get() as { n: number }).n;
  }

  stats(): OutboxStats {
    const streams: StreamStats[] = this.order.map((name) => {
      const s = this.states.get(name)!;
      return { stream: name, priority: s.config.priority, depth: s.depth, bytes: s.bytes, ...s.counts };
    });
    const sum = (k: keyof StreamStats): number => streams.reduce((n, s) => n + (s[k] as number), 0);
    return {
      depth: sum('depth'),
      bytes: sum('bytes'),
      appended: sum('produced'),
      delivered: sum('delivered'),
      expired: sum('expired'),
      dropped: sum('dropped'),
      deadLettered: sum('deadLettered'),
      replayed: sum('replayed'),
      streams,
    };
  }

  private addStream(config: StreamConfig): void {
    this.states.set(config.name, { config, depth: 0, bytes: 0, counts: zeroCounts(), pending: zeroCounts(), staged: zeroCounts() });
    this.order = [...this.states.values()].sort((a, b) => a.config.priority - b.config.priority).map((s) => s.config.name);
    this.drain = this.order.map((name) => ({ name, priority: this.states.get(name)!.config.priority }));
  }

  private unknownStream(name: string): StreamState {
    this.addStream({ name, priority: 9, quotaBytes: this.quotaBytes, overflow: 'drop-oldest' });
    return this.states.get(name)!;
  }

  private totalBytes(): number {
    let n = 0;
    for (const s of this.states.values()) n += s.bytes;
    return n;
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
    this.count(s, r, 'dropped');
    return r.bytes;
  }

  private count(s: StreamState, r: Removed, outcome: 'delivered' | 'expired' | 'deadLettered' | 'dropped'): void {
    if (r.rows === 0) return;
    s.depth -= r.rows;
    s.bytes -= r.bytes;
    s.pending[outcome] += r.rows;
  }

  /** Write counter changes; runs inside the transaction that made them. */
  private flushCounters(): void {
    for (const s of this.states.values()) {
      for (const k of COUNTERS) {
        const d = s.pending[k];
        if (d === 0) continue;
        this.bumpCounter.run(s.config.name, k, d);
        s.staged[k] += d;
        s.pending[k] = 0;
      }
    }
  }

  /** The transaction that carried the last changes committed: count them. */
  committed(): void {
    this.committedSeq = this.nextSeq;
    for (const s of this.states.values()) {
      for (const k of COUNTERS) {
        const d = s.staged[k];
        if (d === 0) continue;
        s.counts[k] += d;
        s.staged[k] = 0;
        this.mCount.inc({ stream: s.config.name, outcome: OUTCOME[k] }, d);
      }
    }
    this.publishGauges();
  }

  /** The transaction rolled back: forget its changes and read depth and bytes again. */
  rolledBack(): void {
    this.nextSeq = this.committedSeq;
    for (const s of this.states.values()) {
      for (const k of COUNTERS) {
        s.staged[k] = 0;
        s.pending[k] = 0;
      }
    }
    this.loadDepth();
    this.publishGauges();
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

  private loadDepth(): void {
    for (const s of this.states.values()) {
      s.depth = 0;
      s.bytes = 0;
    }
    for (const r of this.db
      .prepare('SELECT stream, coalesce(sum(last_seq - rowid + 1), 0) AS n, coalesce(sum(bytes), 0) AS b FROM outbox_chunks GROUP BY stream')
      .all() as {
      stream: string;
      n: number;
      b: number;
    }[]) {
      const s = this.states.get(r.stream) ?? this.unknownStream(r.stream);
      s.depth = r.n;
      s.bytes = r.b;
    }
  }

  private publishGauges(): void {
    for (const s of this.states.values()) {
      this.mDepth.set(s.depth, { stream: s.config.name });
      this.mBytes.set(s.bytes, { stream: s.config.name });
    }
  }
}
