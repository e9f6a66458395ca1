import type { Envelope, RuleOutput } from '../runtime/contracts/index.js';
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

  constructor(readonly spec: FilterRuleSpec) {
    this.matchDevice = compileGlob(spec.match.device);
    this.matchPoint = compileGlob(spec.match.point);
  }

  process(r: Envelope, emit: (out: RuleOutput) => void): void {
    if (!this.matchDevice(r.device) || !this.matchPoint(r.point)) return;
    if (r.quality === 'good' && !this.inRange(r.value)) return;
    emit({ route: this.spec.route, stream: this.spec.stream, envelope: r });
  }

  private inRange(value: Envelope['value']): boolean {
    const { min, max } = this.spec;
    if (min === undefined && max === undefined) return true;
    if (typeof value !== 'number') return false;
    return (min === undefined || value >= min) && (max === undefined || value <= max);
  }
}
