import { describe, expect, it } from 'vitest';
import { ReportFilter, type ReportPolicy } from '../../drivers/modbus/report-filter.js';
import type { Quality, Value } from '../../runtime/contracts/index.js';

/** A deterministic generator, so a failure can be replayed. */
function rng(seed: number): (n: number) => number {
  let s = seed;
  return (n) => (s = (s * 16807) % 2147483647) % n;
}

/** Report by exception as documented, one object per point: what the filter must agree with. */
class Model {
  private readonly last = new Map<number, { value: Value; quality: Quality; at: number }>();

  shouldReport(i: number, policy: ReportPolicy, value: Value, quality: Quality, now: number): boolean {
    const l = this.last.get(i);
    let report = l === undefined || l.quality !== quality || (policy.maxSilenceMs !== undefined && now - l.at >= policy.maxSilenceMs);
    if (!report && quality === 'good') {
      const d = policy.deadband;
      if (typeof value !== 'number' || typeof l!.value !== 'number') report = d === undefined || value !== l!.value;
      else if (d === undefined) report = true;
      else {
        const delta = Math.abs(value - l!.value);
        report = (d.absolute !== undefined && delta > d.absolute) || (d.percent !== undefined && delta > (Math.abs(l!.value) * d.percent) / 100);
      }
    }
    if (report) this.last.set(i, { value, quality, at: now });
    return report;
  }

  lastAt(i: number): number | undefined {
    return this.last.get(i)?.at;
  }

  lastGood(i: number): Value {
    const l = this.last.get(i);
    return l && l.quality !== 'bad' ? l.value : null;
  }
}

describe('ReportFilter', () => {
  it('agrees with report by exception point by point, also when whole requests are recorded at once', () => {
    for (let seed = 1; seed <= 25; seed++) {
      const r = rng(seed);
      const points = 30;
      const policies: ReportPolicy[] = Array.from({ length: points }, () => ({}));
      const filter = new ReportFilter(points);
      const model = new Model();
      // Runs of consecutive points, as read requests are; half of them without any deadband.
      const runs: { run: number; points: number[]; all: boolean }[] = [];
      for (let first = 0; first < points; ) {
        const members = Array.from({ length: Math.min(1 + r(6), points - first) }, (_, j) => first + j);
        const all = r(2) === 0;
        for (const i of members) {
          policies[i] = all ? (r(3) === 0 ? { maxSilenceMs: 50 } : {}) : { deadband: r(2) === 0 ? { absolute: 2 } : { percent: 10 }, ...(r(2) === 0 ? { maxSilenceMs: 50 } : {}) };
        }
        runs.push({ run: filter.addRun(members), points: members, all });
        first += members.length;
      }
      const value = (): Value => [r(10), r(1000) / 7, r(2) === 0, 'on', null][r(5)]!;
      for (let step = 0, now = 0; step < 400; step++, now += r(20)) {
        const run = runs[r(runs.length)]!;
        if (run.all && r(2) === 0) {
          // A poll that decoded every point of a request without a deadband: recorded at once.
          const values = run.points.map(() => value());
          filter.reportedGood(run.run, values, now);
          run.points.forEach((i, j) => expect(model.shouldReport(i, policies[i]!, values[j]!, 'good', now)).toBe(true));
        } else {
          for (const i of run.points) {
            const q = (['good', 'good', 'bad', 'stale'] as const)[r(4)]!;
            const v = q === 'stale' ? filter.lastGood(i) : q === 'bad' ? null : value();
            expect(filter.shouldReport(i, policies[i]!, v, q, now), `seed ${seed} step ${step} point ${i}`).toBe(model.shouldReport(i, policies[i]!, v, q, now));
          }
        }
        const i = r(points);
        expect(filter.lastAt(i)).toBe(model.lastAt(i));
        expect(filter.lastGood(i)).toBe(model.lastGood(i));
      }
    }
  });
});
