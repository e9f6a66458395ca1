import { errorMessage, type Clock, type Counter, type Logger, type Metrics, type TimerHandle, type WriteOutput, type Value } from '../runtime/contracts/index.js';

/** Writes one value to a device point (a driver's write capability, verified by reading it back). */
export type PointWriter = (device: string, point: string, value: number | boolean | string) => Promise<unknown>;

interface Target {
  /** When the last write started (-Infinity: never). */
  lastAt: number;
  /** The value last written successfully. */
  written: Value | undefined;
  inFlight: boolean;
  /** The newest value waiting for the interval to pass; older ones it replaced were coalesced. */
  pending: { value: number | boolean | string; minIntervalMs: number } | undefined;
  timer: TimerHandle | undefined;
}

/**
 * Rule-driven writes with a guard against write storms: per device point, at most one write per
 * `minIntervalMs`, one at a time; a value equal to the one last written is not written again; while
 * a write waits, a newer value replaces it (the device gets the latest, not a backlog). Every
 * outcome is counted in `outpost_actuations_total{outcome}`: written, failed, unchanged, coalesced.
 */
export class ActuationGuard {
  private readonly targets = new Map<string, Target>();
  private readonly counter: Counter;
  private stopped = false;

  constructor(
    private readonly writer: PointWriter,
    private readonly clock: Clock,
    private readonly log: Logger,
    metrics: Metrics,
  ) {
    this.counter = metrics.counter('outpost_actuations_total', 'Rule-driven writes to device points, by outcome', ['device', 'point', 'outcome']);
  }

  submit(out: WriteOutput): void {
    const value = out.envelope.value;
    if (this.stopped || value === null) return;
    const key = `${out.device}\u0000${out.point}`;
    let t = this.targets.get(key);
    if (!t) this.targets.set(key, (t = { lastAt: -Infinity, written: undefined, inFlight: false, pending: undefined, timer: undefined }));
    if (t.pending) this.count(out, 'coalesced');
    t.pending = { value, minIntervalMs: out.minIntervalMs };
    this.pump(out.device, out.point, t);
  }

  /** Starts the pending write of `t` if its interval has passed, else arms a timer for then. */
  private pump(device: string, point: string, t: Target): void {
    const p = t.pending;
    if (!p || t.inFlight || this.stopped) return;
    if (p.value === t.written) {
      t.pending = undefined;
      this.count({ device, point }, 'unchanged');
      return;
    }
    const wait = t.lastAt + p.minIntervalMs - this.clock.now();
    if (wait > 0) {
      t.timer ??= this.clock.setTimeout(() => {
        t.timer = undefined;
        this.pump(device, point, t);
      }, wait);
      return;
    }
    t.pending = undefined;
    t.inFlight = true;
    t.lastAt = this.clock.now();
    void this.writer(device, point, p.value).then(
      () => {
        t.written = p.value;
        this.count({ device, point }, 'written');
      },
      (err: unknown) => {
        this.count({ device, point }, 'failed');
        this.log.warn({ device, point, value: p.value, err: errorMessage(err) }, 'rule write failed');
      },
    ).finally(() => {
      t.inFlight = false;
      this.pump(device, point, t);
    });
  }

  /** Another path (the API, a flow) wrote the point: what the guard last wrote is no longer what it holds. */
  forget(device: string, point: string): void {
    const t = this.targets.get(`${device}\u0000${point}`);
    if (t) t.written = undefined;
  }

  private count(out: { device: string; point: string }, outcome: string): void {
    this.counter.inc({ device: out.device, point: out.point, outcome });
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.targets.values()) if (t.timer) this.clock.clearTimeout(t.timer);
  }
}
