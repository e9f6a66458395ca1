import { describe, expect, it } from 'vitest';
import { UplinkGate } from '../../cloud-bridge/link-gate.js';
import { ManualClock } from '../helpers/fakes.js';

const DAY = 86_400_000;

describe('uplink link gate', () => {
  it('without windows or caps, the link is open to everything now', () => {
    const gate = new UplinkGate({}, new ManualClock(), () => undefined);
    gate.start();
    gate.spend(10_000_000);
    expect(gate.windowed).toBe(false);
    expect(gate.windowOpen()).toBe(true);
    expect(gate.closed()).toBe(false);
    expect(gate.delayMs()).toBe(0);
    expect(gate.batchDelay(5)).toBe(0);
    gate.stop();
  });

  it('one daily budget for batches and other traffic: when spent, closed to downloads and telemetry until the next UTC day, not to priority 0', async () => {
    const clock = new ManualClock();
    clock.t = 20 * DAY + 22 * 3_600_000;
    const gate = new UplinkGate({ dailyBytes: 1000 }, clock, () => undefined);
    gate.spend(600);
    expect(gate.closed()).toBe(false);
    // A download takes the rest.
    gate.spend(400);
    expect(gate.closed()).toBe(true);
    expect(gate.delayMs()).toBe(2 * 3_600_000);
    expect(gate.batchDelay(5)).toBe(2 * 3_600_000);
    expect(gate.batchDelay(0)).toBe(0);
    expect(gate.status()).toEqual({ sentToday: 1000, dailyBytes: 1000 });
    await clock.advance(2 * 3_600_000);
    expect(gate.closed()).toBe(false);
    expect(gate.delayMs()).toBe(0);
    expect(gate.status().sentToday).toBe(0);
  });

  it('the rate cap holds other traffic and batches back for a while but does not close the link', () => {
    const clock = new ManualClock();
    const gate = new UplinkGate({ maxBytesPerS: 1000 }, clock, () => undefined);
    // One second of burst, then a second of debt.
    gate.spend(2000);
    expect(gate.closed()).toBe(false);
    expect(gate.delayMs()).toBe(1000);
    expect(gate.batchDelay(0)).toBe(1000);
    clock.t += 1000;
    expect(gate.delayMs()).toBe(0);
  });

  it('outside its sync windows the link is closed to other traffic until the next window; inside one it is open until it closes', async () => {
    const clock = new ManualClock();
    // 15 June 03:20 local, inside the hour-long window of 03:00 (a yearly pattern: no real firing).
    clock.t = new Date(2030, 5, 15, 3, 20).getTime();
    const changes: boolean[] = [];
    const gate = new UplinkGate({ syncWindows: [{ cron: '0 3 15 6 *', durationMs: 3_600_000 }] }, clock, (open) => changes.push(open));
    gate.start();
    try {
      expect(gate.windowed).toBe(true);
      expect(gate.windowOpen()).toBe(true);
      expect(gate.closed()).toBe(false);
      expect(gate.delayMs()).toBe(0);
      expect(gate.msToNextWindow()).toBe(0);
      await clock.advance(40 * 60_000);
      expect(changes).toEqual([false]);
      expect(gate.closed()).toBe(true);
      // Until the next 15 June, 03:00 (node-cron counts on real time: two readings differ by the ms between them).
      const delay = gate.delayMs();
      expect(delay).toBeGreaterThan(0);
      expect(Math.abs(delay - gate.msToNextWindow()!)).toBeLessThan(1000);
      // Batches are not held by the gate outside a window: the uplink closes the link itself (idle).
      expect(gate.batchDelay(5)).toBe(0);
    } finally {
      gate.stop();
    }
    expect(clock.pending()).toBe(0);
  });
});
