import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../runtime/contracts/index.js';
import { LoginLimiter } from '../../runtime/http/login-limiter.js';

/** `n` failed attempts from `address`; the waits they met (undefined: let through). */
function fail(l: LoginLimiter, address: string, n: number): Array<number | undefined> {
  return Array.from({ length: n }, () => {
    const wait = l.begin(address);
    if (wait === undefined) l.end(address, 'failure');
    return wait;
  });
}

describe('failed logins per address', () => {
  it('lets 5 failures through, then makes the address wait a minute; the right password works once the wait is over', () => {
    const clock = new ManualClock(1_000_000);
    const l = new LoginLimiter(clock);
    expect(fail(l, '10.0.0.9', 5)).toEqual([undefined, undefined, undefined, undefined, undefined]);
    expect(l.begin('10.0.0.9')).toBe(60);
    clock.t += 30_000;
    expect(l.begin('10.0.0.9')).toBe(30);
    clock.t += 30_000;
    expect(l.begin('10.0.0.9')).toBeUndefined();
    l.end('10.0.0.9', 'success');
    expect(l.size).toBe(0);
  });

  it('doubles the wait with every further run of failures, up to 15 minutes, and never for good', () => {
    const clock = new ManualClock(0);
    const l = new LoginLimiter(clock);
    const waits: number[] = [];
    for (let run = 0; run < 7; run++) {
      fail(l, 'a', 5);
      const wait = l.begin('a')!;
      waits.push(wait);
      clock.t += wait * 1000;
    }
    expect(waits).toEqual([60, 120, 240, 480, 900, 900, 900]);
    expect(l.begin('a')).toBeUndefined();
  });

  it('limits each address alone, and forgets one after 15 quiet minutes', () => {
    const clock = new ManualClock(0);
    const l = new LoginLimiter(clock);
    fail(l, 'attacker', 5);
    expect(l.begin('attacker')).toBe(60);
    expect(l.begin('admin')).toBeUndefined();
    l.end('admin', 'success');
    clock.t += 60_000 + 15 * 60_000;
    // Forgotten: the next run of failures waits one minute again, not two.
    fail(l, 'attacker', 5);
    expect(l.begin('attacker')).toBe(60);
  });

  it('counts attempts made in parallel before any is answered, and uncounts malformed ones', () => {
    const l = new LoginLimiter(new ManualClock(0));
    const started = Array.from({ length: 6 }, () => l.begin('b'));
    expect(started.slice(0, 5)).toEqual([undefined, undefined, undefined, undefined, undefined]);
    expect(started[5]).toBe(60);
    const l2 = new LoginLimiter(new ManualClock(0));
    for (let i = 0; i < 20; i++) {
      expect(l2.begin('c')).toBeUndefined();
      l2.end('c', 'other');
    }
  });

  it('tracks a bounded number of addresses', () => {
    const l = new LoginLimiter(new ManualClock(0), { failures: 5, blockMs: 60_000, maxBlockMs: 900_000, maxAddresses: 100 });
    for (let i = 0; i < 1000; i++) fail(l, `10.0.${i >> 8}.${i & 255}`, 1);
    expect(l.size).toBe(100);
  });
});
