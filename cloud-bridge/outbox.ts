import type Database from 'better-sqlite3';
import type {
  Counter,
  Gauge,
  Metrics,
  Outbox,
  OutboxItem,
  OutboxRow,
  OutboxStats,
  StreamStats,
} from '../runtime/contracts/index.js';

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

/**
 * The durable store-and-forward queue: one SQLite table of rows tagged with their stream.
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
  private readonly insert: Database.Statement<[string, string, number, number]>;
  private readonly select: Database.Statement<[string, number, number], OutboxRow>;
  private readonly selectUpTo: Database.Statement<[string, number, number, number], OutboxRow>;
  private readonly deleteRange: Database.Statement<[string, number, number], { bytes: number }>;
  private readonly oldest: Database.Statement<[string], { rowid: number; bytes: number }>;
  private readonly deleteUpTo: Database.Statement<[string, number]>;
  private readonly expireOlder: Database.Statement<[string, number], { bytes: number }>;
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
    for (const r of db.prepare('SELECT DISTINCT stream FROM outbox UNION SELECT DISTINCT stream FROM outbox_counters').all() as {
      stream: string;
    }[]) {
      if (!this.states.has(r.stream)) this.addStream({ name: r.stream, priority: 9, quotaBytes, overflow: 'drop-oldest' });
    }
    this.loadDepth();
    for (const r of db.prepare('SELECT stream, name, value FROM outbox_counters').all() as { stream: string; name: string; value: number }[]) {
      const s = this.states.get(r.stream);
      if (s && (COUNTERS as readonly string[]).includes(r.name)) s.counts[r.name as CounterName] = r.value;
    }
    this.insert = db.prepare('INSERT INTO outbox (stream, body, bytes, created_at) VALUES (?, ?, ?, ?)');
    this.select = db.prepare('SELECT rowid, stream, body, bytes, created_at AS createdAt FROM outbox WHERE stream = ? AND rowid > ? ORDER BY rowid LIMIT ?');
    this.selectUpTo = db.prepare(
      'SELECT rowid, stream, body, bytes, created_at AS createdAt FROM outbox WHERE stream = ? AND rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?',
    );
    this.deleteRange = db.prepare('DELETE FROM outbox WHERE stream = ? AND rowid BETWEEN ? AND ? RETURNING bytes');
    this.oldest = db.prepare('SELECT rowid, bytes FROM outbox WHERE stream = ? ORDER BY rowid');
    this.deleteUpTo = db.prepare('DELETE FROM outbox WHERE stream = ? AND rowid <= ?');
    this.expireOlder = db.prepare('DELETE FROM outbox WHERE stream = ? AND created_at < ? RETURNING bytes');
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
    for (const { envelope, stream } of items) {
      const s = this.states.get(stream) ?? this.unknownStream(stream);
      const body = JSON.stringify(envelope);
      const bytes = Buffer.byteLength(body);
      s.pending.produced++;
      if (s.config.overflow === 'reject-new' && s.bytes + bytes > s.config.quotaBytes) {
        s.pending.dropped++;
        continue;
      }
      this.insert.run(s.config.name, body, bytes, now);
      s.depth++;
      s.bytes += bytes;
    }
    this.enforceQuotas();
    this.flushCounters();
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
    if (upToRowid === undefined) return this.select.all(stream, afterRowid, limit);
    return this.selectUpTo.all(stream, afterRowid, upToRowid, limit);
  }

  newestRowid(): number {
    return (this.db.prepare('SELECT coalesce(max(rowid), 0) AS n FROM outbox').get() as { n: number }).n;
  }

  ack(stream: string, first: number, last: number): number {
    return this.inTransaction(() => {
      const s = this.states.get(stream);
      if (!s) return 0;
      const deleted = this.deleteRange.all(stream, first, last);
      this.remove(s, deleted, 'delivered');
      this.flushCounters();
      return deleted.length;
    });
  }

  /** Delete rows older than their stream's TTL; returns rows expired. */
  expire(now: number): number {
    return this.inTransaction(() => {
      let n = 0;
      for (const s of this.states.values()) {
        if (s.config.ttlMs === undefined || s.depth === 0) continue;
        const gone = this.expireOlder.all(s.config.name, now - s.config.ttlMs);
        this.remove(s, gone, 'expired');
        n += gone.length;
      }
      this.flushCounters();
      return n;
    });
  }

  deadLetter(stream: string, rowids: readonly number[], reason: string, now: number): number {
    return this.inTransaction(() => {
      const s = this.states.get(stream);
      if (!s || rowids.length === 0) return 0;
      const moved: { bytes: number }[] = [];
      const copy = this.db.prepare(
        'INSERT INTO dead_letters (stream, body, bytes, reason, failed_at) SELECT stream, body, bytes, ?, ? FROM outbox WHERE rowid = ? AND stream = ?',
      );
      const del = this.db.prepare('DELETE FROM outbox WHERE rowid = ? AND stream = ? RETURNING bytes');
      for (const id of rowids) {
        copy.run(reason, now, id, stream);
        const r = del.get(id, stream) as { bytes: number } | undefined;
        if (r) moved.push(r);
      }
      this.remove(s, moved, 'deadLettered');
      this.flushCounters();
      return moved.length;
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
        this.insert.run(r.stream, r.body, r.bytes, now);
        del.run(r.id);
        s.depth++;
        s.bytes += r.bytes;
        s.pending.replayed++;
      }
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

  /** Drop the oldest rows of `s` until at least `atLeast` bytes are freed; returns bytes freed. */
  private dropOldest(s: StreamState, atLeast: number): number {
    let freed = 0;
    let rows = 0;
    let last = 0;
    for (const r of this.oldest.iterate(s.config.name)) {
      if (freed >= atLeast) break;
      freed += r.bytes;
      last = r.rowid;
      rows++;
    }
    if (rows === 0) return 0;
    this.deleteUpTo.run(s.config.name, last);
    s.depth -= rows;
    s.bytes -= freed;
    s.pending.dropped += rows;
    return freed;
  }

  private remove(s: StreamState, rows: readonly { bytes: number }[], outcome: 'delivered' | 'expired' | 'deadLettered'): void {
    if (rows.length === 0) return;
    let bytes = 0;
    for (const r of rows) bytes += r.bytes;
    s.depth -= rows.length;
    s.bytes -= bytes;
    s.pending[outcome] += rows.length;
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
    for (const r of this.db.prepare('SELECT stream, count(*) AS n, coalesce(sum(bytes), 0) AS b FROM outbox GROUP BY stream').all() as {
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
