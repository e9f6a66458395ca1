import { makeEnvelope, type Envelope, type RuleOutput, type RuleStateRow, type SequenceSource } from '../runtime/contracts/index.js';
import { compileGlob } from './glob.js';
import type { WindowRuleSpec } from './types.js';

interface Accumulator {
  device: string;
  point: string;
  start: number;
  count: number;
  sum: number;
  min: number;
  max: number;
  /** Readings that were not good or not numeric: the window reports them instead of hiding them. */
  skipped: number;
}

/**
 * Tumbling windows on processing time, aligned to multiples of `windowMs` since the epoch, one per
 * (device, point). A window closes at its end and emits one reading per aggregate with an id
 * derived from (rule, device, point, aggregate, window start), so a window re-emitted after a crash
 * deduplicates in the cloud.
 */
export class TumblingWindowRule {
  private readonly matchDevice: (name: string) => boolean;
  private readonly matchPoint: (name: string) => boolean;
  private readonly open = new Map<string, Accumulator>();
  private readonly dirty = new Set<string>();

  constructor(
    readonly spec: WindowRuleSpec,
    private readonly sequence: SequenceSource,
  ) {
    this.matchDevice = compileGlob(spec.match.device);
    this.matchPoint = compileGlob(spec.match.point);
  }

  private stateKey(device: string, point: string): string {
    return `${this.spec.id}\u0000${device}\u0000${point}`;
  }

  process(r: Envelope, now: number, emit: (out: RuleOutput) => void): void {
    if (!this.matchDevice(r.device) || !this.matchPoint(r.point)) return;
    const key = this.stateKey(r.device, r.point);
    const start = now - (now % this.spec.windowMs);
    let acc = this.open.get(key);
    if (acc && acc.start !== start) {
      // The previous window of this key is over but its tick has not run yet: close it first.
      this.close(key, acc, emit);
      acc = undefined;
    }
    if (!acc) {
      acc = { device: r.device, point: r.point, start, count: 0, sum: 0, min: Infinity, max: -Infinity, skipped: 0 };
      this.open.set(key, acc);
    }
    if (r.quality === 'good' && typeof r.value === 'number') {
      acc.count++;
      acc.sum += r.value;
      if (r.value < acc.min) acc.min = r.value;
      if (r.value > acc.max) acc.max = r.value;
    } else {
      acc.skipped++;
    }
    this.dirty.add(key);
  }

  tick(now: number, emit: (out: RuleOutput) => void): void {
    for (const [key, acc] of this.open) {
      if (acc.start + this.spec.windowMs <= now) this.close(key, acc, emit);
    }
  }

  nextDeadline(): number | undefined {
    let next: number | undefined;
    for (const acc of this.open.values()) {
      const end = acc.start + this.spec.windowMs;
      if (next === undefined || end < next) next = end;
    }
    return next;
  }

  takeDirty(): RuleStateRow[] {
    const rows: RuleStateRow[] = [];
    for (const key of this.dirty) {
      const acc = this.open.get(key);
      rows.push({ key, state: acc ? JSON.stringify(acc) : null });
    }
    this.dirty.clear();
    return rows;
  }

  owns(key: string): boolean {
    return key.startsWith(`${this.spec.id}\u0000`);
  }

  restore(row: RuleStateRow): void {
    if (row.state === null) return;
    const acc = JSON.parse(row.state) as Accumulator;
    // JSON has no Infinity; an empty window stored min/max as null.
    acc.min = typeof acc.min === 'number' ? acc.min : Infinity;
    acc.max = typeof acc.max === 'number' ? acc.max : -Infinity;
    this.open.set(row.key, acc);
  }

  private close(key: string, acc: Accumulator, emit: (out: RuleOutput) => void): void {
    this.open.delete(key);
    this.dirty.add(key);
    const end = acc.start + this.spec.windowMs;
    for (const fn of this.spec.aggregates) {
      const value = this.aggregate(fn, acc);
      const { seq } = this.sequence.next();
      emit({
        route: this.spec.route,
        stream: this.spec.stream,
        envelope: makeEnvelope({
          id: `${this.spec.id}:${acc.device}:${acc.point}:${fn}:${acc.start}`,
          device: acc.device,
          point: `${acc.point}.${fn}`,
          value,
          quality: value === null ? 'bad' : 'good',
          ts: end,
          seq,
          rule: this.spec.id,
        }),
      });
    }
  }

  private aggregate(fn: WindowRuleSpec['aggregates'][number], acc: Accumulator): number | null {
    if (fn === 'count') return acc.count;
    if (acc.count === 0) return null;
    if (fn === 'avg') return acc.sum / acc.count;
    return fn === 'min' ? acc.min : acc.max;
  }
}
