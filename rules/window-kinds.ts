import type { Envelope, RuleOutput } from '../runtime/contracts/index.js';
import { add, emptyAcc, MAX_WINDOW_VALUES, take, type Acc } from './accumulator.js';
import type { Group } from './window-groups.js';
import type { WindowKind, WindowRuleSpec } from './types.js';

type Emit = (out: RuleOutput) => void;

/** A window rule's settings that every kind of window uses. */
export interface WindowSettings {
  /** windowMs; gapMs for session windows. */
  readonly size: number;
  /** Event time: a reading's own `ts` places it; otherwise the gateway's clock on arrival. */
  readonly event: boolean;
  readonly lateness: number;
  /** One of the rule's aggregates needs the window's values. */
  readonly keepValues: boolean;
}

/** What a window kind uses of its rule. */
export interface WindowHost {
  /** Takes the window out of its group and emits its aggregates, stamped with its end. */
  close(g: Group, acc: Acc, emit: Emit): void;
  /** Emits the window's aggregates stamped `ts`, without it ever having been open (sliding windows). */
  emitWindow(g: Group, acc: Acc, ts: number, emit: Emit): void;
  /** Counts a reading that came too late for every window it belongs to. */
  late(): void;
}

/**
 * One kind of window (Flink's window assigner and trigger in one): which windows a reading goes
 * into, and which of them the clock closes.
 */
export interface WindowAssigner {
  /** Closing a window closes its time for the group: a later reading for it is late (tumbling and hopping). */
  readonly sealsTime: boolean;
  /** Places a reading at time `t`; `value` is undefined for one that is not a good number (counted as skipped). */
  take(g: Group, r: Envelope, t: number, value: number | undefined, now: number, emit: Emit): void;
  /** Closes the group's windows the clock says are due. */
  tick(g: Group, now: number, emit: Emit): void;
  /** When the clock closes this open window, if it ever does. */
  deadline(acc: Acc): number | undefined;
}

/** Tumbling (hop = windowMs) and hopping windows, aligned to multiples of the hop since the epoch. */
class TimedWindows implements WindowAssigner {
  readonly sealsTime = true;

  constructor(
    private readonly hop: number,
    private readonly s: WindowSettings,
    private readonly host: WindowHost,
  ) {}

  take(g: Group, r: Envelope, t: number, value: number | undefined, now: number, emit: Emit): void {
    const { size, event } = this.s;
    if (!event && t < g.closedUntil - size) {
      // The gateway's clock stepped back (NTP on a device without a real-time clock): what is
      // open closes now, and windows start again from the new time instead of waiting for it.
      while (g.open.length > 0) this.host.close(g, g.open[0]!, emit);
      g.closedUntil = -Infinity;
    }
    // Windows this reading's time is already past (plus lateness) close first.
    this.closeDue(g, event ? t - this.s.lateness : t, now, emit);
    const hop = this.hop;
    let taken = false;
    for (let start = Math.floor(t / hop) * hop; start > t - size; start -= hop) {
      const end = start + size;
      if (end <= g.closedUntil) continue;
      let acc = g.open[0]?.start === start ? g.open[0] : g.open.find((a) => a.start === start);
      if (!acc) {
        acc = emptyAcc(start, end, String(start), now, this.s.keepValues);
        g.open.push(acc);
        g.open.sort((a, b) => a.end - b.end);
      }
      take(acc, r, value, now);
      taken = true;
    }
    if (!taken) this.host.late();
  }

  tick(g: Group, now: number, emit: Emit): void {
    // Event time: only silence closes a window here; readings' own times close the others.
    this.closeDue(g, this.s.event ? -Infinity : now, now, emit);
  }

  deadline(acc: Acc): number {
    return this.s.event ? acc.touched + this.s.size + this.s.lateness : acc.end;
  }

  /** Closes the group's windows whose end is at or before `until`, or idle for too long. */
  private closeDue(g: Group, until: number, now: number, emit: Emit): void {
    while (g.open.length > 0) {
      const acc = g.open[0]!;
      if (!(acc.end <= until || idle(this.s, acc, now))) break;
      this.host.close(g, acc, emit);
    }
  }
}

/** Event time only: the group has been silent for windowMs + allowedLatenessMs. */
const idle = (s: WindowSettings, acc: Acc, now: number): boolean => s.event && now - acc.touched >= s.size + s.lateness;

/** The last windowMs, emitted on every reading. */
class SlidingWindows implements WindowAssigner {
  readonly sealsTime = false;

  constructor(
    private readonly s: WindowSettings,
    private readonly host: WindowHost,
  ) {}

  take(g: Group, r: Envelope, t: number, value: number | undefined, now: number, emit: Emit): void {
    const { size } = this.s;
    const buffer = (g.buffer ??= []);
    if (value !== undefined) {
      buffer.push([t, value]);
      if (buffer.length > MAX_WINDOW_VALUES) buffer.shift();
    }
    let drop = 0;
    while (drop < buffer.length && buffer[drop]![0] <= t - size) drop++;
    if (drop > 0) buffer.splice(0, drop);
    const acc = emptyAcc(t - size, t, r.id, now, this.s.keepValues);
    for (const [, v] of buffer) add(acc, v);
    acc.unit = r.unit;
    this.host.emitWindow(g, acc, t, emit);
  }

  tick(): void {}

  /** A sliding window is never left open. */
  deadline(): undefined {
    return undefined;
  }
}

/** Closed after gapMs without a reading of the group. */
class SessionWindows implements WindowAssigner {
  readonly sealsTime = false;

  constructor(
    private readonly s: WindowSettings,
    private readonly host: WindowHost,
  ) {}

  take(g: Group, r: Envelope, t: number, value: number | undefined, now: number, emit: Emit): void {
    let acc = g.open[0];
    if (acc && t - acc.end > this.s.size) {
      this.host.close(g, acc, emit);
      acc = undefined;
    }
    if (!acc) g.open.push((acc = emptyAcc(t, t, `${t}.${r.seq}`, now, this.s.keepValues)));
    take(acc, r, value, now);
    acc.end = Math.max(acc.end, t);
  }

  tick(g: Group, now: number, emit: Emit): void {
    const acc = g.open[0];
    if (acc && (this.s.event ? idle(this.s, acc, now) : now - acc.end >= this.s.size)) this.host.close(g, acc, emit);
  }

  deadline(acc: Acc): number {
    return this.s.event ? acc.touched + this.s.size + this.s.lateness : acc.end + this.s.size;
  }
}

/** Every `count` readings of the group; the clock never closes one. */
class CountWindows implements WindowAssigner {
  readonly sealsTime = false;

  constructor(
    private readonly count: number,
    private readonly s: WindowSettings,
    private readonly host: WindowHost,
  ) {}

  take(g: Group, r: Envelope, t: number, value: number | undefined, now: number, emit: Emit): void {
    let acc = g.open[0];
    if (!acc) g.open.push((acc = emptyAcc(t, t, `${t}.${r.seq}`, now, this.s.keepValues)));
    take(acc, r, value, now);
    acc.end = t;
    if (acc.n + acc.skipped >= this.count) this.host.close(g, acc, emit);
  }

  tick(): void {}

  deadline(): undefined {
    return undefined;
  }
}

/** The window kinds by name. */
export const WINDOW_KINDS: Readonly<Record<WindowKind, (spec: WindowRuleSpec, s: WindowSettings, host: WindowHost) => WindowAssigner>> = {
  tumbling: (_spec, s, host) => new TimedWindows(s.size, s, host),
  hopping: (spec, s, host) => new TimedWindows(spec.hopMs ?? s.size, s, host),
  sliding: (_spec, s, host) => new SlidingWindows(s, host),
  session: (_spec, s, host) => new SessionWindows(s, host),
  count: (spec, s, host) => new CountWindows(spec.count ?? 1, s, host),
};
