import type { Quality, Value } from '../../runtime/contracts/index.js';
import type { Deadband } from './types.js';

export interface ReportPolicy {
  readonly deadband?: Deadband | undefined;
  readonly maxSilenceMs?: number | undefined;
}

/**
 * Report by exception, per point: a reading is reported when it is the first, its quality changed,
 * its value moved beyond the deadband (absolute, or percent of the last reported value; any
 * change for non-numbers), or nothing was reported for `maxSilenceMs`. Without a deadband every
 * good reading is reported; a point that stays bad or stale is reported once per transition.
 *
 * What was last reported is kept in three columns by point index, updated in place: no object per
 * point, no allocation per point and poll, and the times stay unboxed doubles. A request whose
 * points all report every good reading leaves its values as they are (reportedGood): they are
 * written into the columns only when one of its points is looked at again.
 */
export class ReportFilter {
  /** Per point: the last reported value, quality (undefined: never reported) and time. */
  private readonly values: Value[];
  private readonly qualities: (Quality | undefined)[];
  private readonly at: number[];
  /** Per point: the run (see addRun) it belongs to, or -1. */
  private readonly runOf: number[];
  /** Per run: its points; the good values last reported for them and when, not yet written. */
  private readonly runs: (readonly number[])[] = [];
  private readonly pending: (readonly Value[] | undefined)[] = [];
  private readonly pendingAt: number[] = [];

  /** `points`: how many points the device has (indexes 0 … points - 1). */
  constructor(points: number) {
    this.values = Array.from({ length: points }, () => null);
    this.qualities = Array.from({ length: points }, () => undefined);
    this.at = Array.from({ length: points }, () => 0);
    this.runOf = Array.from({ length: points }, () => -1);
  }

  /** Declares points that are reported together (a read request's); a point belongs to one run at most. */
  addRun(points: readonly number[]): number {
    const run = this.runs.length;
    this.runs.push(points);
    this.pending.push(undefined);
    this.pendingAt.push(0);
    for (const i of points) this.runOf[i] = run;
    return run;
  }

  shouldReport(point: number, policy: ReportPolicy, value: Value, quality: Quality, now: number): boolean {
    this.settle(point);
    const last = this.qualities[point];
    const report =
      last === undefined ||
      last !== quality ||
      moved(policy.deadband, this.values[point]!, value, quality) ||
      (policy.maxSilenceMs !== undefined && now - this.at[point]! >= policy.maxSilenceMs);
    if (report) {
      this.values[point] = value;
      this.qualities[point] = quality;
      this.at[point] = now;
    }
    return report;
  }

  /**
   * Records good readings of the points of `run`, `values[j]` of its j-th point, none of which has a
   * deadband: such a reading is reported whatever came before (shouldReport would say yes to
   * each), so only what it leaves behind is kept. `values` must not change afterwards.
   */
  reportedGood(run: number, values: readonly Value[], now: number): void {
    this.pending[run] = values;
    this.pendingAt[run] = now;
  }

  /** When `point` was last reported (undefined: never). */
  lastAt(point: number): number | undefined {
    this.settle(point);
    return this.qualities[point] === undefined ? undefined : this.at[point];
  }

  /** The last value reported as good, for a stale reading to carry. */
  lastGood(point: number): Value {
    this.settle(point);
    const q = this.qualities[point];
    return q !== undefined && q !== 'bad' ? this.values[point]! : null;
  }

  /** Writes what reportedGood left for the run of `point` into the columns. */
  private settle(point: number): void {
    const run = this.runOf[point]!;
    if (run < 0) return;
    const values = this.pending[run];
    if (values === undefined) return;
    const points = this.runs[run]!;
    const now = this.pendingAt[run]!;
    for (let j = 0; j < points.length; j++) {
      const i = points[j]!;
      this.values[i] = values[j]!;
      this.qualities[i] = 'good';
      this.at[i] = now;
    }
    this.pending[run] = undefined;
  }
}

function moved(d: Deadband | undefined, last: Value, value: Value, quality: Quality): boolean {
  if (quality !== 'good') return false;
  if (typeof value !== 'number' || typeof last !== 'number') return d === undefined || value !== last;
  if (d === undefined) return true;
  const delta = Math.abs(value - last);
  if (d.absolute !== undefined && delta > d.absolute) return true;
  if (d.percent !== undefined && delta > (Math.abs(last) * d.percent) / 100) return true;
  return false;
}
