import type { Envelope, RuleOutput, RuleStateRow } from '../runtime/contracts/index.js';
import { emptyAcc, type Acc } from './accumulator.js';
import type { GroupKey } from './types.js';

type Emit = (out: RuleOutput) => void;

/** One group's windows. Saved as JSON with every commit: its fields are the saved state format. */
export interface Group {
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

export interface WindowGroupsOptions {
  readonly ruleId: string;
  readonly groupBy: readonly GroupKey[];
  /** The rule's window length (gapMs for sessions): state saved by the first tumbling windows did not record it. */
  readonly size: number;
  /** Groups kept at most; read when a group is added. */
  readonly maxGroups: () => number;
  /** Closes (emits) the windows of the oldest group, about to be forgotten to make room. */
  readonly evicting: (g: Group, emit: Emit) => void;
}

/**
 * A window rule's groups (device and point by default), each saved as one state row keyed by the
 * rule id and the group's values, and restored from it after a restart. A group with nothing
 * open and nothing buffered is forgotten at the next save.
 */
export class WindowGroups {
  private readonly groups = new Map<string, Group>();
  /** Groups by device, then point, for the default groupBy: found without building a key. */
  private readonly byDevicePoint = new Map<string, Map<string, Group>>();
  private readonly dirty = new Set<string>();
  private readonly fast: boolean;

  constructor(private readonly opts: WindowGroupsOptions) {
    const { groupBy } = opts;
    this.fast = groupBy.length === 2 && groupBy[0] === 'device' && groupBy[1] === 'point';
  }

  /** The reading's group, created when new (making room first when the rule has maxGroups). */
  of(r: Envelope, emit: Emit): Group {
    if (this.fast) {
      const g = this.byDevicePoint.get(r.device)?.get(r.point);
      if (g && this.groups.get(g.key!) === g) return g;
    }
    const key = this.keyOf(r);
    let g = this.groups.get(key);
    if (!g) {
      if (this.groups.size >= this.opts.maxGroups()) this.evictOldest(emit);
      const { groupBy, ruleId } = this.opts;
      g = {
        device: groupBy.includes('device') ? r.device : ruleId,
        point: groupBy.includes('point') ? r.point : ruleId,
        ...(groupBy.includes('unit') ? { unit: r.unit ?? '' } : {}),
        open: [],
        closedUntil: -Infinity,
      };
      this.groups.set(key, g);
    }
    g.key = key;
    if (this.fast) {
      let points = this.byDevicePoint.get(r.device);
      if (!points) this.byDevicePoint.set(r.device, (points = new Map<string, Group>()));
      points.set(r.point, g);
    }
    return g;
  }

  /** The group under `key` changed: it is saved with the next commit. */
  changed(key: string): void {
    this.dirty.add(key);
  }

  entries(): IterableIterator<[string, Group]> {
    return this.groups.entries();
  }

  values(): IterableIterator<Group> {
    return this.groups.values();
  }

  /** State rows of the groups changed since the last call; null for a group forgotten. */
  takeDirty(): RuleStateRow[] {
    const rows: RuleStateRow[] = [];
    for (const key of this.dirty) {
      const g = this.groups.get(key);
      // Nothing open, nothing buffered: the group is forgotten (a reading for a window it closed
      // would make an aggregate whose id the cloud already has).
      const keep = g && (g.open.length > 0 || (g.buffer?.length ?? 0) > 0);
      if (!keep) this.forget(key, g);
      rows.push({ key, state: keep ? JSON.stringify(g) : null });
    }
    this.dirty.clear();
    return rows;
  }

  restore(row: RuleStateRow): void {
    if (row.state === null) return;
    const saved = JSON.parse(row.state) as (Group & { closedUntil: number | null }) | LegacyTumbling;
    if (saved === null || typeof saved !== 'object') throw new Error(`unreadable saved state for ${row.key}`);
    const g = 'open' in saved ? saved : fromLegacy(saved, this.opts.size);
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

  clear(): void {
    this.groups.clear();
    this.byDevicePoint.clear();
    this.dirty.clear();
  }

  private evictOldest(emit: Emit): void {
    const first = this.groups.entries().next();
    if (first.done) return;
    const [key, g] = first.value;
    this.opts.evicting(g, emit);
    this.forget(key, g);
    this.dirty.add(key);
  }

  private forget(key: string, g: Group | undefined): void {
    this.groups.delete(key);
    if (!g) return;
    const points = this.byDevicePoint.get(g.device);
    points?.delete(g.point);
    if (points?.size === 0) this.byDevicePoint.delete(g.device);
  }

  private keyOf(r: Envelope): string {
    let key = this.opts.ruleId;
    for (const k of this.opts.groupBy) key += `\u0000${r[k] ?? ''}`;
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
