import { describe, expect, it } from 'vitest';
import type { Envelope } from '../../runtime/contracts/index.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { ids, MiB, streamOf, STREAMS, type ContractHarness } from './outbox-suite-harness.js';

/**
 * The Outbox contract, continued (outbox-suite.ts declares these for each implementation): the
 * ways a reading leaves its stream other than an acknowledgement: the dead-letter table, expiry,
 * and drops by a stream's policy or the storage quota; each counted.
 */
export function outflowCases(h: ContractHarness): void {
  const { open, put } = h;

  describe('dead letters', () => {
    it('moves refused readings to the dead-letter table and replays them, keeping the accounting', () => {
      const o = open();
      put(o, 'telemetry', 0, 4);
      const rows = o.peek('telemetry', 0, 10);
      expect(o.deadLetter('telemetry', [rows[1]!.rowid, rows[2]!.rowid], 'refused by broker: 0x99', 5)).toBe(2);
      expect(o.listDeadLetters().map((d) => [(JSON.parse(d.body) as Envelope).id, d.reason])).toEqual([
        ['r1', 'refused by broker: 0x99'],
        ['r2', 'refused by broker: 0x99'],
      ]);
      expect(streamOf(o, 'telemetry')).toMatchObject({ depth: 2, deadLettered: 2 });
      const newest = o.newestRowid();
      expect(o.replayDeadLetters(6)).toBe(2);
      expect(o.deadLetterCount()).toBe(0);
      expect(ids(o, 'telemetry')).toEqual(['r0', 'r3', 'r1', 'r2']);
      expect(o.peek('telemetry', newest, 10).map((r) => [r.body, r.createdAt])).toEqual([rows[1]!, rows[2]!].map((r) => [r.body, 6]));
      expect(streamOf(o, 'telemetry')).toMatchObject({ depth: 4, deadLettered: 2, replayed: 2 });
    });

    it('lists dead letters oldest first, at most `limit`, with their stream, reason and time, and listing changes nothing', () => {
      const o = open();
      put(o, 'telemetry', 0, 5);
      put(o, 'alarms', 10, 2);
      const t = o.peek('telemetry', 0, 10).map((r) => r.rowid);
      const a = o.peek('alarms', 0, 10).map((r) => r.rowid);
      expect(o.deadLetter('telemetry', [t[0]!, t[2]!], 'too large', 100)).toBe(2);
      expect(o.deadLetter('alarms', [a[1]!], 'refused: 0x87', 200)).toBe(1);
      // Ids not in the stream (gone, of another stream, never used) are skipped.
      expect(o.deadLetter('telemetry', [t[0]!, a[0]!, t[4]!, o.newestRowid() + 1000], 'bad', 300)).toBe(1);
      expect(o.deadLetter('telemetry', [], 'bad', 300)).toBe(0);
      const before = o.stats();
      const all = o.listDeadLetters();
      expect(all.map((d) => [d.stream, (JSON.parse(d.body) as Envelope).id, d.reason, d.failedAt])).toEqual([
        ['telemetry', 'r0', 'too large', 100],
        ['telemetry', 'r2', 'too large', 100],
        ['alarms', 'r11', 'refused: 0x87', 200],
        ['telemetry', 'r4', 'bad', 300],
      ]);
      for (let i = 1; i < all.length; i++) expect(all[i]!.id).toBeGreaterThan(all[i - 1]!.id);
      expect(o.listDeadLetters(2)).toEqual(all.slice(0, 2));
      expect(o.deadLetterCount()).toBe(4);
      expect(o.stats()).toEqual(before);
      expect(streamOf(o, 'telemetry')).toMatchObject({ depth: 2, deadLettered: 3 });
      expect(streamOf(o, 'alarms')).toMatchObject({ depth: 1, deadLettered: 1 });
    });

    it('replays only the dead letters asked for, skipping ids that do not exist', () => {
      const o = open();
      put(o, 'telemetry', 0, 6);
      o.deadLetter('telemetry', o.peek('telemetry', 0, 10).map((r) => r.rowid), 'refused', 1);
      const dl = o.listDeadLetters();
      expect(o.replayDeadLetters(50, [dl[1]!.id, dl[4]!.id, dl.at(-1)!.id + 1000])).toBe(2);
      expect(o.listDeadLetters().map((d) => d.id)).toEqual([dl[0]!, dl[2]!, dl[3]!, dl[5]!].map((d) => d.id));
      expect(o.deadLetterCount()).toBe(4);
      expect(ids(o, 'telemetry')).toEqual(['r1', 'r4']);
      expect(o.replayDeadLetters(60, [dl[1]!.id])).toBe(0);
      expect(streamOf(o, 'telemetry')).toMatchObject({ depth: 2, deadLettered: 6, replayed: 2 });
    });

    it('replays a dead letter once when its id is given twice', () => {
      const o = open();
      put(o, 'telemetry', 0, 2);
      o.deadLetter('telemetry', o.peek('telemetry', 0, 10).map((r) => r.rowid), 'refused', 1);
      const dl = o.listDeadLetters();
      expect(o.replayDeadLetters(50, [dl[0]!.id, dl[0]!.id])).toBe(1);
      expect(ids(o, 'telemetry')).toEqual(['r0']);
      expect(streamOf(o, 'telemetry')).toMatchObject({ depth: 1, deadLettered: 2, replayed: 1 });
    });

    it('puts replayed readings over a full stream’s budget at the cost of its oldest, each counted as dropped', () => {
      const o = open([{ name: 'alarms', priority: 0, quotaBytes: 8192, overflow: 'reject-new' }]);
      put(o, 'alarms', 0, 10);
      o.deadLetter('alarms', o.peek('alarms', 0, 5).map((r) => r.rowid), 'refused', 1);
      for (let i = 0; i < 200; i++) put(o, 'alarms', 100 + i, 1);
      const full = streamOf(o, 'alarms');
      expect(full.dropped).toBeGreaterThan(0);
      expect(o.replayDeadLetters(2)).toBe(5);
      const after = streamOf(o, 'alarms');
      expect(after.bytes).toBeLessThanOrEqual(8192);
      expect(after.dropped).toBeGreaterThan(full.dropped);
      expect(ids(o, 'alarms').slice(-5)).toEqual(['r0', 'r1', 'r2', 'r3', 'r4']);
    });
  });
  describe('expiry', () => {
    it('expires readings older than the stream TTL and counts them', () => {
      const o = open([{ name: 'telemetry', priority: 5, quotaBytes: MiB, ttlMs: 60_000, overflow: 'drop-oldest' }]);
      put(o, 'telemetry', 0, 5, 1_000);
      put(o, 'telemetry', 5, 3, 50_000);
      expect(o.expire(61_001)).toBe(5);
      expect(streamOf(o, 'telemetry')).toMatchObject({ depth: 3, expired: 5 });
      expect(o.expire(61_002)).toBe(0);
    });

    it('never expires streams without a TTL, nor dead letters', () => {
      const o = open([{ name: 'telemetry', priority: 5, quotaBytes: MiB, ttlMs: 1_000, overflow: 'drop-oldest' }, STREAMS[0]!]);
      put(o, 'telemetry', 0, 3, 0);
      put(o, 'alarms', 10, 3, 0);
      o.deadLetter('telemetry', [o.peek('telemetry', 0, 1)[0]!.rowid], 'refused', 0);
      expect(o.expire(1e12)).toBe(2);
      expect(ids(o, 'alarms')).toEqual(['r10', 'r11', 'r12']);
      expect(o.deadLetterCount()).toBe(1);
    });
  });
  describe('budgets and the storage quota', () => {
    it('drop-oldest: a stream over its budget drops its own oldest readings, counted exactly; other streams are untouched', async () => {
      const metrics = new PromMetrics();
      const o = open(
        [
          { name: 'alarms', priority: 0, quotaBytes: MiB, overflow: 'reject-new' },
          { name: 'telemetry', priority: 5, quotaBytes: 16_384, overflow: 'drop-oldest' },
        ],
        10 * MiB,
        metrics,
      );
      put(o, 'alarms', 0, 10);
      for (let i = 0; i < 1000; i++) put(o, 'telemetry', 100 + i, 1);
      const t = streamOf(o, 'telemetry');
      expect(t.bytes).toBeLessThanOrEqual(16_384);
      expect(t.dropped).toBeGreaterThan(0);
      expect(t.produced).toBe(1000);
      expect(t.dropped + t.depth).toBe(1000);
      // What is left is the newest, in order.
      expect(ids(o, 'telemetry').at(-1)).toBe('r1099');
      expect(ids(o, 'telemetry')[0]).toBe(`r${100 + t.dropped}`);
      expect(streamOf(o, 'alarms')).toMatchObject({ depth: 10, dropped: 0 });
      expect(await metrics.text()).toContain(`outpost_outbox_readings_total{stream="telemetry",outcome="dropped"} ${t.dropped}`);
    });

    it('reject-new: a full stream refuses new readings and keeps what it has, counted exactly', () => {
      const o = open([
        { name: 'alarms', priority: 0, quotaBytes: 8192, overflow: 'reject-new' },
        { name: 'telemetry', priority: 5, quotaBytes: MiB, overflow: 'drop-oldest' },
      ]);
      for (let i = 0; i < 500; i++) put(o, 'alarms', i, 1);
      put(o, 'telemetry', 1000, 50);
      const a = streamOf(o, 'alarms');
      expect(a.bytes).toBeLessThanOrEqual(8192);
      expect(a.depth).toBeGreaterThan(0);
      expect(ids(o, 'alarms')[0]).toBe('r0');
      expect(a.dropped).toBe(500 - a.depth);
      expect(streamOf(o, 'telemetry')).toMatchObject({ depth: 50, dropped: 0 });
    });

    it('storage quota: the lowest-priority stream gives way first', () => {
      const o = open(STREAMS, 32_768);
      put(o, 'alarms', 0, 20);
      put(o, 'telemetry', 100, 40);
      for (let i = 0; i < 300; i++) put(o, 'bulk', 1000 + i, 1);
      expect(o.stats().bytes).toBeLessThanOrEqual(32_768);
      expect(streamOf(o, 'alarms')).toMatchObject({ depth: 20, dropped: 0 });
      expect(streamOf(o, 'telemetry')).toMatchObject({ depth: 40, dropped: 0 });
      expect(streamOf(o, 'bulk').dropped).toBeGreaterThan(0);
      // Once bulk is gone, telemetry gives way before alarms.
      for (let i = 0; i < 300; i++) put(o, 'telemetry', 2000 + i, 1);
      expect(streamOf(o, 'bulk').depth).toBe(0);
      expect(streamOf(o, 'alarms')).toMatchObject({ depth: 20, dropped: 0 });
      expect(o.stats().bytes).toBeLessThanOrEqual(32_768);
    });
  });
}
