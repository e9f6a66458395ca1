import { errorMessage, type Clock, type Counter, type Envelope, type Metrics, type ReadingBatch, type RuleEngine, type RuleOutput, type RuleStateRow, type SequenceSource } from '../runtime/contracts/index.js';
import type { AggregateRegistry } from './aggregates.js';
import { FilterRule } from './filter.js';
import { WindowRule } from './window.js';
import type { RuleSpec } from './types.js';

/** `emit` that passes each output on once per route, target and reading id, for one reading. */
function onceEach(emit: (out: RuleOutput) => void): (out: RuleOutput) => void {
  let emitted: Set<string> | undefined;
  return (out) => {
    emitted ??= new Set();
    const target = out.route === 'cloud' ? out.stream : out.route === 'mqtt' ? out.topic : out.route === 'call' ? `${out.device}\u0000${out.method}` : `${out.device}\u0000${out.point}`;
    const key = `${out.route}\u0000${target}\u0000${out.envelope?.id ?? ''}`;
    if (emitted.has(key)) return;
    emitted.add(key);
    emit(out);
  };
}

/**
 * Runs every rule over every reading. A reading that several filters pass is emitted once per
 * route and stream, so the cloud never receives the same reading twice from one gateway run.
 * A rule that throws (a bug, or saved state it cannot read) is counted and skipped for that
 * reading or row: it runs inside the store's transaction, where an exception would refuse the
 * readings of every device in the commit.
 */
export class Rules implements RuleEngine {
  private readonly filters: FilterRule[] = [];
  private readonly windows: WindowRule[] = [];
  private readonly failures: Counter | undefined;

  constructor(
    specs: readonly RuleSpec[],
    private readonly clock: Clock,
    sequence: SequenceSource,
    metrics?: Metrics,
    /** The aggregates window rules may use: the built-in ones unless given another registry. */
    options: { readonly aggregates?: AggregateRegistry | undefined } = {},
  ) {
    const failures = metrics?.counter('outpost_rule_errors_total', 'Readings a rule dropped: expression failures, late readings, internal errors', ['rule', 'stage']);
    this.failures = failures;
    for (const spec of specs) {
      if (spec.type === 'filter') this.filters.push(new FilterRule(spec, sequence, failures));
      else this.windows.push(new WindowRule(spec, sequence, failures, options.aggregates));
    }
  }

  process(reading: Envelope, emit: (out: RuleOutput) => void): void {
    this.processAt(reading, this.clock.now(), emit, true);
  }

  /** One reading through the filters (outputs deduplicated per target) and, if `windows`, the windows. */
  private processAt(reading: Envelope, now: number, emit: (out: RuleOutput) => void, windows: boolean, only?: (f: FilterRule) => boolean): void {
    // Several filters may pass the same reading to the same target; one filter emits each output
    // once, so the set and the key string per output (on every reading, the hot path) are skipped.
    const once = this.filters.length > 1 ? onceEach(emit) : emit;
    for (const f of this.filters) {
      if (only && !only(f)) continue;
      try {
        f.process(reading, now, once);
      } catch (err) {
        this.failed(f, err);
      }
    }
    if (!windows) return;
    for (const w of this.windows) {
      try {
        w.process(reading, now, emit);
      } catch (err) {
        this.failed(w, err);
      }
    }
  }

  private failed(rule: FilterRule | WindowRule, err: unknown): void {
    rule.errors++;
    rule.lastError = `internal: ${errorMessage(err)}`;
    this.failures?.inc({ rule: rule.spec.id, stage: 'internal' });
  }

  processBatch(batch: ReadingBatch, emit: (out: RuleOutput) => void): void {
    // Per route and stream, the positions some filter passes: each emitted once, in batch order.
    const now = this.clock.now();
    const outputs = new Map<string, { route: 'cloud'; stream: string; marks: Uint8Array }>();
    let transforming = false;
    for (const f of this.filters) {
      if (!f.selects) {
        transforming = true;
        continue;
      }
      const key = f.spec.stream;
      let o = outputs.get(key);
      if (!o) outputs.set(key, (o = { route: 'cloud', stream: f.spec.stream, marks: new Uint8Array(batch.length) }));
      try {
        f.mark(batch, o.marks, now);
      } catch (err) {
        this.failed(f, err);
      }
    }
    for (const { route, stream, marks } of outputs.values()) {
      let n = 0;
      for (let k = 0; k < marks.length; k++) n += marks[k]!;
      if (n === 0) continue;
      if (n === batch.length) {
        emit({ route, stream, batch });
        continue;
      }
      const ks: number[] = [];
      for (let k = 0; k < marks.length; k++) if (marks[k] === 1) ks.push(k);
      emit({ route, stream, batch: batch.select(ks) });
    }
    if (this.windows.length === 0 && !transforming) return;
    // Rules that make new readings, and windows, take the batch's readings one by one.
    const others = (f: FilterRule): boolean => !f.selects;
    for (let k = 0; k < batch.length; k++) this.processAt(batch.at(k), now, emit, true, transforming ? others : () => false);
  }

  tick(now: number, emit: (out: RuleOutput) => void): void {
    for (const w of this.windows) {
      try {
        w.tick(now, emit);
      } catch (err) {
        this.failed(w, err);
      }
    }
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
    return [...this.filters.flatMap((f) => f.takeDirty()), ...this.windows.flatMap((w) => w.takeDirty())];
  }

  restore(rows: readonly RuleStateRow[]): void {
    for (const row of rows) {
      const rule = [...this.filters, ...this.windows].find((r) => r.owns(row.key));
      try {
        rule?.restore(row);
      } catch (err) {
        // Unreadable saved state: the rule starts that group afresh rather than the gateway not starting.
        if (rule) this.failed(rule, err);
      }
    }
  }

  /** Closes every open window now (for `outpost rules test` at the end of its input). */
  closeAll(emit: (out: RuleOutput) => void): void {
    for (const w of this.windows) w.closeAll(emit);
  }

  reset(rows: readonly RuleStateRow[]): void {
    for (const r of [...this.filters, ...this.windows]) r.clear();
    this.restore(rows);
  }

  /** Per rule: its type, readings it passed (filters) or emitted (windows), errors and the last one. */
  stats(): { rule: string; type: 'filter' | 'window'; passed: number; errors: number; lastError?: string }[] {
    const row = (type: 'filter' | 'window', r: FilterRule | WindowRule): { rule: string; type: 'filter' | 'window'; passed: number; errors: number; lastError?: string } => ({
      rule: r.spec.id,
      type,
      passed: r.passed,
      errors: r.errors,
      ...(r.lastError !== undefined ? { lastError: r.lastError } : {}),
    });
    return [...this.filters.map((f) => row('filter', f)), ...this.windows.map((w) => row('window', w))];
  }

  /** Per rule: readings its expressions failed on, and the last failure. */
  errors(): { rule: string; errors: number; lastError: string | undefined }[] {
    return [...this.filters, ...this.windows].map((f) => ({ rule: f.spec.id, errors: f.errors, lastError: f.lastError }));
  }
}
