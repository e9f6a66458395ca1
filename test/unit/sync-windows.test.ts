import { describe, expect, it } from 'vitest';
import { SyncWindows } from '../../cloud-bridge/sync-windows.js';
import { ManualClock } from '../helpers/fakes.js';
import { sleep, waitFor } from '../helpers/wait.js';

/** Local time (the gateway's cron time zone) as ms since the epoch. */
const local = (year: number, month: number, day: number, h: number, m: number, s = 0, ms = 0): number => new Date(year, month - 1, day, h, m, s, ms).getTime();

const HOUR = 3_600_000;

/**
 * Windows opened by node-cron on real time cannot be stepped; what is decided from the injected
 * clock can: whether a window is open at start, and when it closes. Patterns that fire once a year
 * (15 June, 03:00 and 03:30 local) keep real firings out of those tests.
 */
describe('sync windows', () => {
  it('a gateway started inside a window finds it open, and it closes durationMs after the window opened', async () => {
    const clock = new ManualClock();
    clock.t = local(2030, 6, 15, 3, 20);
    const changes: boolean[] = [];
    const windows = new SyncWindows([{ cron: '0 3 15 6 *', durationMs: HOUR }], clock, (open) => changes.push(open));
    windows.start();
    expect(windows.isOpen()).toBe(true);
    expect(windows.msToNext()).toBe(0);
    await clock.advance(40 * 60_000 - 1);
    expect(windows.isOpen()).toBe(true);
    expect(changes).toEqual([]);
    await clock.advance(1);
    expect(windows.isOpen()).toBe(false);
    expect(changes).toEqual([false]);
    expect(windows.msToNext()).toBeGreaterThan(0);
    windows.stop();
  });

  it('a gateway started after the window ended finds it closed and arms no timer', () => {
    const clock = new ManualClock();
    clock.t = local(2030, 6, 15, 4, 0);
    const changes: boolean[] = [];
    const windows = new SyncWindows([{ cron: '0 3 15 6 *', durationMs: HOUR }], clock, (open) => changes.push(open));
    windows.start();
    expect(windows.isOpen()).toBe(false);
    expect(clock.pending()).toBe(0);
    windows.stop();
    expect(changes).toEqual([]);
  });

  it('finds a window opened seconds ago with a seconds-resolution pattern', () => {
    const clock = new ManualClock();
    clock.t = local(2030, 6, 15, 3, 0, 7, 500);
    const windows = new SyncWindows([{ cron: '5 0 3 15 6 *', durationMs: 3000 }], clock, () => undefined);
    windows.start();
    expect(windows.isOpen()).toBe(true);
    windows.stop();
    clock.t = local(2030, 6, 15, 3, 0, 8, 0);
    const later = new SyncWindows([{ cron: '5 0 3 15 6 *', durationMs: 3000 }], clock, () => undefined);
    later.start();
    expect(later.isOpen()).toBe(false);
    later.stop();
  });

  it('overlapping windows stay open until the last of them ends, with one close', async () => {
    const clock = new ManualClock();
    clock.t = local(2030, 6, 15, 3, 40);
    const changes: boolean[] = [];
    const windows = new SyncWindows(
      [
        { cron: '0 3 15 6 *', durationMs: HOUR },
        { cron: '30 3 15 6 *', durationMs: HOUR },
      ],
      clock,
      (open) => changes.push(open),
    );
    windows.start();
    await clock.advance(20 * 60_000);
    expect(windows.isOpen()).toBe(true);
    await clock.advance(30 * 60_000);
    expect(windows.isOpen()).toBe(false);
    expect(changes).toEqual([false]);
    windows.stop();
  });

  it('opens at a firing of its cron (real time) and closes durationMs later on the injected clock', async () => {
    const clock = new ManualClock();
    // Half a second past an odd second, with a 400 ms window on even seconds: closed at start.
    clock.t = local(2030, 6, 15, 3, 0, 1, 500);
    const changes: boolean[] = [];
    const windows = new SyncWindows([{ cron: '*/2 * * * * *', durationMs: 400 }], clock, (open) => changes.push(open));
    windows.start();
    try {
      expect(windows.isOpen()).toBe(false);
      const toNext = windows.msToNext();
      expect(toNext).toBeGreaterThan(0);
      expect(toNext).toBeLessThanOrEqual(2000);
      await waitFor('the window to open', () => changes.length > 0, 3000, 10);
      expect(changes).toEqual([true]);
      expect(windows.isOpen()).toBe(true);
      expect(windows.msToNext()).toBe(0);
      await clock.advance(399);
      expect(windows.isOpen()).toBe(true);
      await clock.advance(1);
      expect(changes).toEqual([true, false]);
      expect(windows.isOpen()).toBe(false);
    } finally {
      windows.stop();
    }
  });

  it('stop ends the cron tasks and the close timer: nothing fires after it', async () => {
    const clock = new ManualClock();
    clock.t = local(2030, 6, 15, 3, 0, 1);
    const changes: boolean[] = [];
    const windows = new SyncWindows([{ cron: '* * * * * *', durationMs: 500 }], clock, (open) => changes.push(open));
    windows.start();
    // Every second opens a window: open at start, with its close armed.
    expect(windows.isOpen()).toBe(true);
    expect(clock.pending()).toBe(1);
    windows.stop();
    expect(clock.pending()).toBe(0);
    await sleep(1300);
    await clock.advance(1000);
    expect(changes).toEqual([]);
    expect(windows.msToNext()).toBeUndefined();
  });

  it('with no pattern, no window is ever open or scheduled', () => {
    const clock = new ManualClock();
    const windows = new SyncWindows([], clock, () => undefined);
    windows.start();
    expect(windows.isOpen()).toBe(false);
    expect(windows.msToNext()).toBeUndefined();
    windows.stop();
  });
});
