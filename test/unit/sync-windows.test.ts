import { describe, expect, it } from 'vitest';
import { SyncWindows } from '../../cloud-bridge/sync-windows.js';
import { ManualClock } from '../helpers/fakes.js';

/** Windows open on New Year at midnight (local time, as node-cron reads it) and stay open 10 minutes. */
const newYear = [{ cron: '0 0 1 1 *', durationMs: 10 * 60_000 }];
const at = (minute: number): number => new Date(2026, 0, 1, 0, minute).getTime();

describe('sync windows', () => {
  it('finds a window open when started inside it, and closes it when its length has passed', async () => {
    const clock = new ManualClock(at(5));
    const changes: boolean[] = [];
    const w = new SyncWindows(newYear, clock, (open) => changes.push(open));
    w.start();
    expect(w.isOpen()).toBe(true);
    expect(w.msToNext()).toBe(0);
    await clock.advance(4 * 60_000);
    expect([w.isOpen(), changes]).toEqual([true, []]);
    await clock.advance(60_000);
    expect([w.isOpen(), changes]).toEqual([false, [false]]);
    w.stop();
  });

  it('is closed when started outside every window, and says how long until the next', () => {
    const clock = new ManualClock(at(15));
    const w = new SyncWindows(newYear, clock, () => undefined);
    w.start();
    expect(w.isOpen()).toBe(false);
    expect(w.msToNext()).toBeGreaterThan(0);
    w.stop();
  });

  it('takes the latest end when windows overlap', async () => {
    const clock = new ManualClock(at(5));
    const w = new SyncWindows([...newYear, { cron: '0 0 1 1 *', durationMs: 30 * 60_000 }], clock, () => undefined);
    w.start();
    await clock.advance(10 * 60_000);
    expect(w.isOpen()).toBe(true);
    await clock.advance(15 * 60_000);
    expect(w.isOpen()).toBe(false);
    w.stop();
  });

  it('holds no timer once stopped', () => {
    const clock = new ManualClock(at(5));
    const w = new SyncWindows(newYear, clock, () => undefined);
    w.start();
    expect(clock.pending).toBe(1);
    w.stop();
    expect(clock.pending).toBe(0);
  });
});
