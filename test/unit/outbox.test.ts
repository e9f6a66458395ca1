import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { streamSchema } from '../../cloud-bridge/config.js';
import { outboxMigrations, splitChunk, SqliteOutbox, type StreamConfig } from '../../cloud-bridge/outbox.js';
import { OVERFLOW_NAMES, OVERFLOW_POLICIES } from '../../cloud-bridge/overflow/index.js';
import { makeEnvelope, systemClock, type Envelope, type StreamStats } from '../../runtime/contracts/index.js';
import { IngestPipeline } from '../../runtime/ingest.js';
import { createLogger } from '../../runtime/logger.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { migrate, openDatabase, type Db } from '../../runtime/store/database.js';
import { runtimeMigrations } from '../../runtime/store/runtime-schema.js';
import { Rules } from '../../rules/engine.js';
import { CountingSequence } from '../../runtime/sequence.js';

let dir: string;
let db: Db;

function open(): Db {
  const d = openDatabase({ path: join(dir, 'o.db'), synchronous: 'normal' });
  migrate(d, 'runtime', runtimeMigrations);
  migrate(d, 'outbox', outboxMigrations);
  return d;
}

const env = (i: number, device = 'd'): Envelope =>
  makeEnvelope({ id: `r${i}`, device, point: 'p', value: i, quality: 'good', ts: 1_700_000_000_000 + i, seq: i });
const MiB = 1024 * 1024;
const streams: StreamConfig[] = [
  { name: 'alarms', priority: 0, quotaBytes: MiB, overflow: 'reject-new' },
  { name: 'telemetry', priority: 5, quotaBytes: MiB, overflow: 'drop-oldest' },
  { name: 'bulk', priority: 9, quotaBytes: MiB, overflow: 'drop-oldest' },
];

function put(outbox: SqliteOutbox, stream: string, from: number, count: number, now = 0): void {
  db.transaction(() => outbox.append(Array.from({ length: count }, (_, k) => ({ envelope: env(from + k), stream })), now))();
  outbox.committed();
}


const stream = (o: SqliteOutbox, name: string): StreamStats => o.stats().streams.find((s) => s.stream === name)!;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'outpost-outbox-'));
  db = open();
});
afterEach(() => {
  if (db.open) db.close();
  rmSync(dir, { recursive: true, force: true });
});

/** What only the SQLite outbox does (its contract is proved by test/contracts/outbox-suite.ts). */
describe('SQLite outbox', () => {
  it('stores many readings per row and cuts a row exactly where an acknowledgement or dead letter ends', () => {
    const outbox = new SqliteOutbox(db, 64 * MiB, new PromMetrics(), streams);
    put(outbox, 'telemetry', 0, 200);
    const chunks = (): number => (db.prepare('SELECT count(*) AS n FROM outbox_chunks').get() as { n: number }).n;
    expect(chunks()).toBeLessThan(10);
    const rows = outbox.peek('telemetry', 0, 1000);
    expect(rows.map((r) => (JSON.parse(r.body) as Envelope).id)).toEqual(Array.from({ length: 200 }, (_, i) => `r${i}`));
    // Middle of a chunk: readings on both sides stay, with their numbers.
    expect(outbox.ack('telemetry', rows[10]!.rowid, rows[19]!.rowid)).toBe(10);
    expect(outbox.deadLetter('telemetry', [rows[30]!.rowid], 'bad', 1)).toBe(1);
    const left = outbox.peek('telemetry', 0, 1000);
    expect(left).toHaveLength(189);
    expect(left.map((r) => r.rowid)).toEqual(rows.filter((_, i) => (i < 10 || i > 19) && i !== 30).map((r) => r.rowid));
    expect(left.map((r) => r.body)).toEqual(rows.filter((_, i) => (i < 10 || i > 19) && i !== 30).map((r) => r.body));
    // A range read from the middle, bounded above.
    expect(outbox.peek('telemetry', rows[5]!.rowid, 8, rows[25]!.rowid).map((r) => r.rowid)).toEqual(
      [6, 7, 8, 9, 20, 21, 22, 23].map((i) => rows[i]!.rowid),
    );
    expect(outbox.listDeadLetters()[0]!.body).toBe(rows[30]!.body);
    expect(stream(outbox, 'telemetry')).toMatchObject({ depth: 189, delivered: 10, deadLettered: 1 });
    expect(stream(outbox, 'telemetry').bytes).toBe(left.reduce((b, r) => b + r.bytes, 0));
  });

  it('splits a chunk back into exactly the texts JSON.stringify wrote, whatever the strings hold', () => {
    const tricky = ['},{', '","', 'a\\', '\\"', '[{,}]', 'é ✓ 𝄞', '\n\t\u0000', ''];
    const envs = tricky.map((t, i) => makeEnvelope({ id: t, device: `d${t}`, point: t, value: i % 2 ? t : i, quality: 'good', ts: i, seq: i, rule: t }));
    expect(splitChunk(JSON.stringify(envs))).toEqual(envs.map((e) => JSON.stringify(e)));
    expect(splitChunk(JSON.stringify([envs[0]]))).toEqual([JSON.stringify(envs[0])]);
    expect(splitChunk('[]')).toEqual([]);
    // Stored and read through the outbox: the same bodies, byte counts of the UTF-8.
    const outbox = new SqliteOutbox(db, MiB, new PromMetrics(), streams);
    for (const name of ['telemetry', 'alarms']) {
      db.transaction(() => outbox.append(envs.map((envelope) => ({ envelope, stream: name })), 0))();
      outbox.committed();
      const rows = outbox.peek(name, 0, 100);
      expect(rows.map((r) => r.body)).toEqual(envs.map((e) => JSON.stringify(e)));
      expect(rows.map((r) => r.bytes)).toEqual(envs.map((e) => Buffer.byteLength(JSON.stringify(e))));
      expect(stream(outbox, name).bytes).toBe(rows.reduce((b, r) => b + r.bytes, 0));
    }
  });

  it('migrates a row-per-reading outbox (schema 3) keeping row ids, bodies and the id high-water mark', () => {
    db.close();
    rmSync(join(dir, 'o.db'));
    db = openDatabase({ path: join(dir, 'o.db'), synchronous: 'normal' });
    migrate(db, 'runtime', runtimeMigrations);
    migrate(db, 'outbox', outboxMigrations.filter((m) => m.version <= 3));
    const ins = db.prepare("INSERT INTO outbox (stream, body, bytes, created_at) VALUES ('telemetry', ?, ?, 7)");
    for (let i = 0; i < 5; i++) ins.run(JSON.stringify(env(i)), Buffer.byteLength(JSON.stringify(env(i))));
    db.prepare('DELETE FROM outbox WHERE rowid <= 2').run();
    migrate(db, 'outbox', outboxMigrations);
    const outbox = new SqliteOutbox(db, MiB, new PromMetrics(), streams);
    expect(outbox.peek('telemetry', 0, 10).map((r) => [r.rowid, (JSON.parse(r.body) as Envelope).id, r.createdAt])).toEqual([
      [3, 'r2', 7],
      [4, 'r3', 7],
      [5, 'r4', 7],
    ]);
    expect(outbox.newestRowid()).toBe(5);
    put(outbox, 'telemetry', 9, 1);
    expect(outbox.peek('telemetry', 5, 10)[0]!.rowid).toBe(6);
  });
});

describe('overflow policies', () => {
  it('the config accepts exactly the registered policies, and names them when it refuses one', () => {
    expect(OVERFLOW_NAMES).toEqual([...OVERFLOW_POLICIES.keys()]);
    expect(OVERFLOW_NAMES).toEqual(expect.arrayContaining(['drop-oldest', 'reject-new']));
    for (const overflow of OVERFLOW_NAMES) expect(streamSchema.parse({ name: 's', overflow }).overflow).toBe(overflow);
    expect(streamSchema.parse({ name: 's' }).overflow).toBe('drop-oldest');
    const refused = streamSchema.safeParse({ name: 's', overflow: 'drop-newest' });
    expect(refused.success).toBe(false);
    expect(refused.error?.issues[0]).toMatchObject({ path: ['overflow'] });
    expect(refused.error?.issues[0]?.message).toContain('reject-new');
  });

  it('an outbox refuses to open with a stream whose policy is not registered', () => {
    const bad: StreamConfig[] = [{ name: 's', priority: 5, quotaBytes: MiB, overflow: 'drop-newest' }];
    expect(() => new SqliteOutbox(db, MiB, new PromMetrics(), bad)).toThrow(/unknown overflow policy "drop-newest"; known: drop-oldest, reject-new/);
  });
});

describe('ingest pipeline', () => {
  const all = { id: 'all', type: 'filter', match: { device: '*', point: '*' }, route: 'cloud', stream: 'telemetry' } as const;

  it('resolves a submit only after its readings are committed, in one transaction per turn', async () => {
    const metrics = new PromMetrics();
    const outbox = new SqliteOutbox(db, 10 * MiB, metrics);
    const seq = new CountingSequence('x:');
    const rules = new Rules([all], systemClock, seq);
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

  it('rejects every submitter when the commit fails, and acknowledges and counts nothing', async () => {
    const metrics = new PromMetrics();
    const outbox = new SqliteOutbox(db, 10 * MiB, metrics);
    const seq = new CountingSequence('x:');
    const rules = new Rules([all], systemClock, seq);
    const pipeline = new IngestPipeline(db, rules, outbox, systemClock, createLogger({ level: 'silent' }), metrics, () => {});
    await pipeline.submit([env(0)]);
    // The store fails on a write of the group: the whole transaction rolls back.
    db.exec(`CREATE TRIGGER full BEFORE INSERT ON outbox_chunks WHEN NEW.bodies LIKE '%"r2"%' BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END`);
    await expect(pipeline.submit([env(1), env(2)])).rejects.toThrow(/store commit failed: database or disk is full/);
    expect(await metrics.total('outpost_store_commit_failures_total')).toBe(1);
    expect(outbox.stats()).toMatchObject({ depth: 1, appended: 1 });
    expect(await metrics.text()).toContain('outpost_outbox_readings_total{stream="telemetry",outcome="produced"} 1');
  });
});
