import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PointTable, ReadingBatchBuilder, type Envelope, type Metrics, type Outbox } from '../../runtime/contracts/index.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { accounted, env, expectAccounted, ids, items, MiB, streamOf, STREAMS, type ContractHarness, type StreamSetup } from './outbox-suite-harness.js';
import { outflowCases } from './outbox-suite-outflows.js';

export type { StreamSetup } from './outbox-suite-harness.js';

export interface OutboxSetup {
  /** The storage quota of the whole outbox. */
  readonly quotaBytes: number;
  readonly streams: readonly StreamSetup[];
  readonly metrics: Metrics;
}

/** One store, fresh and empty, with an outbox on it. */
export interface OutboxStore {
  /** An outbox on this store; after `close`, on the same store again (a restarted gateway). */
  open(setup: OutboxSetup): Outbox;
  /** Runs `fn` in a transaction of the store, as the ingest pipeline runs `append`; when `fn` throws, rolls back and throws. */
  transaction(fn: () => void): void;
  /** The gateway stops: the store is closed. */
  close(): void;
  /** Closes the store if open and removes what it left behind. */
  dispose(): void;
}

export interface OutboxFactory {
  /** False when the store does not outlive `close` (in memory): the cases that reopen it are not run there. */
  readonly reopens: boolean;
  create(): OutboxStore;
}

/**
 * The Outbox contract (runtime/contracts/outbox.ts), proved against one implementation: here
 * appending, reading, acknowledging, the drain order, sequence numbers and restarts; the other
 * ways out of a stream (dead letters, expiry, budgets and the quota) in outbox-suite-outflows.ts.
 * Every outbox a test opens checks the accounting equation after each operation (outbox-suite-harness.ts).
 */
export function outboxContract(name: string, factory: OutboxFactory): void {
  describe(`Outbox contract: ${name}`, () => {
    let store: OutboxStore;
    beforeEach(() => {
      store = factory.create();
    });
    afterEach(() => store.dispose());

    const h: ContractHarness = {
      open: (streams = STREAMS, quotaBytes = 10 * MiB, metrics = new PromMetrics()) => {
        const o = accounted(store.open({ quotaBytes, streams, metrics }));
        expectAccounted(o, 'when opened');
        return o;
      },
      reopen: (streams = STREAMS, quotaBytes = 10 * MiB) => {
        store.close();
        return h.open(streams, quotaBytes);
      },
      transaction: (fn) => store.transaction(fn),
      append: (o, list, now = 0) => {
        store.transaction(() => o.append(list, now));
        o.committed();
      },
      put: (o, stream, from, count, now = 0) => h.append(o, items(stream, from, count), now),
      reopenIt: (title, fn) => {
        // A store that cannot be reopened (in memory) has no such case: declared only where it applies.
        if (factory.reopens) it(title, fn);
      },
    };
    const { open, reopen, append, put, reopenIt } = h;

    describe('append, in the caller’s transaction', () => {
      it('keeps rows in order until acknowledged, and accounts for every one', () => {
        const o = open();
        put(o, 'telemetry', 1, 3);
        const rows = o.peek('telemetry', 0, 2);
        expect(rows.map((r) => (JSON.parse(r.body) as Envelope).id)).toEqual(['r1', 'r2']);
        expect(o.ack('telemetry', rows[0]!.rowid, rows[1]!.rowid)).toBe(2);
        expect(o.ack('telemetry', rows[0]!.rowid, rows[1]!.rowid)).toBe(0);
        expect(o.stats()).toMatchObject({ depth: 1, appended: 3, delivered: 2, dropped: 0 });
      });

      it('leaves no row and no count when the transaction that appended rolls back', async () => {
        const metrics = new PromMetrics();
        const o = open(STREAMS, 10 * MiB, metrics);
        put(o, 'telemetry', 0, 3);
        const newest = o.newestRowid();
        expect(() =>
          h.transaction(() => {
            o.append([...items('telemetry', 9, 100), ...items('alarms', 200, 2)], 0);
            throw new Error('disk full');
          }),
        ).toThrow(/disk full/);
        o.rolledBack();
        expect(ids(o, 'telemetry')).toEqual(['r0', 'r1', 'r2']);
        expect(ids(o, 'alarms')).toEqual([]);
        expect(streamOf(o, 'telemetry')).toMatchObject({ depth: 3, produced: 3 });
        expect(streamOf(o, 'alarms')).toMatchObject({ depth: 0, produced: 0, bytes: 0 });
        expect(o.newestRowid()).toBe(newest);
        expect(await metrics.text()).toContain('outpost_outbox_readings_total{stream="telemetry",outcome="produced"} 3');
        // The next append is counted as usual.
        put(o, 'telemetry', 3, 1);
        expect(ids(o, 'telemetry')).toEqual(['r0', 'r1', 'r2', 'r3']);
      });

      it('numbers each stream’s readings in arrival order, unique across streams', () => {
        const o = open();
        append(o, [...items('telemetry', 0, 100), ...items('alarms', 100, 3), ...items('telemetry', 200, 5), ...items('bulk', 300, 70)]);
        expect(ids(o, 'telemetry')).toEqual([...items('telemetry', 0, 100), ...items('telemetry', 200, 5)].map((i) => i.envelope!.id));
        expect(ids(o, 'alarms')).toEqual(['r100', 'r101', 'r102']);
        const all = ['telemetry', 'alarms', 'bulk'].flatMap((s) => o.peek(s, 0, 1000).map((r) => r.rowid));
        expect(new Set(all).size).toBe(178);
        expect(o.newestRowid()).toBe(Math.max(...all));
      });

      it('stores a batch as the very readings of its envelopes, under either policy, with the same accounting', () => {
        const small = (name: string, overflow: StreamSetup['overflow']): StreamSetup => ({ name, priority: 5, quotaBytes: 8192, overflow });
        const o = open([small('rn-batch', 'reject-new'), small('rn-envelopes', 'reject-new'), small('do-batch', 'drop-oldest'), small('do-envelopes', 'drop-oldest')]);
        const builder = new ReadingBatchBuilder(new PointTable('pump-1', [{ name: 'flow', unit: 'm3/h' }, { name: 'running' }]));
        for (let k = 0; k < 300; k++) builder.add(k % 2, k % 2 === 0 ? k / 4 : k % 3 === 0, k % 7 === 0 ? 'bad' : 'good', 1_764_000_000_000 + k);
        const batch = builder.build({ reserve: () => ({ seq0: 1, idPrefix: 'gw-1:' }) });
        for (const p of ['rn', 'do']) {
          append(o, [{ batch, stream: `${p}-batch` }]);
          append(o, [...batch].map((envelope) => ({ envelope, stream: `${p}-envelopes` })));
          const viaBatch = o.peek(`${p}-batch`, 0, 1000).map((r) => [r.body, r.bytes]);
          expect(viaBatch.length).toBeGreaterThan(0);
          expect(viaBatch).toEqual(o.peek(`${p}-envelopes`, 0, 1000).map((r) => [r.body, r.bytes]));
          const a = streamOf(o, `${p}-batch`);
          expect({ ...a, stream: '' }).toEqual({ ...streamOf(o, `${p}-envelopes`), stream: '' });
          expect(a).toMatchObject({ produced: 300, depth: viaBatch.length, dropped: 300 - viaBatch.length });
        }
        // reject-new keeps the first readings, drop-oldest the last.
        expect(o.peek('rn-batch', 0, 1)[0]!.body).toBe(batch.json(0));
        expect(o.peek('do-batch', 0, 1000).at(-1)!.body).toBe(batch.json(299));
      });
    });

    describe('peek', () => {
      it('reads a stream oldest first, after one row id and up to another, at most `limit` rows', () => {
        const o = open();
        for (let i = 0; i < 5; i++) {
          put(o, 'telemetry', i * 30, 30, i);
          put(o, 'alarms', 1000 + i * 4, 4, i);
        }
        const all = o.peek('telemetry', 0, 1_000_000);
        expect(ids(o, 'telemetry')).toEqual(Array.from({ length: 150 }, (_, i) => `r${i}`));
        expect(all[31]).toEqual({ rowid: all[31]!.rowid, stream: 'telemetry', body: JSON.stringify(env(31)), bytes: Buffer.byteLength(JSON.stringify(env(31))), createdAt: 1 });
        const at = all.map((r) => r.rowid);
        expect(o.peek('telemetry', at[9]!, 5)).toEqual(all.slice(10, 15));
        expect(o.peek('telemetry', at[9]!, 1000, at[99])).toEqual(all.slice(10, 100));
        expect(o.peek('telemetry', at[60]!, 3, at[99])).toEqual(all.slice(61, 64));
        // The bounds need not be row ids of the stream: those of another stream bound it all the same.
        const alarms = o.peek('alarms', 0, 100).map((r) => r.rowid);
        expect(o.peek('telemetry', alarms[0]!, 1000, alarms.at(-1))).toEqual(all.filter((r) => r.rowid > alarms[0]! && r.rowid <= alarms.at(-1)!));
        expect(o.peek('telemetry', 0, 0)).toEqual([]);
        expect(o.peek('telemetry', at.at(-1)!, 10)).toEqual([]);
        expect(o.peek('telemetry', at[50]!, 10, at[50])).toEqual([]);
        expect(o.peek('nowhere', 0, 10)).toEqual([]);
      });
    });

    describe('ack', () => {
      it('removes exactly the range acknowledged, also inside what was appended together, keeping the rest with their ids', () => {
        const o = open();
        put(o, 'telemetry', 0, 200);
        const rows = o.peek('telemetry', 0, 1000);
        const at = (i: number): number => rows[i]!.rowid;
        expect(o.ack('telemetry', at(10), at(19))).toBe(10);
        expect(o.ack('telemetry', at(60), at(70))).toBe(11);
        expect(o.ack('telemetry', at(199), at(199))).toBe(1);
        // Overlapping a range already gone: only the rows still there.
        expect(o.ack('telemetry', at(5), at(25))).toBe(11);
        const gone = (i: number): boolean => (i >= 5 && i <= 25) || (i >= 60 && i <= 70) || i === 199;
        expect(o.peek('telemetry', 0, 1000)).toEqual(rows.filter((_, i) => !gone(i)));
        expect(streamOf(o, 'telemetry')).toMatchObject({ depth: 167, delivered: 33 });
      });

      it('never deletes rows of another stream, and counts nothing for rows already gone or a stream it does not know', () => {
        const o = open();
        for (let i = 0; i < 10; i++) put(o, i % 2 === 0 ? 'telemetry' : 'alarms', i, 1);
        const t = o.peek('telemetry', 0, 100);
        expect(o.ack('telemetry', t[0]!.rowid, t.at(-1)!.rowid)).toBe(5);
        expect(streamOf(o, 'alarms')).toMatchObject({ depth: 5, delivered: 0 });
        const before = o.stats();
        expect(o.ack('telemetry', t[0]!.rowid, t.at(-1)!.rowid)).toBe(0);
        expect(o.ack('nowhere', 0, o.newestRowid())).toBe(0);
        expect(o.ack('alarms', 10, 1)).toBe(0);
        expect(o.stats()).toEqual(before);
      });
    });

    describe('drain order', () => {
      it('lists streams highest priority (lowest number) first', () => {
        const o = open([STREAMS[2]!, STREAMS[0]!, STREAMS[1]!]);
        expect(o.drainOrder()).toEqual([
          { name: 'alarms', priority: 0 },
          { name: 'telemetry', priority: 5 },
          { name: 'bulk', priority: 9 },
        ]);
      });

      it('keeps readings for a stream that is not configured in a stream drained last', () => {
        const o = open(STREAMS.slice(0, 2));
        put(o, 'stray', 0, 4);
        expect(o.drainOrder().at(-1)).toEqual({ name: 'stray', priority: 9 });
        expect(ids(o, 'stray')).toEqual(['r0', 'r1', 'r2', 'r3']);
        expect(streamOf(o, 'stray')).toMatchObject({ produced: 4, depth: 4 });
      });

      reopenIt('keeps a stream no longer configured, with its rows and counters, drained last', () => {
        let o = open();
        put(o, 'bulk', 0, 5);
        const b = o.peek('bulk', 0, 2);
        o.ack('bulk', b[0]!.rowid, b[1]!.rowid);
        o = reopen(STREAMS.slice(0, 2));
        expect(o.drainOrder().map((s) => s.name)).toEqual(['alarms', 'telemetry', 'bulk']);
        expect(streamOf(o, 'bulk')).toMatchObject({ priority: 9, depth: 3, produced: 5, delivered: 2 });
        expect(ids(o, 'bulk')).toEqual(['r2', 'r3', 'r4']);
      });
    });

    describe('sequence numbers and restarts', () => {
      it('never reuses a row id once the outbox emptied, so a late acknowledgement cannot delete new rows', () => {
        const o = open();
        put(o, 'telemetry', 1, 3);
        const old = o.peek('telemetry', 0, 10);
        o.ack('telemetry', old[0]!.rowid, old[2]!.rowid);
        put(o, 'telemetry', 4, 3);
        const fresh = o.peek('telemetry', 0, 10);
        expect(fresh[0]!.rowid).toBeGreaterThan(old[2]!.rowid);
        expect(o.ack('telemetry', old[0]!.rowid, old[2]!.rowid)).toBe(0);
        expect(o.stats().depth).toBe(3);
      });

      reopenIt('never reuses a row id after a restart, also once the outbox emptied', () => {
        let o = open();
        put(o, 'telemetry', 1, 3);
        put(o, 'alarms', 10, 1);
        const old = o.peek('telemetry', 0, 10);
        o.deadLetter('alarms', [o.peek('alarms', 0, 1)[0]!.rowid], 'refused', 1);
        o.ack('telemetry', old[0]!.rowid, old[2]!.rowid);
        const newest = o.newestRowid();
        expect(o.stats().depth).toBe(0);
        o = reopen();
        expect(o.newestRowid()).toBe(newest);
        put(o, 'telemetry', 4, 3);
        expect(o.peek('telemetry', 0, 10)[0]!.rowid).toBeGreaterThan(newest);
        expect(o.ack('telemetry', old[0]!.rowid, old[2]!.rowid)).toBe(0);
        o = reopen();
        o.replayDeadLetters(2);
        expect(o.peek('alarms', 0, 10)[0]!.rowid).toBeGreaterThan(o.peek('telemetry', 0, 10).at(-1)!.rowid);
        expect(o.stats().depth).toBe(4);
      });

      reopenIt('survives reopening: depth, bytes, every counter and the dead letters come back', () => {
        const o = open();
        put(o, 'telemetry', 1, 5);
        put(o, 'alarms', 10, 2);
        const r = o.peek('telemetry', 0, 3);
        o.ack('telemetry', r[0]!.rowid, r[1]!.rowid);
        o.deadLetter('telemetry', [r[2]!.rowid], 'refused', 7);
        const before = { stats: o.stats(), deadLetters: o.listDeadLetters(), rows: o.peek('telemetry', 0, 100), drain: o.drainOrder() };
        const again = reopen();
        expect({ stats: again.stats(), deadLetters: again.listDeadLetters(), rows: again.peek('telemetry', 0, 100), drain: again.drainOrder() }).toEqual(before);
      });

      /** Random appends, acknowledgements, expiry, dead letters and replays; restarts when `restarts`. */
      const chaos = (restarts: boolean) => (): void => {
        let seed = 42;
        const rand = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
        const cfg: StreamSetup[] = [
          { name: 'alarms', priority: 0, quotaBytes: 4096, overflow: 'reject-new' },
          { name: 'telemetry', priority: 5, quotaBytes: 16_384, ttlMs: 50, overflow: 'drop-oldest' },
          { name: 'bulk', priority: 9, quotaBytes: 65_536, overflow: 'drop-oldest' },
        ];
        let o = open(cfg, 40_000);
        let n = 0;
        let restarted = 0;
        for (let step = 0; step < 3000; step++) {
          const r = rand();
          const name = cfg[Math.floor(rand() * cfg.length)]!.name;
          if (r < 0.6) {
            put(o, name, n, 1 + Math.floor(rand() * 20), step);
            n += 20;
          } else if (r < 0.85) {
            // Mostly the oldest readings, sometimes a range in the middle.
            const rows = o.peek(name, 0, 1 + Math.floor(rand() * 30));
            const from = rand() < 0.7 ? 0 : Math.floor(rand() * rows.length);
            const part = rows.slice(from, from + 1 + Math.floor(rand() * 30));
            if (part.length > 0) expect(o.ack(name, part[0]!.rowid, part.at(-1)!.rowid)).toBe(part.length);
          } else if (r < 0.9) o.expire(step);
          else if (r < 0.93) {
            const rows = o.peek(name, 0, 2);
            o.deadLetter(name, rows.map((x) => x.rowid), 'test', step);
          } else if (r < 0.94) o.replayDeadLetters(step);
          else if (r < 0.95 && restarts) {
            o = reopen(cfg, 40_000);
            restarted++;
          }
          expect(o.stats().bytes, `step ${step}`).toBeLessThanOrEqual(40_000);
        }
        const s = o.stats();
        expect(s.dropped).toBeGreaterThan(0);
        expect(s.expired).toBeGreaterThan(0);
        expect(s.delivered).toBeGreaterThan(0);
        expect(s.replayed).toBeGreaterThan(0);
        if (restarts) expect(restarted).toBeGreaterThan(10);
        expectAccounted(o, 'at the end');
      };
      it('keeps the accounting equation exact through a chaotic run', chaos(false));
      reopenIt('keeps the accounting equation exact through a chaotic run with restarts', chaos(true));
    });

    outflowCases(h);
  });
}
