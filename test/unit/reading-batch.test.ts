import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { outboxMigrations, SqliteOutbox, type StreamConfig } from '../../cloud-bridge/outbox.js';
import {
  decimal,
  makeEnvelope,
  PointTable,
  ReadingBatchBuilder,
  type OutboxItem,
  type Quality,
  type RuleOutput,
  type Value,
} from '../../runtime/contracts/index.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { BootSequence, CountingSequence } from '../../runtime/sequence.js';
import { migrate, openDatabase, type Db } from '../../runtime/store/database.js';
import { runtimeMigrations } from '../../runtime/store/runtime-schema.js';
import { Rules } from '../../rules/engine.js';
import type { RuleSpec } from '../../rules/types.js';

/** A deterministic generator, so a failure can be replayed. */
function rng(seed: number): (n: number) => number {
  let s = seed;
  return (n) => (s = (s * 16807) % 2147483647) % n;
}

const NAMES = ['temp', 'a"quote', 'back\\slash', 'ünïcode·°C', 'tab\there', 'line\nbreak', 'emoji 🌡', '</script>', ''];
const UNITS = [undefined, 'kWh', 'degC', '°C', 'm³/h', 'a"b'];

function randomValue(r: (n: number) => number): Value {
  switch (r(9)) {
    case 0:
      return null;
    case 1:
      return r(2) === 0;
    case 2:
      return NAMES[r(NAMES.length)]! + '\u0001\u2028';
    case 3:
      return -0;
    case 4:
      return r(1_000_000) * 1e21;
    case 5:
      return r(1000) / 3e9;
    case 6:
      return -r(70000);
    default:
      return (r(2_000_000) - 1_000_000) / 7;
  }
}

/** A batch of `n` random readings of a random table, and the Envelopes it must equal. */
function randomBatch(seed: number, n: number, sequence = new CountingSequence('gw-"1\\:', 2 ** 21 * 2 ** 32 - 5000)) {
  const r = rng(seed);
  const device = `dev-${NAMES[r(NAMES.length)]}`;
  const points = NAMES.map((name, i) => ({ name: `${name}${i}`, unit: UNITS[r(UNITS.length)] }));
  const table = new PointTable(device, points);
  const builder = new ReadingBatchBuilder(table);
  const added: Array<{ i: number; value: Value; quality: Quality; ts: number }> = [];
  for (let k = 0; k < n; k++) {
    const a = { i: r(points.length), value: randomValue(r), quality: (['good', 'bad', 'stale'] as const)[r(3)]!, ts: 1_764_000_000_000 + r(3) * 1000 };
    builder.add(a.i, a.value, a.quality, a.ts);
    added.push(a);
  }
  const batch = builder.build(sequence);
  const seq0 = batch.seq(0);
  const envelopes = added.map((a, k) =>
    makeEnvelope({
      id: `gw-"1\\:${seq0 + k}`,
      device,
      point: points[a.i]!.name,
      value: a.value,
      quality: a.quality,
      ts: a.ts,
      seq: seq0 + k,
      unit: points[a.i]!.unit,
    }),
  );
  return { batch, envelopes, builder };
}

describe('ReadingBatch', () => {
  it('is, reading for reading, the Envelopes it stands for: same fields, same JSON text, frozen', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const { batch, envelopes } = randomBatch(seed, 300);
      expect(batch.length).toBe(300);
      expect([...batch]).toEqual(envelopes);
      for (let k = 0; k < batch.length; k++) {
        expect(batch.json(k)).toBe(JSON.stringify(envelopes[k]));
        expect(Object.isFrozen(batch.at(k))).toBe(true);
      }
    }
  });

  it('numbers its readings from one reserved run; the builder starts over', () => {
    const sequence = new CountingSequence('g:');
    expect(sequence.next()).toEqual({ seq: 1, id: 'g:1' });
    const { batch, builder } = randomBatch(3, 10, sequence);
    expect(Array.from({ length: 10 }, (_, k) => batch.seq(k))).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    expect(sequence.next()).toEqual({ seq: 12, id: 'g:12' });
    expect(builder.length).toBe(0);
    builder.add(0, 1, 'good', 5);
    const again = builder.build(sequence);
    expect(again.at(0).id).toBe('g:13');
    // The first batch is untouched by what the builder took afterwards.
    expect(batch.length).toBe(10);
  });

  it('takes runs of readings (one quality and time each) as the same readings added one by one, leaving the runs given unchanged', () => {
    for (let seed = 1; seed <= 30; seed++) {
      const r = rng(seed);
      const table = new PointTable('d', NAMES.map((name, i) => ({ name: `${name}${i}`, unit: UNITS[i % UNITS.length] })));
      const byRun = new ReadingBatchBuilder(table);
      const oneByOne = new ReadingBatchBuilder(table);
      const given: { points: number[]; values: Value[]; copy: string }[] = [];
      for (let part = 0; part < 1 + r(4); part++) {
        const quality = (['good', 'good', 'bad', 'stale'] as const)[r(4)]!;
        const ts = 1_764_000_000_000 + r(3) * 1000;
        if (r(3) === 0) {
          const i = r(NAMES.length);
          const value = randomValue(r);
          byRun.add(i, value, quality, ts);
          oneByOne.add(i, value, quality, ts);
          continue;
        }
        const points = Array.from({ length: r(6) }, () => r(NAMES.length));
        const values = points.map(() => randomValue(r));
        given.push({ points, values, copy: JSON.stringify([points, values]) });
        byRun.addRun(points, values, quality, ts);
        points.forEach((i, j) => oneByOne.add(i, values[j]!, quality, ts));
      }
      expect(byRun.length).toBe(oneByOne.length);
      const a = byRun.build(new CountingSequence('g:'));
      const b = oneByOne.build(new CountingSequence('g:'));
      expect([...a]).toEqual([...b]);
      for (let k = 0; k < a.length; k++) expect(a.json(k)).toBe(b.json(k));
      for (const g of given) expect(JSON.stringify([g.points, g.values])).toBe(g.copy);
    }
  });

  it('selects positions without copying, also from a selection', () => {
    const { batch, envelopes } = randomBatch(7, 50);
    const ks = [0, 3, 4, 10, 49];
    const sel = batch.select(ks);
    expect([...sel]).toEqual(ks.map((k) => envelopes[k]));
    const sel2 = sel.select([1, 4]);
    expect([...sel2]).toEqual([envelopes[3], envelopes[49]]);
    expect(sel2.json(1)).toBe(JSON.stringify(envelopes[49]));
    expect(batch.select(Array.from({ length: 50 }, (_, k) => k))).toBe(batch);
  });

  it('writes decimals as String does, across every thousand boundary', () => {
    const r = rng(11);
    const samples = [0, 7, 999, 1000, 1001, 9999, 2 ** 32, 2 ** 32 + 999, 2 ** 32 + 1000, Number.MAX_SAFE_INTEGER, 2 ** 53 - 1000];
    for (let i = 0; i < 2000; i++) samples.push(r(2 ** 30) * 2 ** 21 + r(2 ** 21), 1000 * r(2 ** 30) + r(3));
    for (const n of samples) expect(decimal(n)).toBe(String(n));
    for (let n = 2 ** 40 - 2500; n < 2 ** 40 + 2500; n++) expect(decimal(n)).toBe(String(n));
  });
});

describe('sequences', () => {
  it('BootSequence: next() and reserve() share one run of numbers with the boot in the high bits', () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-seq-'));
    try {
      const db = openDatabase({ path: join(dir, 's.db'), synchronous: 'normal' });
      migrate(db, 'runtime', runtimeMigrations);
      const s = new BootSequence(db, 'gw1');
      const base = s.boot * 2 ** 32;
      expect(s.next()).toEqual({ seq: base + 1, id: `gw1:${base + 1}` });
      expect(s.reserve(100)).toEqual({ seq0: base + 2, idPrefix: 'gw1:' });
      expect(s.next().seq).toBe(base + 102);
      expect(() => s.reserve(2 ** 32)).toThrow(/exhausted/);
      db.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('rules over a batch', () => {
  const specs: RuleSpec[] = [
    { id: 'hot', type: 'filter', match: { device: 'dev-*', point: '*' }, min: -1000, max: 1000, route: 'cloud', stream: 'telemetry' },
    { id: 'temps', type: 'filter', match: { device: '*', point: 'temp*' }, route: 'cloud', stream: 'telemetry' },
    { id: 'alarms', type: 'filter', match: { device: '*', point: '*quote*' }, route: 'cloud', stream: 'alarms' },
    { id: 'other', type: 'filter', match: { device: 'nothing', point: '*' }, route: 'cloud', stream: 'alarms' },
    // Expressions (failing on some readings), topic filters and stateful operators take the batch path too.
    { id: 'where', type: 'filter', match: { device: '*', point: '*', topic: '+/#' }, where: 'value > 100 or quality = "stale"', bad: 'filter', route: 'cloud', stream: 'big' },
    { id: 'db', type: 'filter', match: { device: '*', point: '*' }, deadband: { absolute: 50 }, groupBy: ['device'], route: 'cloud', stream: 'moves' },
    { id: 'cov', type: 'filter', match: { device: '*', point: '*' }, changeOfValue: true, rateLimit: { count: 20, perMs: 1000 }, route: 'cloud', stream: 'moves' },
    { id: 'f', type: 'filter', match: { device: '*', point: '*' }, where: '$exists(unit)', set: { value: '$string(value) & unit' }, route: 'cloud', stream: 'text' },
  ];
  const clock = { now: () => 0, setTimeout: () => ({ unref() {} }), clearTimeout: () => {} };

  /** Per stream, the ids emitted, in order. */
  const byStream = (outs: RuleOutput[]): Record<string, string[]> => {
    const m: Record<string, string[]> = {};
    for (const o of outs) (m[o.route === 'cloud' ? o.stream : o.route] ??= []).push(...(o.batch ? [...o.batch].map((e) => e.id) : [o.envelope.id]));
    return m;
  };

  it('emits what processing each reading in turn emits, per stream and in order', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const { batch, envelopes } = randomBatch(seed, 200);
      const one: RuleOutput[] = [];
      const many: RuleOutput[] = [];
      const twin = new Rules(specs, clock, new CountingSequence('w:'));
      const rules = new Rules(specs, clock, new CountingSequence('w:'));
      for (const e of envelopes) twin.process(e, (o) => one.push(o));
      rules.processBatch(batch, (o) => many.push(o));
      expect(byStream(many)).toEqual(byStream(one));
      expect(Object.keys(byStream(many)).length).toBeGreaterThanOrEqual(4);
      // Readings passed unchanged go as one selection of the batch per stream.
      expect(many.filter((o) => o.batch).length).toBeLessThanOrEqual(4);
      expect(rules.errors()).toEqual(twin.errors());
      expect(rules.takeDirtyState()).toEqual(twin.takeDirtyState());
    }
  });

  it('feeds windows every reading of the batch', () => {
    const spec: RuleSpec = { id: 'w', type: 'window', match: { device: '*', point: '*' }, windowMs: 1000, aggregates: ['count'], route: 'cloud', stream: 'agg' };
    const { batch, envelopes } = randomBatch(5, 100);
    const a = new Rules([spec], clock, new CountingSequence('w:'));
    const b = new Rules([spec], clock, new CountingSequence('w:'));
    for (const e of envelopes) a.process(e, () => {});
    b.processBatch(batch, () => {});
    expect(b.takeDirtyState()).toEqual(a.takeDirtyState());
  });
});

describe('outbox with batches', () => {
  let dir: string;
  let db: Db;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'outpost-batch-'));
    db = openDatabase({ path: join(dir, 'o.db'), synchronous: 'normal' });
    migrate(db, 'runtime', runtimeMigrations);
    migrate(db, 'outbox', outboxMigrations);
  });
  afterEach(() => {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const bodies = (o: SqliteOutbox, stream: string): string[] => o.peek(stream, 0, 1_000_000).map((r) => r.body);

  it('stores a batch exactly as the same Envelopes, in both overflow policies, with the same accounting', () => {
    for (const overflow of ['drop-oldest', 'reject-new'] as const) {
      // A budget that the 500 readings overflow, so the policy acts.
      const streams: StreamConfig[] = [{ name: 'telemetry', priority: 5, quotaBytes: 40_000, overflow }];
      const parts = [randomBatch(1, 200), randomBatch(2, 300)];
      const put = (o: SqliteOutbox, asBatch: boolean): void => {
        db.transaction(() =>
          o.append(
            parts.flatMap((p): OutboxItem[] => (asBatch ? [{ batch: p.batch, stream: 'telemetry' }] : p.envelopes.map((envelope) => ({ envelope, stream: 'telemetry' })))),
            0,
          ),
        )();
        o.committed();
      };
      const a = new SqliteOutbox(db, 1e9, new PromMetrics(), streams);
      put(a, false);
      const fromEnvelopes = { bodies: bodies(a, 'telemetry'), stats: a.stats().streams[0] };
      db.exec('DELETE FROM outbox_chunks; DELETE FROM outbox_counters');
      const b = new SqliteOutbox(db, 1e9, new PromMetrics(), streams);
      put(b, true);
      const fromBatches = { bodies: bodies(b, 'telemetry'), stats: b.stats().streams[0] };
      expect(fromBatches.bodies.length).toBeGreaterThan(0);
      expect(fromBatches.stats!.dropped).toBeGreaterThan(0);
      expect(fromBatches.bodies).toEqual(fromEnvelopes.bodies);
      expect(fromBatches.stats).toEqual(fromEnvelopes.stats);
      expect(fromBatches.bodies.length + fromBatches.stats!.dropped).toBe(500);
      db.exec('DELETE FROM outbox_chunks; DELETE FROM outbox_counters');
    }
  });
});
