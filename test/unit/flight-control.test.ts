import { describe, expect, it } from 'vitest';
import { FlightControl } from '../../cloud-bridge/flight.js';

describe('uplink flight control', () => {
  it('allows one batch after connecting and one more per acknowledgement, up to maxInFlight', () => {
    const f = new FlightControl(100, 4, () => 0);
    f.connected();
    expect(f.room()).toBe(100);
    f.sent(100);
    expect(f.room()).toBe(0);
    f.settled(100, true);
    f.sent(100);
    expect(f.room()).toBe(100);
    f.sent(100);
    expect(f.room()).toBe(0);
    f.settled(100, true);
    f.settled(100, true);
    for (let i = 0; i < 4; i++) f.sent(100);
    expect(f.batches).toBe(4);
    expect(f.room()).toBe(0);
  });

  it('a batch that failed frees its room without widening the window', () => {
    const f = new FlightControl(100, 4, () => 0);
    f.connected();
    f.sent(100);
    f.settled(100, false);
    f.sent(100);
    expect(f.room()).toBe(0);
  });

  it('halves the reading cap when a connection is lost with batches in flight, and grows it back one batch per 2 s of acknowledgements', () => {
    let now = 0;
    const f = new FlightControl(100, 8, () => now);
    f.lost();
    f.lost();
    f.lost();
    // 800 → 400 → 200 → 100: the next batch may carry at most the cap.
    f.connected();
    expect(f.room()).toBe(100);
    f.sent(100);
    now += 2000;
    f.settled(100, true);
    f.sent(100);
    // Grown by one batch (to 200): 100 in flight, 100 more allowed.
    expect(f.room()).toBe(100);
    for (let i = 0; i < 10; i++) f.lost();
    f.reset();
    f.connected();
    // Never below 16 readings (or one batch if smaller).
    expect(f.room()).toBe(16);
  });

  it('forgets what was in flight when the session is gone', () => {
    const f = new FlightControl(10, 2, () => 0);
    f.connected();
    f.sent(10);
    f.reset();
    expect([f.batches, f.rows, f.room()]).toEqual([0, 0, 10]);
  });
});
