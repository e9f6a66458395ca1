import type { Clock, Envelope, RuleEngine, RuleOutput, RuleStateRow, SequenceSource } from '../runtime/contracts/index.js';
import { FilterRule } from './filter.js';
import { TumblingWindowRule } from './tumbling-window.js';
import type { RuleSpec } from './types.js';

/**
 * Runs every rule over every reading. A reading that several filters pass is emitted once per
 * route and stream, so the cloud never receives the same reading twice from one gateway run.
 */
export class Rules implements RuleEngine {
  private readonly filters: FilterRule[] = [];
  private readonly windows: TumblingWindowRule[] = [];

  constructor(
    specs: readonly RuleSpec[],
    private readonly clock: Clock,
    sequence: SequenceSource,
  ) {
    for (const spec of specs) {
      if (spec.type === 'filter') this.filters.push(new FilterRule(spec));
      else this.windows.push(new TumblingWindowRule(spec, sequence));
    }
  }

  process(reading: Envelope, emit: (out: RuleOutput) => void): void {
    let emitted: Set<string> | undefined;
    const once = (out: RuleOutput): void => {
      emitted ??= new Set();
      const key = `${out.route}\u0000${out.stream}`;
      if (emitted.has(key)) return;
      emitted.add(key);
      emit(out);
    };
    for (const f of this.filters) f.process(reading, once);
    if (this.windows.length === 0) return;
    const now = this.clock.now();
    for (const w of this.windows) w.process(reading, now, emit);
  }

  tick(now: number, emit: (out: RuleOutput) => void): void {
    for (const w of this.windows) w.tick(now, emit);
  }

  nextDeadline(): number | undefined {
    let next: number | undefined;
    for (const w of this.windows) {
      const d = w.nextDeadline();
      if (d !== undefined && (next === undefined || d < next)) next = d;
    }
    return next;
  }

  takeDirtyState(): RuleStateRow[] {
    return this.windows.flatMap((w) => w.takeDirty());
  }

  restore(rows: readonly RuleStateRow[]): void {
    for (const row of rows) this.windows.find((w) => w.owns(row.key))?.restore(row);
  }
}
