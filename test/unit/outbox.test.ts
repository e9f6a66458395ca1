import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { outboxMigrations, SqliteOutbox } from '../../cloud-bridge/outbox.js';
import { makeEnvelope, systemClock, type Envelope } from '../../runtime/contracts/index.js';
import { IngestPipeline } from '../../runtime/ingest.js';
import { createLogger } from '../../runtime/logger.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { migrate, openDatabase, type Db } from '../../runtime/store/database.js';
import { runtimeMigrations } from '../../runtime/store/runtime-schema.js';
import { Rules } from '../../rules/engine.js';

let dir: string;
let db: Db;

function open(): Db {
  const d = openDatabase({ path: join(dir, 'o.db'), synchronous: 'normal' });
  migrate(d, 'runtime', runtimeMigrations);
  migrate(d, 'outbox', outboxMigrations);
  return d;
}

const env = (i: number): Envelope =>
  makeEnvelope({ id: `r${i}`, device: 'd', point: 'p', value: i, quality: 'good', ts: 1_700_000_000_000 + i, seq: i });

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'outpost-outbox-'));
  db = open();
});
afterEach(() => {
  if (db.open) db.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('SQLite outbox', () => {
  it('keeps rows in order until acknowledged, and accounts for every one', () => {
    const outbox = new SqliteOutbox(db, 10 * 1024 * 1024, new PromMetrics());
    db.transaction(() => outbox.append([env(1), env(2), env(3)]))();
    const rows = outbox.peek(0, 2);
    expect(rows.map((r) => (JSON.parse(r.body) as Envelope).id)).toEqual(['r1', 'r2']);
    expect(outbox.ack(rows[0]!.rowid, rows[1]!.rowid)).toBe(2);
    expect(outbox.ack(rows[0]!.rowid, rows[1]!.rowid)).toBe(0);
    const s = outbox.stats();
    expect(s).toMatchObject({ depth: 1, appended: 3, delivered: 2, dropped: 0 });
    expect(s.appended).toBe(s.delivered + s.dropped + s.depth);
  });

  it('survives reopening: depth and bytes come back from disk', () => {
    const outbox = new SqliteOutbox(db, 10 * 1024 * 1024, new PromMetrics());
    db.transaction(() => outbox.append([env(1), env(2)]))();
    const bytes = outbox.stats().bytes;
    db.close();
    db = open();
    const again = new SqliteOutbox(db, 10 * 1024 * 1024, new PromMetrics());
    expect(again.stats()).toMatchObject({ depth: 2, bytes });
  });

  it('drops the oldest rows when the byte quota is reached, and counts them', async () => {
    const metrics = new PromMetrics();
    const outbox = new SqliteOutbox(db, 65536, metrics);
    for (let i = 0; i < 2000; i++) db.transaction(() => outbox.append([env(i)]))();
    const s = outbox.stats();
    expect(s.bytes).toBeLessThanOrEqual(65536);
    expect(s.dropped).toBeGreaterThan(0);
    expect(s.appended).toBe(s.delivered + s.dropped + s.depth);
    const first = JSON.parse(outbox.peek(0, 1)[0]!.body) as Envelope;
    expect(first.id).toBe(`r${s.dropped}`);
    expect(await metrics.total('outpost_outbox_dropped_total')).toBe(s.dropped);
  });
});

describe('ingest pipeline', () => {
  it('resolves a submit only after its readings are committed, in one transaction per turn', async () => {
    const metrics = new PromMetrics();
    const outbox = new SqliteOutbox(db, 10 * 1024 * 1024, metrics);
    const seq = { next: () => ({ seq: 0, id: 'x' }) };
    const rules = new Rules([{ id: 'all', type: 'filter', match: { device: '*', point: '*' }, route: 'cloud' }], systemClock, seq);
    let notified = 0;
    const pipeline = new IngestPipeline(db, rules, outbox, systemClock, createLogger({ level: 'silent' }), metrics, () => notified++);
    const submits = Array.from({ length: 50 }, (_, i) => pipeline.submit([env(i)]));
    expect(outbox.stats().depth).toBe(0);
    await Promise.all(submits);
    expect(outbox.stats().depth).toBe(50);
    expect(await metrics.total('outpost_store_commits_total')).toBe(1);
    expect(notified).toBe(1);
    await pipeline.stop();
    await expect(pipeline.submit([env(99)])).rejects.toThrow(/stopping/);
  });

  it('rejects every submitter when the commit fails, and acknowledges nothing', async () => {
    const metrics = new PromMetrics();
    const outbox = new SqliteOutbox(db, 10 * 1024 * 1024, metrics);
    const seq = { next: () => ({ seq: 0, id: 'x' }) };
    const rules = new Rules([{ id: 'all', type: 'filter', match: { device: '*', point: '*' }, route: 'cloud' }], systemClock, seq);
    const pipeline = new IngestPipeline(db, rules, outbox, systemClock, createLogger({ level: 'silent' }), metrics, () => {});
    db.exec('DROP TABLE outbox');
    await expect(pipeline.submit([env(1)])).rejects.toThrow(/store commit failed/);
    expect(await metrics.total('outpost_store_commit_failures_total')).toBe(1);
  });
});
