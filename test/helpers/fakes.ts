import { ConfigError, parseConfigText } from '../../runtime/config/load.js';
import type { Clock, Logger, TimerHandle } from '../../runtime/contracts/index.js';

/** A logger that drops everything, for components under test. */
export const silentLogger: Logger = {
  error: () => undefined,
  warn: () => undefined,
  info: () => undefined,
  debug: () => undefined,
  child: () => silentLogger,
};

/** The problems a site config text is refused with (none when it is valid). */
export function configProblems(text: string): string[] {
  try {
    parseConfigText(text, 'site.yaml');
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  return [];
}

/** A clock that moves only when told; advance() runs the timers that fall due, in order. */
export class ManualClock implements Clock {
  t = 0;
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private ids = 0;
  now = (): number => this.t;
  setTimeout = (fn: () => void, ms: number): TimerHandle => {
    const id = ++this.ids;
    this.timers.push({ at: this.t + ms, fn, id });
    return { unref() {}, id } as TimerHandle;
  };
  clearTimeout = (h: TimerHandle): void => {
    this.timers = this.timers.filter((x) => x.id !== (h as unknown as { id: number }).id);
  };
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
