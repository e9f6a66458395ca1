import type { Counter, Logger } from '../contracts/index.js';

/** A token bucket: `perSecond` refill up to `burst`. */
export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number,
  ) {
    this.tokens = burst;
    this.at = now();
  }

  private refill(): void {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.at) / 1000) * this.perSecond);
    this.at = t;
  }

  /** Takes a token if one is there. */
  take(): boolean {
    this.refill();
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Takes a token, going into debt; returns how long (ms) to wait before the debt is paid (0: none). */
  owe(): number {
    this.refill();
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens / this.perSecond) * 1000);
  }
}

/**
 * What a listener refuses: counted by cause (`outpost_broker_refused_total{cause}`) and logged at
 * warn once per cause per 10 minutes with the count since, so a flood of bad input cannot flood
 * the log.
 */
export class Refusals {
  private readonly last = new Map<string, { at: number; since: number }>();

  constructor(
    private readonly counter: Counter,
    private readonly log: Logger,
    private readonly now: () => number,
  ) {}

  note(cause: string, detail: Readonly<Record<string, unknown>>, message: string): void {
    this.counter.inc({ cause });
    const t = this.now();
    const seen = this.last.get(cause);
    if (seen && t - seen.at < 600_000) {
      seen.since++;
      return;
    }
    this.last.set(cause, { at: t, since: 0 });
    this.log.warn({ cause, ...detail, ...(seen ? { refusedSinceLastLog: seen.since } : {}) }, message);
  }
}
