import { errorMessage, makeEnvelope, type Counter, type Envelope, type PointTable, type ReadingBatch, type RuleOutput, type RuleStateRow, type SequenceSource, type Value } from '../runtime/contracts/index.js';
import { boolize, compileExpression, type Compiled, type Scope } from './expression.js';
import { compileMatch } from './match.js';
import { compileGlob } from '../runtime/contracts/index.js';
import type { FilterRuleSpec, GroupKey } from './types.js';

/** The fields a rule expression may read. */
export const READING_FIELDS = ['value', 'device', 'point', 'quality', 'ts', 'unit'] as const;

/** Memory of the stateful operators for one group. */
interface GroupState {
  /** Value of the last reading passed (deadband, change of value). */
  last?: Value;
  /** Rate limit: start of the current window and readings passed in it. */
  windowStart?: number;
  passed?: number;
}

/**
 * A filter rule: match by device, point or topic pattern; `where` (a JSONata expression) or the
 * legacy min/max bounds; `set` transforms; then deadband, change of value and rate limit per
 * group, in that order. Readings whose quality is not good pass untouched by default, so the cloud
 * sees that a sensor failed rather than a silent gap (`bad: drop` or `bad: filter` change that).
 * An expression that fails on a reading (e.g. `value > 5` with a text value) drops that reading
 * and is counted; it never stops the rule.
 */
export class FilterRule {
  /** Operator groups (deadband, change of value, rate limit memory) one rule keeps at most; the least recently used goes first. */
  static maxGroups = 100_000;
  private readonly match: ReturnType<typeof compileMatch>;
  /** Devices whose readings may drive this rule's write (route write). */
  private readonly trusted: (device: string) => boolean;
  private readonly where: Compiled | undefined;
  private readonly setValue: Compiled | undefined;
  private readonly setPoint: Compiled | undefined;
  private readonly setUnit: Compiled | undefined;
  private readonly alertMessage: Compiled | undefined;
  private readonly clearWhere: Compiled | undefined;
  private readonly stateful: boolean;
  private readonly groupBy: readonly GroupKey[];
  private readonly groups = new Map<string, GroupState>();
  private readonly dirty = new Set<string>();
  /** Per device point table: which of its points the patterns match (tables are static). */
  private readonly tableMatch = new WeakMap<PointTable, Uint8Array | null>();
  /** Reused for batch readings, so a `where` over a batch allocates nothing per reading. */
  private readonly scope: Record<string, unknown> = {};
  /** Readings that passed (the status page shows the rate). */
  passed = 0;
  errors = 0;
  lastError: string | undefined;

  constructor(
    readonly spec: FilterRuleSpec,
    private readonly sequence?: SequenceSource,
    private readonly failures?: Counter,
  ) {
    this.match = compileMatch(spec.match);
    const sources = (spec.write?.sources ?? spec.call?.sources ?? []).map((p) => compileGlob(p));
    this.trusted = (device) => sources.some((m) => m(device));
    this.where = spec.where === undefined ? undefined : compileExpression(spec.where, READING_FIELDS);
    this.setValue = spec.set?.value === undefined ? undefined : compileExpression(spec.set.value, READING_FIELDS);
    this.setPoint = spec.set?.point === undefined ? undefined : compileExpression(spec.set.point, READING_FIELDS);
    this.setUnit = spec.set?.unit === undefined ? undefined : compileExpression(spec.set.unit, READING_FIELDS);
    this.alertMessage = spec.alert?.message === undefined ? undefined : compileExpression(spec.alert.message, READING_FIELDS);
    this.clearWhere = spec.alert?.clearWhere === undefined ? undefined : compileExpression(spec.alert.clearWhere, READING_FIELDS);
    this.stateful = spec.deadband !== undefined || spec.changeOfValue === true || spec.rateLimit !== undefined;
    this.groupBy = spec.groupBy ?? ['device', 'point'];
  }

  /** True when the rule passes readings unchanged: it can emit a selection of a batch. */
  get selects(): boolean {
    return this.spec.set === undefined && this.spec.route === 'cloud';
  }

  private matches(device: string, point: string): boolean {
    return this.match.reading(device, point);
  }

  process(r: Envelope, now: number, emit: (out: RuleOutput) => void): void {
    if (!this.matches(r.device, r.point)) return;
    if (this.spec.route === 'alert' && (this.spec.alert?.mode ?? 'transition') === 'transition') {
      this.alertTransition(r, now, emit);
      return;
    }
    if (!this.passes(r as unknown as Scope, r.quality, r.value, now)) return;
    this.passed++;
    const out = this.spec.set && (r.quality === 'good' || this.spec.bad === 'filter') ? this.transform(r) : r;
    if (out) this.route(out, emit);
  }

  private route(e: Envelope, emit: (out: RuleOutput) => void): void {
    const { route, stream, mqtt, write, call } = this.spec;
    if (route === 'cloud') emit({ route, stream, envelope: e });
    else if (route === 'mqtt' && mqtt) emit({ route, topic: fillTopic(mqtt.topic, e), qos: mqtt.qos, retain: mqtt.retain, envelope: e });
    else if (route === 'write' && write) {
      // A bad or stale reading is no value to write; a reading from a device the rule does not
      // trust never becomes actuation (counted as a failure of stage "untrusted-source").
      if (e.quality !== 'good') return;
      if (!this.trusted(e.device)) {
        this.failed('untrusted-source', new Error(`reading from "${e.device}", not one of write.sources`));
        return;
      }
      emit({ route, device: write.device, point: write.point, minIntervalMs: write.minIntervalMs, envelope: e });
    } else if (route === 'call' && call) {
      // The same trust as a write: a call drives a device.
      if (e.quality !== 'good') return;
      if (!this.trusted(e.device)) {
        this.failed('untrusted-source', new Error(`reading from "${e.device}", not one of call.sources`));
        return;
      }
      emit({ route, rule: this.spec.id, device: call.device, method: call.method, timeoutMs: call.timeoutMs, envelope: e });
    } else if (route === 'alert') {
      const a = this.alertOf(e);
      if (a) emit({ route: 'cloud', stream, envelope: a });
    }
  }

  /** Per device point: whether its alert is raised, and since when its condition holds (holdMs). */
  private readonly alerts = new Map<string, { active: boolean; pendingSince?: number | undefined }>();

  /**
   * An alarm as industrial alarms behave (ISA-18.2 style): raised once when the condition starts to
   * hold (after `holdMs`, when given), cleared once when it stops (or when `clearWhere` holds: a
   * hysteresis band), whatever the number of readings in between. Bad or stale readings neither
   * raise nor clear. The state is kept in memory: after a restart a condition that still holds
   * raises its alert once more.
   */
  private alertTransition(r: Envelope, now: number, emit: (out: RuleOutput) => void): void {
    if (r.quality !== 'good') return;
    const scope = r as unknown as Scope;
    let holds: boolean;
    try {
      holds = this.inRange(r.value) && (!this.where || boolize(this.where(scope)));
    } catch (err) {
      this.failed('where', err);
      return;
    }
    const key = `${r.device}\u0000${r.point}`;
    let st = this.alerts.get(key);
    if (!st) {
      if (this.alerts.size >= FilterRule.maxGroups) this.alerts.delete(this.alerts.keys().next().value!);
      st = { active: false };
      this.alerts.set(key, st);
    }
    const stream = this.spec.stream;
    if (!st.active) {
      if (!holds) {
        st.pendingSince = undefined;
        return;
      }
      st.pendingSince ??= now;
      if (now - st.pendingSince < (this.spec.alert?.holdMs ?? 0)) return;
      st.active = true;
      st.pendingSince = undefined;
      const a = this.alertOf(r);
      if (a) emit({ route: 'cloud', stream, envelope: a });
      return;
    }
    let clears: boolean;
    try {
      clears = this.clearWhere ? boolize(this.clearWhere(scope)) : !holds;
    } catch (err) {
      this.failed('clearWhere', err);
      return;
    }
    if (!clears) return;
    st.active = false;
    const c = this.alertOf(r, 'cleared');
    if (c) emit({ route: 'cloud', stream, envelope: c });
  }

  /** The alert reading for `e`: value "severity: message" (or "cleared: message"), point "{point}.alert". */
  private alertOf(e: Envelope, state?: 'cleared'): Envelope | undefined {
    const severity = state ?? this.spec.alert?.severity ?? 'warning';
    let message: string;
    try {
      message = this.alertMessage ? asText('message', this.alertMessage(e as unknown as Scope)) : `${e.point} = ${JSON.stringify(e.value)}${e.unit ? ` ${e.unit}` : ''} (${e.quality})`;
    } catch (err) {
      this.failed('alert', err);
      return undefined;
    }
    const seq = this.sequence ? this.sequence.next().seq : e.seq;
    return makeEnvelope({ id: `${e.id}/${this.spec.id}${state ? `/${state}` : ''}`, device: e.device, point: `${e.point}.alert`, value: `${severity}: ${message}`, quality: 'good', ts: e.ts, seq, rule: this.spec.id });
  }

  /** Marks (sets to 1) the positions of `batch` this rule passes. Only for rules that `select`. */
  mark(batch: ReadingBatch, marks: Uint8Array, now: number): void {
    const points = this.pointsOf(batch.table);
    if (!points) return;
    const scope = this.scope;
    for (let k = 0; k < batch.length; k++) {
      if (points[batch.pointIndex(k)] !== 1) continue;
      const quality = batch.quality(k);
      const value = batch.value(k);
      if (this.where || this.stateful) {
        scope.value = value;
        scope.device = batch.device;
        scope.point = batch.point(k);
        scope.quality = quality;
        scope.ts = batch.ts(k);
        scope.unit = batch.table.units[batch.pointIndex(k)];
      }
      // Evaluated even when another rule marked it already: stateful operators see every reading.
      if (this.passes(scope, quality, value, now)) {
        marks[k] = 1;
        this.passed++;
      }
    }
  }

  /** Whether the reading passes `bad`, bounds, `where` and the stateful operators (whose state it updates). */
  private passes(scope: Scope, quality: string, value: Value, now: number): boolean {
    if (quality !== 'good') {
      if (this.spec.bad === 'drop') return false;
      if (this.spec.bad !== 'filter') return true;
    }
    if (quality === 'good' && !this.inRange(value)) return false;
    if (this.where) {
      try {
        if (!boolize(this.where(scope))) return false;
      } catch (err) {
        this.failed('where', err);
        return false;
      }
    }
    return quality !== 'good' || !this.stateful || this.operatorsPass(scope, value, now);
  }

  private operatorsPass(scope: Scope, value: Value, now: number): boolean {
    const key = this.groupKey(scope);
    let g = this.groups.get(key);
    const fresh = g === undefined;
    g ??= {};
    const { deadband, changeOfValue, rateLimit } = this.spec;
    if (!fresh && g.last !== undefined) {
      if (deadband && !movedBeyond(deadband, g.last, value)) return false;
      if (changeOfValue && g.last === value) return false;
    }
    if (rateLimit) {
      if (g.windowStart === undefined || now - g.windowStart >= rateLimit.perMs) {
        g.windowStart = now;
        g.passed = 0;
      }
      if ((g.passed ?? 0) >= rateLimit.count) {
        this.save(key, g);
        return false;
      }
      g.passed = (g.passed ?? 0) + 1;
    }
    if (deadband || changeOfValue) g.last = value;
    this.save(key, g);
    return true;
  }

  private save(key: string, g: GroupState): void {
    // Re-inserted, so the map's order is least recently used first.
    this.groups.delete(key);
    this.groups.set(key, g);
    this.dirty.add(key);
    if (this.groups.size > FilterRule.maxGroups) {
      const oldest = this.groups.keys().next().value!;
      this.groups.delete(oldest);
      this.dirty.add(oldest);
      this.failures?.inc({ rule: this.spec.id, stage: 'evicted' });
    }
  }

  private groupKey(scope: Scope): string {
    let key = this.spec.id;
    for (const k of this.groupBy) {
      const v = scope[k];
      key += `\u0000${typeof v === 'string' ? v : ''}`;
    }
    return key;
  }

  /** The transformed reading, or undefined when a `set` expression failed (counted). */
  private transform(r: Envelope): Envelope | undefined {
    const scope = r as unknown as Scope;
    try {
      const value = this.setValue ? asValue('value', this.setValue(scope)) : r.value;
      const point = this.setPoint ? asText('point', this.setPoint(scope)) : r.point;
      const unit = this.setUnit ? asText('unit', this.setUnit(scope)) : r.unit;
      const seq = this.sequence ? this.sequence.next().seq : r.seq;
      return makeEnvelope({ id: `${r.id}/${this.spec.id}`, device: r.device, point, value, quality: r.quality, ts: r.ts, seq, rule: this.spec.id, unit });
    } catch (err) {
      this.failed('set', err);
      return undefined;
    }
  }

  private failed(what: string, err: unknown): void {
    this.errors++;
    this.failures?.inc({ rule: this.spec.id, stage: what });
    this.lastError = `${what}: ${errorMessage(err)}`;
  }

  /** The table's points this rule matches; null when the device does not match. */
  private pointsOf(table: PointTable): Uint8Array | null {
    let m = this.tableMatch.get(table);
    if (m === undefined) {
      m = this.match.device(table.device) ? Uint8Array.from(table.names, (n) => (this.matches(table.device, n) ? 1 : 0)) : null;
      this.tableMatch.set(table, m);
    }
    return m;
  }

  private inRange(value: Value): boolean {
    const { min, max } = this.spec;
    if (min === undefined && max === undefined) return true;
    if (typeof value !== 'number') return false;
    return (min === undefined || value >= min) && (max === undefined || value <= max);
  }

  takeDirty(): RuleStateRow[] {
    const rows = [...this.dirty].map((key) => {
      const g = this.groups.get(key);
      return { key, state: g ? JSON.stringify(g) : null };
    });
    this.dirty.clear();
    return rows;
  }

  clear(): void {
    this.groups.clear();
    this.dirty.clear();
  }

  owns(key: string): boolean {
    return key.startsWith(`${this.spec.id}\u0000`);
  }

  restore(row: RuleStateRow): void {
    if (row.state === null) return;
    const g = JSON.parse(row.state) as GroupState | null;
    if (g !== null && typeof g !== 'object') throw new Error(`unreadable saved state for ${row.key}`);
    if (g) this.groups.set(row.key, g);
  }
}

/** `{device}` and `{point}` in a topic template, filled in with names that cannot break the topic. */
function fillTopic(template: string, e: Envelope): string {
  const safe = (s: string): string => s.replace(/[/#+]/g, '_');
  return template.replaceAll('{device}', safe(e.device)).replaceAll('{point}', safe(e.point));
}

function movedBeyond(d: NonNullable<FilterRuleSpec['deadband']>, last: Value, value: Value): boolean {
  if (typeof value !== 'number' || typeof last !== 'number') return value !== last;
  const delta = Math.abs(value - last);
  if (d.absolute !== undefined && delta > d.absolute) return true;
  if (d.percent !== undefined && delta > (Math.abs(last) * d.percent) / 100) return true;
  return false;
}

function asValue(what: string, v: unknown): Value {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return v;
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  throw new Error(`${what} must give a finite number, text, true/false or null, not ${v === undefined ? 'nothing' : JSON.stringify(v)}`);
}

function asText(what: string, v: unknown): string {
  if (typeof v === 'string' && v.length > 0) return v;
  throw new Error(`${what} must give non-empty text, not ${v === undefined ? 'nothing' : JSON.stringify(v)}`);
}
