import { describe, expect, it } from 'vitest';
import { makeEnvelope, type WriteOutput } from '../../runtime/contracts/index.js';
import { createLogger } from '../../runtime/logger.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { ActuationGuard } from '../../rules/actuation.js';
import { ManualClock } from '../helpers/fakes.js';

/** A clock whose timers run when the test moves time forward. */
const out = (value: number | null, device = 'plc', point = 'sp', minIntervalMs = 1000): WriteOutput => ({
  route: 'write',
  device,
  point,
  minIntervalMs,
  envelope: makeEnvelope({ id: `x${String(value)}`, device: 'm', point: 'p', value, quality: 'good', ts: 0, seq: 1 }),
});

async function outcomes(metrics: PromMetrics): Promise<Record<string, number>> {
  const text = await metrics.text();
  const r: Record<string, number> = {};
  for (const m of text.matchAll(/^outpost_actuations_total\{[^}]*outcome="(\w+)"[^}]*\} (\d+)$/gm)) r[m[1]!] = (r[m[1]!] ?? 0) + Number(m[2]);
  return r;
}

describe('actuation guard', () => {
  it('a storm of values becomes at most one write per interval, the latest value last', async () => {
    const clock = new ManualClock();
    const metrics = new PromMetrics();
    const writes: Array<[number, unknown]> = [];
    const guard = new ActuationGuard(
      (_d, _p, v) => {
        writes.push([clock.now(), v]);
        return Promise.resolve();
      },
      clock,
      createLogger({ level: 'silent' }),
      metrics,
    );
    // 1,000 values over 2 s (one every 2 ms).
    for (let i = 0; i < 1000; i++) {
      guard.submit(out(i));
      await clock.advance(2);
    }
    await clock.advance(5000);
    expect(writes.map(([t]) => t)).toEqual([0, 1000, 2000]);
    expect(writes.at(-1)![1]).toBe(999);
    const o = await outcomes(metrics);
    expect(o.written).toBe(3);
    expect(o.coalesced).toBe(1000 - 3);
    // Per point: another point is not held back by this one.
    guard.submit(out(5, 'plc', 'other'));
    await clock.advance(0);
    expect(writes.at(-1)).toEqual([7000, 5]);
  });

  it('skips a value equal to the one written, retries after a failure, never writes null', async () => {
    const clock = new ManualClock();
    const metrics = new PromMetrics();
    const writes: unknown[] = [];
    let fail = true;
    const guard = new ActuationGuard(
      (_d, _p, v) => {
        writes.push(v);
        return fail ? Promise.reject(new Error('device busy')) : Promise.resolve();
      },
      clock,
      createLogger({ level: 'silent' }),
      metrics,
    );
    guard.submit(out(7, 'plc', 'sp', 0));
    await clock.advance(10);
    fail = false;
    guard.submit(out(7, 'plc', 'sp', 0));
    await clock.advance(10);
    guard.submit(out(7, 'plc', 'sp', 0));
    guard.submit(out(null, 'plc', 'sp', 0));
    await clock.advance(10);
    expect(writes).toEqual([7, 7]);
    expect(await outcomes(metrics)).toEqual({ failed: 1, written: 1, unchanged: 1 });
    guard.stop();
  });
});
