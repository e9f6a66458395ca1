import { describe, expect, it } from 'vitest';
import { LinkBudget, type UsageStore } from '../../cloud-bridge/link-budget.js';
import { ManualClock } from '../../runtime/contracts/index.js';


function memoryUsage(): UsageStore & { days: Map<string, number> } {
  const days = new Map<string, number>();
  return { days, bytesOn: (d) => days.get(d) ?? 0, add: (d, b) => days.set(d, (days.get(d) ?? 0) + b) };
}

const DAY = 86_400_000;

describe('uplink link budget', () => {
  it('without caps, everything goes at once', () => {
    const b = new LinkBudget({}, new ManualClock(0));
    b.spend(10_000_000);
    expect(b.delayFor(5)).toBe(0);
  });

  it('holds the long-run rate to the cap, whatever the batch size', () => {
    const clock = new ManualClock(1_000_000);
    const b = new LinkBudget({ maxBytesPerS: 10_000 }, clock);
    let sent = 0;
    // Send 40 KB batches as fast as the budget allows for 60 simulated seconds.
    while (clock.t < 1_060_000) {
      const d = b.delayFor(5);
      if (d > 0) {
        clock.t += d;
        continue;
      }
      b.spend(40_000);
      sent += 40_000;
    }
    // One second of burst plus 60 s at 10 KB/s, and at most one batch of debt.
    expect(sent).toBeLessThanOrEqual(10_000 + 60 * 10_000 + 40_000);
    expect(sent).toBeGreaterThanOrEqual(60 * 10_000 - 40_000);
  });

  it('stops all but priority 0 when the daily budget is spent, until the next UTC day', () => {
    const clock = new ManualClock(10 * DAY + 3_600_000);
    const usage = memoryUsage();
    const b = new LinkBudget({ dailyBytes: 100_000 }, clock, usage);
    b.spend(60_000);
    expect(b.delayFor(5)).toBe(0);
    b.spend(60_000);
    expect(b.delayFor(5)).toBe(DAY - 3_600_000);
    expect(b.delayFor(0)).toBe(0);
    clock.t = 11 * DAY;
    expect(b.delayFor(5)).toBe(0);
    expect(b.status().sentToday).toBe(0);
  });

  it('remembers what was spent today across a restart', () => {
    const clock = new ManualClock(5 * DAY + 1000);
    const usage = memoryUsage();
    new LinkBudget({ dailyBytes: 100_000 }, clock, usage).spend(150_000);
    const again = new LinkBudget({ dailyBytes: 100_000 }, clock, usage);
    expect(again.status().sentToday).toBe(150_000);
    expect(again.delayFor(3)).toBeGreaterThan(0);
  });
});
