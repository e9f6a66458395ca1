/** Time is injected so that windows, timeouts and backoff are tested without sleeping. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

export interface TimerHandle {
  unref?(): unknown;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/**
 * A clock that moves only when told: `t` is the time; `advance(ms)` moves it and runs the timers
 * that fall due, in order. For replaying recorded readings (`outpost rules test`), benchmarks that
 * must not depend on the wall clock, and every test that steps time.
 */
export class ManualClock implements Clock {
  t: number;
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private ids = 0;

  constructor(t = 0) {
    this.t = t;
  }

  now = (): number => this.t;

  setTimeout = (fn: () => void, ms: number): TimerHandle => {
    const id = ++this.ids;
    this.timers.push({ at: this.t + ms, fn, id });
    return { unref() {}, id } as TimerHandle;
  };

  clearTimeout = (h: TimerHandle): void => {
    this.timers = this.timers.filter((x) => x.id !== (h as unknown as { id: number }).id);
  };

  /** Timers armed and not yet run or cleared: 0 once a component stopped cleanly. */
  pending(): number {
    return this.timers.length;
  }

  /** Moves time on by `ms`, running each timer that falls due (letting promises settle between them). */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      const next = this.timers.filter((x) => x.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!next) break;
      this.timers = this.timers.filter((x) => x !== next);
      this.t = next.at;
      next.fn();
      await new Promise((r) => setImmediate(r));
    }
    this.t = end;
    await new Promise((r) => setImmediate(r));
  }
}
