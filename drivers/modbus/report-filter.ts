import type { Quality, Value } from '../../runtime/contracts/index.js';
import type { Deadband } from './types.js';

interface Last {
  value: Value;
  quality: Quality;
  at: number;
}

export interface ReportPolicy {
  readonly deadband?: Deadband | undefined;
  readonly maxSilenceMs?: number | undefined;
}

/**
 * Report by exception, per point: a reading is reported when it is the first, its quality changed,
 * its value moved beyond the deadband (absolute, or percent of the last reported value; any
 * change for non-numbers), or nothing was reported for `maxSilenceMs`. Without a deadband every
 * good reading is reported; a point that stays bad or stale is reported once per transition.
 */
export class ReportFilter {
  /** Per point, by its index in the device's point table. */
  private readonly last: (Last | undefined)[] = [];

  shouldReport(point: number, policy: ReportPolicy, value: Value, quality: Quality, now: number): boolean {
    const last = this.last[point];
    if (last === undefined) {
      this.last[point] = { value, quality, at: now };
      return true;
    }
    const report = last.quality !== quality || this.moved(policy, last, value, quality) || this.silentTooLong(policy, last, now);
    if (report) {
      // Updated in place: no allocation per point and poll.
      last.value = value;
      last.quality = quality;
      last.at = now;
    }
    return report;
  }

  /** When `point` was last reported (undefined: never). */
  lastAt(point: number): number | undefined {
    return this.last[point]?.at;
  }

  /** The last value reported as good, for a stale reading to carry. */
  lastGood(point: number): Value {
    const l = this.last[point];
    return l && l.quality !== 'bad' ? l.value : null;
  }

  private moved(policy: ReportPolicy, last: Last, value: Value, quality: Quality): boolean {
    if (quality !== 'good') return false;
    const d = policy.deadband;
    if (typeof value !== 'number' || typeof last.value !== 'number') return d === undefined || value !== last.value;
    if (d === undefined) return true;
    const delta = Math.abs(value - last.value);
    if (d.absolute !== undefined && delta > d.absolute) return true;
    if (d.percent !== undefined && delta > (Math.abs(last.value) * d.percent) / 100) return true;
    return false;
  }

  private silentTooLong(policy: ReportPolicy, last: Last, now: number): boolean {
    return policy.maxSilenceMs !== undefined && now - last.at >= policy.maxSilenceMs;
  }
}
