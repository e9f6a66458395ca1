import { makeEnvelope, type Counter, type Envelope, type RuleOutput, type RuleStateRow, type SequenceSource, type Value } from '../runtime/contracts/index.js';
import { boolize, compileExpression, type Compiled, type Scope } from './expression.js';
import { READING_FIELDS } from './filter.js';
import { compileMatch } from './match.js';
import type { AggregateFn, GroupKey, WindowRuleSpec } from './types.js';

/** Values kept per window for percentiles, and readings per sliding window, at most. */
export const MAX_WINDOW_VALUES = 50_000;
/** Event time: a reading stamped further ahead of the gateway's clock is refused (a broken device clock). */
export const MAX_FUTURE_MS = 5 * 60_000;

/** `%` and `:` escaped, so the parts of an output id cannot run into each other. */
const idPart = (s: string): string => (/[%:]/.test(s) ? s.replace(/%/g, '%25').replace(/:/g, '%3A') : s);

interface Acc {
  /** Window bounds on the rule's clock; for session and count windows, first and last reading. */
  start: number;
  end: number;
  /** Stable part of the output ids (a crash re-emits a window with the same ids). */
  key: string;
  n: number;
  sum: number;
  min: number | null;
  max: number | null;
  first: number | null;
  last: number | null;
  mean: number;
  m2: number;
  values?: number[];
  /** Readings that were not good or not numbers: counted, not aggregated. */
  skipped: number;
  unit?: string | undefined;
  /** Processing time of the last reading taken (event-time windows also close when idle this long). */
  touched: number;
}

interface Group {
  /** Its state key (rule id and group values): kept so a reading needs no string building. */
  key?: string;
  device: string;
  /** The unit, when the group is by unit: part of the output ids. */
  unit?: string | undefined;
  point: string;
  open: Acc[];
  /** Event time: windows ending at or before this are closed; later readings for them are late. */
  closedUntil: number;
  /** Sliding windows: the readings of the last windowMs, [time, value]. */
  buffer?: [number, number][];
}

const emptyAcc = (start: number, end: number, key: string, now: number, values: boolean): Acc => ({
  start,
  end,
  key,
  n: 0,
  sum: 0,
  min: null,
  max: null,
  first: null,
  last: null,
  mean: 0,
  m2: 0,
  ...(values ? { values: [] } : {}),
  skipped: 0,
  touched: now,
});

function add(acc: Acc, v: number): void {
  acc.n++;
  acc.sum += v;
  acc.min = acc.min === null || v < acc.min ? v : acc.min;
  acc.max = acc.max === null || v > acc.max ? v : acc.max;
  acc.first ??= v;
  acc.last = v;
  // Welford: a running variance without keeping the values.
  const d = v - acc.mean;
  acc.mean += d / acc.n;
  acc.m2 += d * (v - acc.mean);
  if (acc.values && acc.values.length < MAX_WINDOW_VALUES) acc.values.push(v);
}

/** Linear interpolation between the two nearest ranks (numpy's default). */
function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const x = p * (sorted.length - 1);
  const lo = Math.floor(x);
  const hi = Math.ceil(x);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (x - lo);
}

function aggregate(fn: AggregateFn, acc: Acc, sorted: () => number[]): number | null {
  switch (fn) {
    case 'count':
      return acc.n;
    case 'sum':
      return acc.sum;
    case 'avg':
      return acc.n === 0 ? null : acc.sum / acc.n;
    case 'min':
      return acc.min;
    case 'max':
      return acc.max;
    case 'first':
      return acc.first;
    case 'last':
      return acc.last;
    case 'stddev':
      return acc.n === 0 ? null : Math.sqrt(acc.m2 / acc.n);
    case 'p50':
      return percentile(sorted(), 0.5);
    case 'p95':
      return percentile(sorted(), 0.95);
    case 'p99':
      return percentile(sorted(), 0.99);
  }
}

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
  private readonly groups = new Map<string, Group>();
  /** Groups by device, then point, for the default groupBy: found without building a key. */
  private readonly byDevicePoint = new Map<string, Map<string, Group>>();
  private readonly dirty = new Set<string>();
  private readonly kind: NonNullable<WindowRuleSpec['kind']>;
  private readonly event: boolean;
  private readonly lateness: number;
  private readonly size: number;
  private readonly keepValues: boolean;
  private readonly groupBy: readonly GroupKey[];
  errors = 0;
  late = 0;
  lastError: string | undefined;

  constructor(
    readonly spec: WindowRuleSpec,
    private readonly sequence: SequenceSource,
    private readonly failures?: Counter,
  ) {
    this.match = compileMatch(spec.match);
    this.where = spec.where === undefined ? undefined : compileExpression(spec.where, READING_FIELDS);
    this.kind = spec.kind ?? 'tumbling';
    this.event = spec.time === 'event';
    this.lateness = spec.allowedLatenessMs ?? 0;
    this.size = spec.kind === 'session' ? (spec.gapMs ?? 1) : (spec.windowMs ?? 0);
    this.keepValues = spec.aggregates.some((a) => a.startsWith('p'));
    this.groupBy = spec.groupBy ?? ['device', 'point'];
  }

  process(r: Envelope, now: number, emit: (out: RuleOutput) => void): void {
    if (!this.match.reading(r.device, r.point)) return;
    if (this.where) {
      try {
        if (!boolize(this.where(r as unknown as Scope))) return;
      } catch (err) {
        this.errors++;
        this.lastError = `where: ${err instanceof Error ? err.message : String(err)}`;
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
    const t = this.event ? r.ts : now;
    const g = this.groupOf(r, emit);
    const key = g.key!;
    this.dirty.add(key);
    const value = r.quality === 'good' && typeof r.value === 'number' ? r.value : undefined;
    switch (this.kind) {
      case 'sliding':
        return this.slide(g, r, t, value, now, emit);
      case 'count':
        return this.countIn(g, r, t, value, now, emit);
      case 'session':
        return this.session(g, r, t, value, now, emit);
      default:
        return this.timed(g, key, r, t, value, now, emit);
    }
  }

  /** Tumbling and hopping windows. */
  private timed(g: Group, key: string, r: Envelope, t: number, value: number | undefined, now: number, emit: (out: RuleOutput) => void): void {
    if (!this.event && t < g.closedUntil - this.size) {
      // The gateway's clock stepped back (NTP on a device without a real-time clock): what is
      // open closes now, and windows start again from the new time instead of waiting for it.
      while (g.open.length > 0) this.close(g, g.open[0]!, emit);
      g.closedUntil = -Infinity;
    }
    // Windows this reading's time is already past (plus lateness) close first.
    this.closeDue(g, key, this.event ? t - this.lateness : t, now, emit);
    const hop = this.kind === 'hopping' ? (this.spec.hopMs ?? this.size) : this.size;
    let taken = false;
    for (let start = Math.floor(t / hop) * hop; start > t - this.size; start -= hop) {
      const end = start + this.size;
      if (end <= g.closedUntil) continue;
      let acc = g.open[0]?.start === start ? g.open[0] : g.open.find((a) => a.start === start);
      if (!acc) {
        acc = emptyAcc(start, end, String(start), now, this.keepValues);
        g.open.push(acc);
        g.open.sort((a, b) => a.end - b.end);
      }
      this.take(acc, r, value, now);
      taken = true;
    }
    if (!taken) {
      this.late++;
      this.failures?.inc({ rule: this.spec.id, stage: 'late' });
    }
  }

  private countIn(g: Group, r: Envelope, t: number, value: number | undefined, now: number, emit: (out: RuleOutput) => void): void {
    let acc = g.open[0];
    if (!acc) g.open.push((acc = emptyAcc(t, t, `${t}.${r.seq}`, now, this.keepValues)));
    this.take(acc, r, value, now);
    acc.end = t;
    if (acc.n + acc.skipped >= (this.spec.count ?? 1)) this.close(g, acc, emit);
  }

  private session(g: Group, r: Envelope, t: number, value: number | undefined, now: number, emit: (out: RuleOutput) => void): void {
    let acc = g.open[0];
    if (acc && t - acc.end > this.size) {
      this.close(g, acc, emit);
      acc = undefined;
    }
    if (!acc) g.open.push((acc = emptyAcc(t, t, `${t}.${r.seq}`, now, this.keepValues)));
    this.take(acc, r, value, now);
    acc.end = Math.max(acc.end, t);
  }

  private slide(g: Group, r: Envelope, t: number, value: number | undefined, now: number, emit: (out: RuleOutput) => void): void {
    const buffer = (g.buffer ??= []);
    if (value !== undefined) {
      buffer.push([t, value]);
      if (buffer.length > MAX_WINDOW_VALUES) buffer.shift();
    }
    let drop = 0;
    while (drop < buffer.length && buffer[drop]![0] <= t - this.size) drop++;
    if (drop > 0) buffer.splice(0, drop);
    const acc = emptyAcc(t - this.size, t, r.id, now, this.keepValues);
    for (const [, v] of buffer) add(acc, v);
    acc.unit = r.unit;
    this.emitAcc(g, acc, t, emit);
  }

  private take(acc: Acc, r: Envelope, value: number | undefined, now: number): void {
    if (value === undefined) acc.skipped++;
    else add(acc, value);
    if (r.unit !== undefined) acc.unit = r.unit;
    acc.touched = now;
  }

  /** Closes the group's windows whose end is at or before `until`, or idle for too long. */
  private closeDue(g: Group, key: string, until: number, now: number, emit: (out: RuleOutput) => void): void {
    while (g.open.length > 0) {
      const acc = g.open[0]!;
      if (!(acc.end <= until || this.idle(acc, now))) break;
      this.close(g, acc, emit);
      this.dirty.add(key);
    }
  }

  /** Event time only: the group has been silent for windowMs + allowedLatenessMs. */
  private idle(acc: Acc, now: number): boolean {
    return this.event && now - acc.touched >= this.size + this.lateness;
  }

  private close(g: Group, acc: Acc, emit: (out: RuleOutput) => void): void {
    g.open = g.open.filter((a) => a !== acc);
    if (this.kind === 'tumbling' || this.kind === 'hopping') g.closedUntil = Math.max(g.closedUntil, acc.end);
    this.emitAcc(g, acc, acc.end, emit);
  }

  private emitAcc(g: Group, acc: Acc, ts: number, emit: (out: RuleOutput) => void): void {
    let sorted: number[] | undefined;
    const sortedValues = (): number[] => (sorted ??= [...(acc.values ?? [])].sort((a, b) => a - b));
    for (const fn of this.spec.aggregates) {
      const value: Value = aggregate(fn, acc, sortedValues);
      const { seq } = this.sequence.next();
      emit({
        route: this.spec.route,
        stream: this.spec.stream,
        envelope: makeEnvelope({
          id: `${this.spec.id}:${idPart(g.device)}:${idPart(g.point)}:${g.unit === undefined ? '' : `${idPart(g.unit)}:`}${fn}:${acc.key}`,
          device: g.device,
          point: `${g.point}.${fn}`,
          value,
          quality: value === null ? 'bad' : 'good',
          ts,
          seq,
          rule: this.spec.id,
          unit: fn === 'count' ? undefined : acc.unit,
        }),
      });
    }
  }

  tick(now: number, emit: (out: RuleOutput) => void): void {
    for (const [key, g] of this.groups) {
      const before = g.open.length;
      if (this.kind === 'session') {
        const acc = g.open[0];
        if (acc && (this.event ? now - acc.touched >= this.size + this.lateness : now - acc.end >= this.size)) this.close(g, acc, emit);
      } else if (this.kind === 'tumbling' || this.kind === 'hopping') {
        this.closeDue(g, key, this.event ? -Infinity : now, now, emit);
      }
      if (g.open.length !== before) this.dirty.add(key);
    }
  }

  nextDeadline(): number | undefined {
    let next: number | undefined;
    const at = (d: number): void => {
      if (next === undefined || d < next) next = d;
    };
    for (const g of this.groups.values()) {
      for (const acc of g.open) {
        if (this.kind === 'count') continue;
        if (this.event) at(acc.touched + this.size + this.lateness);
        else if (this.kind === 'session') at(acc.end + this.size);
        else at(acc.end);
      }
    }
    return next;
  }

  takeDirty(): RuleStateRow[] {
    const rows: RuleStateRow[] = [];
    for (const key of this.dirty) {
      const g = this.groups.get(key);
      // A group with nothing open and nothing to remember is deleted.
      // Nothing open, nothing buffered: the group is forgotten (a reading for a window it closed
      // would make an aggregate whose id the cloud already has).
      const keep = g && (g.open.length > 0 || (g.buffer?.length ?? 0) > 0);
      if (!keep) {
        this.groups.delete(key);
        const points = g ? this.byDevicePoint.get(g.device) : undefined;
        points?.delete(g!.point);
        if (points?.size === 0) this.byDevicePoint.delete(g!.device);
      }
      rows.push({ key, state: keep ? JSON.stringify(g) : null });
    }
    this.dirty.clear();
    return rows;
  }

  /** Closes every open window now (count windows too), oldest end first: the end of a replay. */
  closeAll(emit: (out: RuleOutput) => void): void {
    const open = [...this.groups.values()].flatMap((g) => g.open.map((acc) => ({ g, acc }))).sort((a, b) => a.acc.end - b.acc.end);
    for (const { g, acc } of open) {
      this.close(g, acc, emit);
      if (g.key) this.dirty.add(g.key);
    }
  }

  clear(): void {
    this.groups.clear();
    this.byDevicePoint.clear();
    this.dirty.clear();
  }

  owns(key: string): boolean {
    return key.startsWith(`${this.spec.id}\u0000`);
  }

  restore(row: RuleStateRow): void {
    if (row.state === null) return;
    const saved = JSON.parse(row.state) as (Group & { closedUntil: number | null }) | LegacyTumbling;
    if (saved === null || typeof saved !== 'object') throw new Error(`unreadable saved state for ${row.key}`);
    const g = 'open' in saved ? saved : fromLegacy(saved, this.size);
    const numbers = (a: Acc): boolean => ['start', 'end', 'n', 'sum', 'mean', 'm2', 'skipped', 'touched'].every((k) => typeof a[k as keyof Acc] === 'number');
    if (
      typeof g.device !== 'string' ||
      typeof g.point !== 'string' ||
      !Array.isArray(g.open) ||
      g.open.some((a) => typeof a !== 'object' || a === null || !numbers(a) || (a.values !== undefined && !Array.isArray(a.values))) ||
      (g.buffer !== undefined && !Array.isArray(g.buffer))
    ) {
      throw new Error(`unreadable saved state for ${row.key}`);
    }
    // JSON has no -Infinity.
    g.closedUntil = typeof g.closedUntil === 'number' ? g.closedUntil : -Infinity;
    g.key = row.key;
    this.groups.set(row.key, g);
  }

  /** The reading's group, created when new. */
  private groupOf(r: Envelope, emit: (out: RuleOutput) => void): Group {
    const fast = this.groupBy.length === 2 && this.groupBy[0] === 'device' && this.groupBy[1] === 'point';
    if (fast) {
      const g = this.byDevicePoint.get(r.device)?.get(r.point);
      if (g && this.groups.get(g.key!) === g) return g;
    }
    const key = this.groupKey(r);
    let g = this.groups.get(key);
    if (!g) {
      if (this.groups.size >= WindowRule.maxGroups) this.evictOldest(emit);
      g = {
        device: this.groupBy.includes('device') ? r.device : this.spec.id,
        point: this.groupBy.includes('point') ? r.point : this.spec.id,
        ...(this.groupBy.includes('unit') ? { unit: r.unit ?? '' } : {}),
        open: [],
        closedUntil: -Infinity,
      };
      this.groups.set(key, g);
    }
    g.key = key;
    if (fast) {
      let points = this.byDevicePoint.get(r.device);
      if (!points) this.byDevicePoint.set(r.device, (points = new Map<string, Group>()));
      points.set(r.point, g);
    }
    return g;
  }

  private evictOldest(emit: (out: RuleOutput) => void): void {
    const first = this.groups.entries().next();
    if (first.done) return;
    const [key, g] = first.value;
    while (g.open.length > 0) this.close(g, g.open[0]!, emit);
    this.groups.delete(key);
    const points = this.byDevicePoint.get(g.device);
    points?.delete(g.point);
    if (points?.size === 0) this.byDevicePoint.delete(g.device);
    this.dirty.add(key);
    this.failures?.inc({ rule: this.spec.id, stage: 'evicted' });
  }

  private groupKey(r: Envelope): string {
    let key = this.spec.id;
    for (const k of this.groupBy) key += `\u0000${r[k] ?? ''}`;
    return key;
  }
}

/** State saved by the first tumbling-window rule (one open window per device and point). */
interface LegacyTumbling {
  device: string;
  point: string;
  start: number;
  count: number;
  sum: number;
  min: number | null;
  max: number | null;
  skipped: number;
}

function fromLegacy(l: LegacyTumbling, size: number): Group {
  const acc = emptyAcc(l.start, l.start + size, String(l.start), 0, false);
  Object.assign(acc, { n: l.count, sum: l.sum, min: l.min, max: l.max, mean: l.count > 0 ? l.sum / l.count : 0, skipped: l.skipped });
  return { device: l.device, point: l.point, open: [acc], closedUntil: -Infinity };
}
