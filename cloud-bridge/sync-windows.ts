import type { ScheduledTask } from 'node-cron';
import { lazyModule, type Clock, type TimerHandle } from '../runtime/contracts/index.js';

const cron = lazyModule<typeof import('node-cron').default>('node-cron');

export interface SyncWindowSpec {
  /** When a window opens (node-cron syntax, local time of the gateway). */
  readonly cron: string;
  readonly durationMs: number;
}

/**
 * Sync windows of a metered link: the uplink may connect only while one is open. A window opens
 * at each firing of its cron expression and stays open `durationMs`; a gateway that starts in the
 * middle of a window finds it open.
 */
export class SyncWindows {
  private tasks: ScheduledTask[] = [];
  private openUntil = 0;
  private closeTimer: TimerHandle | undefined;

  constructor(
    private readonly specs: readonly SyncWindowSpec[],
    private readonly clock: Clock,
    private readonly onChange: (open: boolean) => void,
  ) {}

  start(): void {
    const now = this.clock.now();
    for (const spec of this.specs) {
      const task = cron().schedule(spec.cron, () => this.open(spec.durationMs), { noOverlap: false });
      this.tasks.push(task);
      // Started inside a window? Find its latest opening within the last durationMs.
      const started = latestMatch(task, now, spec.durationMs);
      if (started !== undefined) this.openUntil = Math.max(this.openUntil, started + spec.durationMs);
    }
    if (this.isOpen()) this.armClose();
  }

  isOpen(): boolean {
    return this.clock.now() < this.openUntil;
  }

  /** Milliseconds until the next window opens (0 while one is open), if any is scheduled. */
  msToNext(): number | undefined {
    if (this.isOpen()) return 0;
    const next = this.tasks.map((t) => t.msToNext()).filter((x): x is number => x !== null);
    return next.length > 0 ? Math.min(...next) : undefined;
  }

  stop(): void {
    for (const t of this.tasks) void Promise.resolve(t.destroy()).catch(() => undefined);
    this.tasks = [];
    if (this.closeTimer) this.clock.clearTimeout(this.closeTimer);
  }

  private open(durationMs: number): void {
    const wasOpen = this.isOpen();
    this.openUntil = Math.max(this.openUntil, this.clock.now() + durationMs);
    this.armClose();
    if (!wasOpen) this.onChange(true);
  }

  private armClose(): void {
    if (this.closeTimer) this.clock.clearTimeout(this.closeTimer);
    this.closeTimer = this.clock.setTimeout(() => {
      this.closeTimer = undefined;
      if (!this.isOpen()) this.onChange(false);
      else this.armClose();
    }, Math.max(0, this.openUntil - this.clock.now()));
  }
}

/**
 * The latest firing of `task` in (now - windowMs, now], if any: checked per second for a pattern
 * with a seconds field, else per minute, and at most 100,000 steps back.
 */
function latestMatch(task: ScheduledTask, now: number, windowMs: number): number | undefined {
  const step = task.getPattern().trim().split(/\s+/).length === 6 ? 1000 : 60_000;
  const floor = Math.max(now - windowMs, now - 100_000 * step);
  for (let t = now - (now % step); t > floor; t -= step) {
    if (task.match(new Date(t))) return t;
  }
  return undefined;
}
