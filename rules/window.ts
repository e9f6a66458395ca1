import { errorMessage, makeEnvelope, type Counter, type Envelope, type RuleOutput, type RuleStateRow, type SequenceSource, type Value } from '../runtime/contracts/index.js';
import type { Acc } from './accumulator.js';
import { BUILT_IN_AGGREGATES, resolveAggregates, type Aggregate, type AggregateRegistry } from './aggregates.js';
import { boolize, compileExpression, type Compiled, type Scope } from './expression.js';
import { READING_FIELDS } from './filter.js';
import { compileMatch } from './match.js';
import type { WindowRuleSpec } from './types.js';
import { WindowGroups, type Group } from './window-groups.js';
import { WINDOW_KINDS, type WindowAssigner, type WindowHost } from './window-kinds.js';

export { MAX_WINDOW_VALUES } from './accumulator.js';

/** Event time: a reading stamped further ahead of the gateway's clock is refused (a broken device clock). */
export const MAX_FUTURE_MS = 5 * 60_000;

/** `%` and `:` escaped, so the parts of an output id cannot run into each other. */
const idPart = (s: string): string => (/[%:]/.test(s) ? s.replace(/%/g, '%25').replace(/:/g, '%3A') : s);

/** Handed to aggregates when the window kept no values. */
const NO_VALUES: readonly number[] = Object.freeze([]);

/**
 * Windowed aggregates per group (device and point by default): tumbling, hopping (windowMs long,
 * one starting every hopMs), sliding (the last windowMs, emitted on every reading), session
 * (closed after gapMs without a reading) and count windows. On processing time a reading belongs
 * to the windows of the gateway's clock when it arrives; on event time to those of its own `ts`,
 * and a window closes once a later reading of its group is allowedLatenessMs past its end, or
 * when its group has been silent for windowMs + allowedLatenessMs; a reading for a window already
 * closed is late: counted and dropped. Open windows are saved with every commit, so a restart
 * neither loses nor double-counts one, and a window's output ids are derived from the rule, group,
 * aggregate and window, so a window re-emitted after a crash deduplicates in the cloud.
 *
 * The aggregates come from a registry (the built-in ones unless given another); the window keeps
 * its values only when one of the rule's aggregates needs them.
 */
export class WindowRule {
  /**
   * Groups one rule keeps at most. Device and point names can come from any MQTT client; past
   * this, the oldest group's windows are closed early (emitted) and it is forgotten (counted
   * with stage `evicted`).
   */
  static maxGroups = 100_000;
  private readonly match: ReturnType<typeof compileMatch>;
  private readonly where: Compiled | undefined;
  private readonly groups: WindowGroups;
  private readonly windows: WindowAssigner;
  private readonly aggregates: readonly Aggregate[];
  /** One of the aggregates needs the window's values: they are kept, and sorted when it closes. */
  private readonly keepValues: boolean;
  private readonly event: boolean;
  /** Readings emitted (one per aggregate per closed window). */
  passed = 0;
  errors = 0;
  late = 0;
  lastError: string | undefined;

  constructor(
    readonly spec: WindowRuleSpec,
    private readonly sequence: SequenceSource,
    private readonly failures?: Counter,
    aggregates: AggregateRegistry = BUILT_IN_AGGREGATES,
  ) {
    this.match = compileMatch(spec.match);
    this.where = spec.where === undefined ? undefined : compileExpression(spec.where, READING_FIELDS);
    this.aggregates = resolveAggregates(spec.aggregates, aggregates);
    this.keepValues = this.aggregates.some((a) => a.needsValues);
    this.event = spec.time === 'event';
    const size = spec.kind === 'session' ? (spec.gapMs ?? 1) : (spec.windowMs ?? 0);
    const settings = { size, event: this.event, lateness: spec.allowedLatenessMs ?? 0, keepValues: this.keepValues };
    const host: WindowHost = {
      close: (g, acc, emit) => this.close(g, acc, emit),
      emitWindow: (g, acc, ts, emit) => this.emitWindow(g, acc, ts, emit),
      late: () => {
        this.late++;
        this.failures?.inc({ rule: this.spec.id, stage: 'late' });
      },
    };
    this.windows = WINDOW_KINDS[spec.kind ?? 'tumbling'](spec, settings, host);
    this.groups = new WindowGroups({
      ruleId: spec.id,
      groupBy: spec.groupBy ?? ['device', 'point'],
      size,
      maxGroups: () => WindowRule.maxGroups,
      evicting: (g, emit) => {
        while (g.open.length > 0) this.close(g, g.open[0]!, emit);
        this.failures?.inc({ rule: this.spec.id, stage: 'evicted' });
      },
    });
  }

  /** Windows open across all groups (for a status line). */
  openWindows(): number {
    let n = 0;
    for (const g of this.groups.values()) n += g.open.length;
    return n;
  }

  process(r: Envelope, now: number, emit: (out: RuleOutput) => void): void {
    if (!this.match.reading(r.device, r.point)) return;
    if (this.where) {
      try {
        if (!boolize(this.where(r as unknown as Scope))) return;
      } catch (err) {
        this.errors++;
        this.lastError = `where: ${errorMessage(err)}`;
        this.failures?.inc({ rule: this.spec.id, stage: 'where' });
        return;
      }
    }
    if (this.event && r.ts > now + MAX_FUTURE_MS) {
      // One reading from a clock years ahead would otherwise close every window of its group up to then.
      this.late++;
      this.failures?.inc({ rule: this.spec.id, stage: 'future' });
      return;
    }
    const g = this.groups.of(r, emit);
    this.groups.changed(g.key!);
    const value = r.quality === 'good' && typeof r.value === 'number' ? r.value : undefined;
    this.windows.take(g, r, this.event ? r.ts : now, value, now, emit);
  }

  private close(g: Group, acc: Acc, emit: (out: RuleOutput) => void): void {
    g.open = g.open.filter((a) => a !== acc);
    if (this.windows.sealsTime) g.closedUntil = Math.max(g.closedUntil, acc.end);
    this.emitWindow(g, acc, acc.end, emit);
  }

  private emitWindow(g: Group, acc: Acc, ts: number, emit: (out: RuleOutput) => void): void {
    // Sorted once for all the aggregates of the window. Values restored from a window saved when
    // the rule had other aggregates are not sorted for aggregates that do not need them.
    const values = this.keepValues ? acc.values : undefined;
    const sorted = values === undefined || values.length === 0 ? NO_VALUES : [...values].sort((a, b) => a - b);
    for (const a of this.aggregates) {
      this.passed++;
      const value: Value = rounded(a.compute(acc, sorted), this.spec.precision ?? 6);
      const { seq } = this.sequence.next();
      emit({
        route: this.spec.route,
        stream: this.spec.stream,
        envelope: makeEnvelope({
          id: `${this.spec.id}:${idPart(g.device)}:${idPart(g.point)}:${g.unit === undefined ? '' : `${idPart(g.unit)}:`}${a.name}:${acc.key}`,
          device: g.device,
          point: `${g.point}.${a.name}`,
          value,
          quality: value === null ? 'bad' : 'good',
          ts,
          seq,
          rule: this.spec.id,
          unit: a.unitless ? undefined : acc.unit,
        }),
      });
    }
  }

  tick(now: number, emit: (out: RuleOutput) => void): void {
    for (const [key, g] of this.groups.entries()) {
      const before = g.open.length;
      this.windows.tick(g, now, emit);
      if (g.open.length !== before) this.groups.changed(key);
    }
  }

  nextDeadline(): number | undefined {
    let next: number | undefined;
    for (const g of this.groups.values()) {
      for (const acc of g.open) {
        const d = this.windows.deadline(acc);
        if (d !== undefined && (next === undefined || d < next)) next = d;
      }
    }
    return next;
  }

  takeDirty(): RuleStateRow[] {
    return this.groups.takeDirty();
  }

  /** Closes every open window now (count windows too), oldest end first: the end of a replay. */
  closeAll(emit: (out: RuleOutput) => void): void {
    const open = [...this.groups.values()].flatMap((g) => g.open.map((acc) => ({ g, acc }))).sort((a, b) => a.acc.end - b.acc.end);
    for (const { g, acc } of open) {
      this.close(g, acc, emit);
      if (g.key) this.groups.changed(g.key);
    }
  }

  clear(): void {
    this.groups.clear();
  }

  owns(key: string): boolean {
    return key.startsWith(`${this.spec.id}\u0000`);
  }

  restore(row: RuleStateRow): void {
    this.groups.restore(row);
  }
}

/**
 * An aggregate rounded to `decimals` (sums and averages of decimal readings carry binary noise:
 * 1.8079999999999998). Integers and values too large for the decimals to matter are left as they are.
 */
function rounded(value: number | null, decimals: number): number | null {
  if (value === null || Number.isInteger(value) || Math.abs(value) >= 1e15) return value;
  return Number(value.toFixed(decimals));
}
