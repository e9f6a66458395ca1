import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { outboxMigrations, splitChunk, SqliteOutbox, type StreamConfig } from '../../cloud-bridge/outbox.js';
import { makeEnvelope, systemClock, type Envelope, type OutboxStats, type StreamStats } from '../../runtime/contracts/index.js';
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

/** produced + replayed = delivered + expired + dropped + deadLettered + depth, per stream. */
function balanced(s: StreamStats | OutboxStats): boolean {
  const produced = 'produced' in s ? s.produced : s.appended;
  return produced + s.replayed === s.delivered + s.expired + s.dropped + s.deadLettered + s.depth;
}

const stream = (o: SqliteOutbox, name: string): StreamStats => o.stats().streams.find((s) => s.stream === name)!;
const ids = (o: SqliteOutbox, name: string): string[] => o.peek(name, 0, 1_000_000).map((r) => (JSON.parse(r.body) as Envelope).id);

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
    const outbox = new SqliteOutbox(db, 10 * MiB, new PromMetrics());
    put(outbox, 'telemetry', 1, 3);
    const rows = outbox.peek('telemetry', 0, 2);
    expect(rows.map((r) => (JSON.parse(r.body) as Envelope).id)).toEqual(['r1', 'r2']);
    expect(outbox.ack('telemetry', rows[0]!.rowid, rows[1]!.rowid)).toBe(2);
    expect(outbox.ack('telemetry', rows[0]!.rowid, rows[1]!.rowid)).toBe(0);
    const s = outbox.stats();
    expect(s).toMatchObject({ depth: 1, appended: 3, delivered: 2, dropped: 0 });
    expect(balanced(s)).toBe(true);
  });

  it('survives reopening: depth, bytes and every counter come back from disk', () => {
    const outbox = new SqliteOutbox(db, 10 * MiB, new PromMetrics(), streams);
    put(outbox, 'telemetry', 1, 5);
    put(outbox, 'alarms', 10, 2);
    const r = outbox.peek('telemetry', 0, 2);
    outbox.ack('telemetry', r[0]!.rowid, r[1]!.rowid);
    const before = outbox.stats();
    db.close();
    db = open();
    const again = new SqliteOutbox(db, 10 * MiB, new PromMetrics(), streams);
    expect(again.stats()).toEqual(before);
  });

  it('never reuses a row id once the outbox emptied, so a late acknowledgement cannot delete new rows', () => {
    const outbox = new SqliteOutbox(db, 10 * MiB, new PromMetrics());
    put(outbox, 'telemetry', 1, 3);
    const old = outbox.peek('telemetry', 0, 10);
    outbox.ack('telemetry', old[0]!.rowid, old[2]!.rowid);
    put(outbox, 'telemetry', 4, 3);
    const fresh = outbox.peek('telemetry', 0, 10);
    expect(fresh[0]!.rowid).toBeGreaterThan(old[2]!.rowid);
    expect(outbox.ack('telemetry', old[0]!.rowid, old[2]!.rowid)).toBe(0);
    expect(outbox.stats().depth).toBe(3);
  });

  it('acknowledging a range of one stream never deletes rows of another stream', () => {
    const outbox = new SqliteOutbox(db, 10 * MiB, new PromMetrics(), streams);
    for (let i = 0; i < 10; i++) put(outbox, i % 2 === 0 ? 'telemetry' : 'alarms', i, 1);
    const t = outbox.peek('telemetry', 0, 100);
    expect(outbox.ack('telemetry', t[0]!.rowid, t.at(-1)!.rowid)).toBe(5);
    expect(stream(outbox, 'alarms').depth).toBe(5);
    expect(balanced(outbox.stats())).toBe(true);
  });

  it('drop-oldest: a stream over its budget drops its own oldest readings, counted exactly; other streams are untouched', async () => {
    const metrics = new PromMetrics();
    const small: StreamConfig[] = [
      { name: 'alarms', priority: 0, quotaBytes: MiB, overflow: 'reject-new' },
      { name: 'telemetry', priority: 5, quotaBytes: 16_384, overflow: 'drop-oldest' },
    ];
    const outbox = new SqliteOutbox(db, 10 * MiB, metrics, small);
    put(outbox, 'alarms', 0, 10);
    for (let i = 0; i < 1000; i++) put(outbox, 'telemetry', 100 + i, 1);
    const t = stream(outbox, 'telemetry');
    expect(t.bytes).toBeLessThanOrEqual(16_384);
    expect(t.dropped).toBeGreaterThan(0);
    expect(t.produced).toBe(1000);
    expect(t.dropped + t.depth).toBe(1000);
    // What is left is the newest, in order.
    expect(ids(outbox, 'telemetry').at(-1)).toBe('r1099');
    expect(ids(outbox, 'telemetry')[0]).toBe(`r${100 + t.dropped}`);
    expect(stream(outbox, 'alarms')).toMatchObject({ depth: 10, dropped: 0 });
    expect(await metrics.text()).toContain(`outpost_outbox_readings_total{stream="telemetry",outcome="dropped"} ${t.dropped}`);
  });

  it('reject-new: a full stream refuses new readings and keeps what it has, counted exactly', () => {
    const outbox = new SqliteOutbox(db, 10 * MiB, new PromMetrics(), [
      { name: 'alarms', priority: 0, quotaBytes: 8192, overflow: 'reject-new' },
      { name: 'telemetry', priority: 5, quotaBytes: MiB, overflow: 'drop-oldest' },
    ]);
    for (let i = 0; i < 500; i++) put(outbox, 'alarms', i, 1);
    put(outbox, 'telemetry', 1000, 50);
    const a = stream(outbox, 'alarms');
    expect(a.bytes).toBeLessThanOrEqual(8192);
    expect(a.depth).toBeGreaterThan(0);
    expect(ids(outbox, 'alarms')[0]).toBe('r0');
    expect(a.dropped).toBe(500 - a.depth);
    expect(stream(outbox, 'telemetry')).toMatchObject({ depth: 50, dropped: 0 });
  });

  it('storage quota: the lowest-priority stream gives way first', () => {
    const outbox = new SqliteOutbox(db, 32_768, new PromMetrics(), streams);
    put(outbox, 'alarms', 0, 20);
    put(outbox, 'telemetry', 100, 40);
    for (let i = 0; i < 300; i++) put(outbox, 'bulk', 1000 + i, 1);
    const s = outbox.stats();
    expect(s.bytes).toBeLessThanOrEqual(32_768);
    expect(stream(outbox, 'alarms')).toMatchObject({ depth: 20, dropped: 0 });
    expect(stream(outbox, 'telemetry')).toMatchObject({ depth: 40, dropped: 0 });
    expect(stream(outbox, 'bulk').dropped).toBeGreaterThan(0);
    // Once bulk is gone, telemetry gives way before alarms.
    for (let i = 0; i < 300; i++) put(outbox, 'telemetry', 2000 + i, 1);
    expect(stream(outbox, 'bulk').depth).toBe(0);
    expect(stream(outbox, 'alarms')).toMatchObject({ depth: 20, dropped: 0 });
    for (const st of outbox.stats().streams) expect(balanced(st)).toBe(true);
  });

  it('expires readings older than the stream TTL and counts them', () => {
    const outbox = new SqliteOutbox(db, 10 * MiB, new PromMetrics(), [
      { name: 'telemetry', priority: 5, quotaBytes: MiB, ttlMs: 60_000, overflow: 'drop-oldest' },
    ]);
    put(outbox, 'telemetry', 0, 5, 1_000);
    put(outbox, 'telemetry', 5, 3, 50_000);
    expect(outbox.expire(61_001)).toBe(5);
    expect(stream(outbox, 'telemetry')).toMatchObject({ depth: 3, expired: 5 });
    expect(outbox.expire(61_002)).toBe(0);
    expect(balanced(outbox.stats())).toBe(true);
  });

  it('counts nothing when the transaction that appended rolls back', () => {
    const outbox = new SqliteOutbox(db, 10 * MiB, new PromMetrics(), streams);
    put(outbox, 'telemetry', 0, 3);
    expect(() =>
      db.transaction(() => {
        outbox.append([{ envelope: env(9), stream: 'telemetry' }], 0);
        throw new Error('disk full');
      })(),
    ).toThrow(/disk full/);
    outbox.rolledBack();
    expect(stream(outbox, 'telemetry')).toMatchObject({ depth: 3, produced: 3 });
    expect(balanced(outbox.stats())).toBe(true);
  });

  it('moves refused readings to the dead-letter table and replays them, keeping the accounting', () => {
    const outbox = new SqliteOutbox(db, 10 * MiB, new PromMetrics(), streams);
    put(outbox, 'telemetry', 0, 4);
    const rows = outbox.peek('telemetry', 0, 10);
    expect(outbox.deadLetter('telemetry', [rows[1]!.rowid, rows[2]!.rowid], 'refused by broker: 0x99', 5)).toBe(2);
    expect(outbox.listDeadLetters().map((d) => [(JSON.parse(d.body) as Envelope).id, d.reason])).toEqual([
      ['r1', 'refused by broker: 0x99'],
      ['r2', 'refused by broker: 0x99'],
    ]);
    expect(stream(outbox, 'telemetry')).toMatchObject({ depth: 2, deadLettered: 2 });
    expect(outbox.replayDeadLetters(6)).toBe(2);
    expect(outbox.deadLetterCount()).toBe(0);
    expect(ids(outbox, 'telemetry')).toEqual(['r0', 'r3', 'r1', 'r2']);
    expect(stream(outbox, 'telemetry')).toMatchObject({ depth: 4, deadLettered: 2, replayed: 2 });
    expect(balanced(outbox.stats())).toBe(true);
  });

  it('keeps the accounting equation exact through a chaotic run with restarts', () => {
    let seed = 42;
    const rand = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const cfg: StreamConfig[] = [
      { name: 'alarms', priority: 0, quotaBytes: 4096, overflow: 'reject-new' },
      { name: 'telemetry', priority: 5, quotaBytes: 16_384, ttlMs: 50, overflow: 'drop-oldest' },
      { name: 'bulk', priority: 9, quotaBytes: 65_536, overflow: 'drop-oldest' },
    ];
    let outbox = new SqliteOutbox(db, 40_000, new PromMetrics(), cfg);
    let n = 0;
    for (let step = 0; step < 3000; step++) {
      const r = rand();
      const name = cfg[Math.floor(rand() * cfg.length)]!.name;
      if (r < 0.6) {
        put(outbox, name, n, 1 + Math.floor(rand() * 20), step);
        n += 20;
      } else if (r < 0.85) {
        // Mostly the oldest readings, sometimes a range in the middle (cuts chunks on both sides).
        const rows = outbox.peek(name, 0, 1 + Math.floor(rand() * 30));
        const from = rand() < 0.7 ? 0 : Math.floor(rand() * rows.length);
        const part = rows.slice(from, from + 1 + Math.floor(rand() * 30));
        if (part.length > 0) expect(outbox.ack(name, part[0]!.rowid, part.at(-1)!.rowid)).toBe(part.length);
      } else if (r < 0.9) outbox.expire(step);
      else if (r < 0.93) {
        const rows = outbox.peek(name, 0, 2);
        outbox.deadLetter(name, rows.map((x) => x.rowid), 'test', step);
      } else if (r < 0.94) outbox.replayDeadLetters(step);
      else if (r < 0.95) {
        db.close();
        db = open();
        outbox = new SqliteOutbox(db, 40_000, new PromMetrics(), cfg);
      }
      for (const st of outbox.stats().streams) expect(balanced(st), `${st.stream} at step ${step}`).toBe(true);
      expect(outbox.stats().bytes).toBeLessThanOrEqual(40_000);
    }
    const s = outbox.stats();
    expect(s.dropped).toBeGreaterThan(0);
    expect(s.expired).toBeGreaterThan(0);
    expect(s.delivered).toBeGreaterThan(0);
    // What the counters say is what is stored: every reading, its bytes, numbers strictly increasing.
    for (const st of s.streams) {
      const rows = outbox.peek(st.stream, 0, 1_000_000);
      expect(rows.length).toBe(st.depth);
      expect(rows.reduce((b, r) => b + Buffer.byteLength(r.body), 0)).toBe(st.bytes);
      for (let i = 1; i < rows.length; i++) expect(rows[i]!.rowid).toBeGreaterThan(rows[i - 1]!.rowid);
    }
  });

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
