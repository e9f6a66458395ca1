import type Database from 'better-sqlite3';
import type { Counter, Envelope, Gauge, Metrics, Outbox, OutboxRow, OutboxStats } from '../runtime/contracts/index.js';

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
] as const;

/**
 * The durable store-and-forward queue, one SQLite table. Rows are appended inside the ingest
 * transaction and deleted only when the cloud broker acknowledged them, or by the overflow policy
 * (oldest first) when the byte quota is reached, which is counted.
 */
export class SqliteOutbox implements Outbox {
  private depth: number;
  private bytes: number;
  private appended = 0;
  private delivered = 0;
  private dropped = 0;
  private readonly insert: Database.Statement<[string, number]>;
  private readonly select: Database.Statement<[number, number], OutboxRow>;
  private readonly deleteRange: Database.Statement<[number, number], { bytes: number }>;
  private readonly oldest: Database.Statement<[number], { rowid: number; bytes: number }>;
  private readonly mAppended: Counter;
  private readonly mDelivered: Counter;
  private readonly mDropped: Counter;
  private readonly mDepth: Gauge;
  private readonly mBytes: Gauge;

  constructor(
    private readonly db: Db,
    private readonly quotaBytes: number,
    metrics: Metrics,
  ) {
    const row = db.prepare('SELECT count(*) AS n, coalesce(sum(bytes), 0) AS b FROM outbox').get() as { n: number; b: number };
    this.depth = row.n;
    this.bytes = row.b;
    this.insert = db.prepare('INSERT INTO outbox (body, bytes) VALUES (?, ?)');
    this.select = db.prepare('SELECT rowid, body, bytes FROM outbox WHERE rowid > ? ORDER BY rowid LIMIT ?');
    this.deleteRange = db.prepare('DELETE FROM outbox WHERE rowid BETWEEN ? AND ? RETURNING bytes');
    this.oldest = db.prepare('SELECT rowid, bytes FROM outbox ORDER BY rowid LIMIT ?');
    this.mAppended = metrics.counter('outpost_outbox_appended_total', 'Readings committed to the outbox');
    this.mDelivered = metrics.counter('outpost_outbox_delivered_total', 'Readings acknowledged by the cloud broker and deleted');
    this.mDropped = metrics.counter('outpost_outbox_dropped_total', 'Readings dropped by the overflow policy', ['reason']);
    this.mDepth = metrics.gauge('outpost_outbox_depth', 'Readings waiting in the outbox');
    this.mBytes = metrics.gauge('outpost_outbox_bytes', 'Bytes waiting in the outbox');
    this.publishGauges();
  }

  /** Must run inside the caller's transaction. */
  append(envelopes: readonly Envelope[]): void {
    if (envelopes.length === 0) return;
    let added = 0;
    for (const e of envelopes) {
      const body = JSON.stringify(e);
      const bytes = Buffer.byteLength(body);
      this.insert.run(body, bytes);
      added += bytes;
    }
    this.depth += envelopes.length;
    this.bytes += added;
    this.appended += envelopes.length;
    this.mAppended.inc(undefined, envelopes.length);
    if (this.bytes > this.quotaBytes) this.enforceQuota();
    this.publishGauges();
  }

  peek(afterRowid: number, limit: number): OutboxRow[] {
    return this.select.all(afterRowid, limit);
  }

  ack(first: number, last: number): number {
    const deleted = this.deleteRange.all(first, last);
    let bytes = 0;
    for (const r of deleted) bytes += r.bytes;
    this.depth -= deleted.length;
    this.bytes -= bytes;
    this.delivered += deleted.length;
    this.mDelivered.inc(undefined, deleted.length);
    this.publishGauges();
    return deleted.length;
  }

  stats(): OutboxStats {
    return { depth: this.depth, bytes: this.bytes, appended: this.appended, delivered: this.delivered, dropped: this.dropped };
  }

  /** Drop the oldest rows until the outbox fits its quota again (policy: drop oldest). */
  private enforceQuota(): void {
    const excess = this.bytes - this.quotaBytes;
    // Free a tenth of the quota at once so a full outbox does not delete on every append.
    let target = excess + Math.floor(this.quotaBytes / 10);
    let last = 0;
    let freed = 0;
    let rows = 0;
    for (const r of this.oldest.iterate(1_000_000)) {
      if (target <= 0) break;
      last = r.rowid;
      freed += r.bytes;
      target -= r.bytes;
      rows++;
    }
    if (rows === 0) return;
    this.db.prepare('DELETE FROM outbox WHERE rowid <= ?').run(last);
    this.depth -= rows;
    this.bytes -= freed;
    this.dropped += rows;
    this.mDropped.inc({ reason: 'quota' }, rows);
  }

  private publishGauges(): void {
    this.mDepth.set(this.depth);
    this.mBytes.set(this.bytes);
  }
}
