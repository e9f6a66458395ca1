import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeEnvelope, type Envelope, type Metrics, type Outbox, type OutboxStats, type OutboxStreamConfig, type StreamStats } from '../../runtime/contracts/index.js';
import { PromMetrics } from '../../runtime/metrics.js';

/**
 * What one outbox implementation gives the suite: its store, opened (and, where the store can,
 * closed and opened again, as a restart does).
 */
export interface OutboxStore {
  /** The outbox on this store, with these streams and this storage quota. */
  open(quotaBytes: number, streams: readonly OutboxStreamConfig[], metrics?: Metrics): Outbox;
  /** Runs `fn` in the store transaction `append` must run inside; rethrows what it throws (rolled back). */
  transaction(fn: () => void): void;
  /** Closes the store and opens it again (a restart); absent when the store cannot outlive its process. */
  reopen?(): void;
  close(): void;
}

const MiB = 1024 * 1024;
const DEFAULT_STREAM: OutboxStreamConfig = { name: 'telemetry', priority: 5, quotaBytes: 10 * MiB, overflow: 'drop-oldest' };
const streams: OutboxStreamConfig[] = [
  { name: 'alarms', priority: 0, quotaBytes: MiB, overflow: 'reject-new' },
  { name: 'telemetry', priority: 5, quotaBytes: MiB, overflow: 'drop-oldest' },
  { name: 'bulk', priority: 9, quotaBytes: MiB, overflow: 'drop-oldest' },
];
type StreamConfig = OutboxStreamConfig;

const env = (i: number, device = 'd'): Envelope =>
  makeEnvelope({ id: `r${i}`, device, point: 'p', value: i, quality: 'good', ts: 1_700_000_000_000 + i, seq: i });

/** produced + replayed = delivered + expired + dropped + deadLettered + depth, per stream. */
function balanced(s: StreamStats | OutboxStats): boolean {
  const produced = 'produced' in s ? s.produced : s.appended;
  return produced + s.replayed === s.delivered + s.expired + s.dropped + s.deadLettered + s.depth;
}

const stream = (o: Outbox, name: string): StreamStats => o.stats().streams.find((s) => s.stream === name)!;
const ids = (o: Outbox, name: string): string[] => o.peek(name, 0, 1_000_000).map((r) => (JSON.parse(r.body) as Envelope).id);

/**
 * The Outbox contract (runtime/contracts/outbox.ts), proved once for every implementation, as
 * aedes-persistence runs one suite for every backend: order, acknowledgement, overflow policies,
 * the storage quota, TTL, dead letters, rollback, and the accounting equation after every step.
 */
export function outboxContractSuite(name: string, makeStore: () => OutboxStore, opts: { readonly reopens: boolean }): void {
  describe(`outbox contract: ${name}`, () => {
    let store: OutboxStore;
    const reopens = opts.reopens;
    const put = (outbox: Outbox, streamName: string, from: number, count: number, now = 0): void => {
      store.transaction(() => outbox.append(Array.from({ length: count }, (_, k) => ({ envelope: env(from + k), stream: streamName })), now));
      outbox.committed();
    };

    beforeEach(() => {
      store = makeStore();
    });
    afterEach(() => {
      store.close();
    });

    it('keeps rows in order until acknowledged, and accounts for every one', () => {
      const outbox = store.open(10 * MiB, [DEFAULT_STREAM]);
      put(outbox, 'telemetry', 1, 3);
      const rows = outbox.peek('telemetry', 0, 2);
      expect(rows.map((r) => (JSON.parse(r.body) as Envelope).id)).toEqual(['r1', 'r2']);
      expect(outbox.ack('telemetry', rows[0]!.rowid, rows[1]!.rowid)).toBe(2);
      expect(outbox.ack('telemetry', rows[0]!.rowid, rows[1]!.rowid)).toBe(0);
      const s = outbox.stats();
      expect(s).toMatchObject({ depth: 1, appended: 3, delivered: 2, dropped: 0 });
      expect(balanced(s)).toBe(true);
    });

    if (reopens)
      it('survives reopening: depth, bytes and every counter come back from disk', () => {
        const outbox = store.open(10 * MiB, streams);
        put(outbox, 'telemetry', 1, 5);
        put(outbox, 'alarms', 10, 2);
        const r = outbox.peek('telemetry', 0, 2);
        outbox.ack('telemetry', r[0]!.rowid, r[1]!.rowid);
        const before = outbox.stats();
        store.reopen!();
        const again = store.open(10 * MiB, streams);
        expect(again.stats()).toEqual(before);
      });

    it('never reuses a row id once the outbox emptied, so a late acknowledgement cannot delete new rows', () => {
      const outbox = store.open(10 * MiB, [DEFAULT_STREAM]);
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
      const outbox = store.open(10 * MiB, streams);
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
      const outbox = store.open(10 * MiB, small, metrics);
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
      const outbox = store.open(10 * MiB, [
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
      const outbox = store.open(32_768, streams);
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
      const outbox = store.open(10 * MiB, [
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
      const outbox = store.open(10 * MiB, streams);
      put(outbox, 'telemetry', 0, 3);
      expect(() =>
        store.transaction(() => {
          outbox.append([{ envelope: env(9), stream: 'telemetry' }], 0);
          throw new Error('disk full');
        }),
      ).toThrow(/disk full/);
      outbox.rolledBack();
      expect(stream(outbox, 'telemetry')).toMatchObject({ depth: 3, produced: 3 });
      expect(balanced(outbox.stats())).toBe(true);
    });

    it('moves refused readings to the dead-letter table and replays them, keeping the accounting', () => {
      const outbox = store.open(10 * MiB, streams);
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

    it(`keeps the accounting equation exact through a chaotic run${reopens ? ' with restarts' : ''}`, () => {
      let seed = 42;
      const rand = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
      const cfg: StreamConfig[] = [
        { name: 'alarms', priority: 0, quotaBytes: 4096, overflow: 'reject-new' },
        { name: 'telemetry', priority: 5, quotaBytes: 16_384, ttlMs: 50, overflow: 'drop-oldest' },
        { name: 'bulk', priority: 9, quotaBytes: 65_536, overflow: 'drop-oldest' },
      ];
      let outbox = store.open(40_000, cfg);
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
        else if (r < 0.95 && reopens) {
          store.reopen!();
          outbox = store.open(40_000, cfg);
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

    it('reads a stream oldest first within bounds (after, up to, limit), and drains streams by priority', () => {
      const outbox = store.open(10 * MiB, streams);
      put(outbox, 'bulk', 0, 3);
      put(outbox, 'telemetry', 10, 10);
      put(outbox, 'alarms', 100, 2);
      expect(outbox.drainOrder().map((s) => s.name)).toEqual(['alarms', 'telemetry', 'bulk']);
      const all = outbox.peek('telemetry', 0, 100);
      expect(all.map((r) => (JSON.parse(r.body) as Envelope).id)).toEqual(Array.from({ length: 10 }, (_, i) => `r${10 + i}`));
      for (let i = 1; i < all.length; i++) expect(all[i]!.rowid).toBeGreaterThan(all[i - 1]!.rowid);
      expect(outbox.peek('telemetry', all[2]!.rowid, 3).map((r) => r.rowid)).toEqual(all.slice(3, 6).map((r) => r.rowid));
      expect(outbox.peek('telemetry', all[2]!.rowid, 100, all[4]!.rowid).map((r) => r.rowid)).toEqual(all.slice(3, 5).map((r) => r.rowid));
      expect(outbox.peek('telemetry', 0, 0)).toEqual([]);
      expect(outbox.newestRowid()).toBeGreaterThanOrEqual(Math.max(...all.map((r) => r.rowid)));
      for (const r of all) expect(r.bytes).toBe(Buffer.byteLength(r.body));
    });

    it('replays only the dead letters asked for, and the rest stay listed', () => {
      const outbox = store.open(10 * MiB, streams);
      put(outbox, 'telemetry', 0, 5);
      const rows = outbox.peek('telemetry', 0, 10);
      outbox.deadLetter('telemetry', rows.map((r) => r.rowid), 'refused', 1);
      const listed = outbox.listDeadLetters(10);
      expect(listed.map((d) => d.stream)).toEqual(Array(5).fill('telemetry'));
      expect(outbox.listDeadLetters(2)).toHaveLength(2);
      expect(outbox.replayDeadLetters(2, [listed[1]!.id, listed[3]!.id])).toBe(2);
      expect(outbox.deadLetterCount()).toBe(3);
      expect(outbox.listDeadLetters().map((d) => d.id)).toEqual([listed[0]!.id, listed[2]!.id, listed[4]!.id]);
      expect(ids(outbox, 'telemetry')).toEqual(['r1', 'r3']);
      expect(balanced(outbox.stats())).toBe(true);
    });
  });
}
