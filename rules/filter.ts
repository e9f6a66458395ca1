import type { Envelope, PointTable, ReadingBatch, RuleOutput } from '../runtime/contracts/index.js';
import { compileGlob } from './glob.js';
import type { FilterRuleSpec } from './types.js';

/**
 * Passes a reading whose numeric value lies in [min, max]. Readings of bad or stale quality pass
 * unchanged: the cloud must see that a sensor failed rather than a silent gap. Non-numeric values
 * pass only when the rule sets no bounds.
 */
export class FilterRule {
  private readonly matchDevice: (name: string) => boolean;
  private readonly matchPoint: (name: string) => boolean;
  /** Per device point table: which of its points the pattern matches (tables are static). */
  private readonly tableMatch = new WeakMap<PointTable, Uint8Array | null>();

  constructor(readonly spec: FilterRuleSpec) {
    this.matchDevice = compileGlob(spec.match.device);
    this.matchPoint = compileGlob(spec.match.point);
  }

  process(r: Envelope, emit: (out: RuleOutput) => void): void {
    if (!this.matchDevice(r.device) || !this.matchPoint(r.point)) return;
    if (r.quality === 'good' && !this.inRange(r.value)) return;
    emit({ route: this.spec.route, stream: this.spec.stream, envelope: r });
  }

  /** Marks (sets to 1) the positions of `batch` that `process` would pass. */
  mark(batch: ReadingBatch, marks: Uint8Array): void {
    const points = this.pointsOf(batch.table);
    if (!points) return;
    const bounded = this.spec.min !== undefined || this.spec.max !== undefined;
    for (let k = 0; k < batch.length; k++) {
      if (marks[k] === 1 || points[batch.pointIndex(k)] !== 1) continue;
      if (bounded && batch.quality(k) === 'good' && !this.inRange(batch.value(k))) continue;
      marks[k] = 1;
    }
  }

  /** The table's points this rule matches; null when the device does not match. */
  private pointsOf(table: PointTable): Uint8Array | null {
    let m = this.tableMatch.get(table);
    if (m === undefined) {
      m = this.matchDevice(table.device) ? Uint8Array.from(table.names, (n) => (this.matchPoint(n) ? 1 : 0)) : null;
      this.tableMatch.set(table, m);
    }
    return m;
  }

  private inRange(value: Envelope['value']): boolean {
    const { min, max } = this.spec;
    if (min === undefined && max === undefined) return true;
    if (typeof value !== 'number') return false;
    return (min === undefined || value >= min) && (max === undefined || value <= max);
  }
}
