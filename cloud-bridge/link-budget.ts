import type { Clock } from '../runtime/contracts/index.js';

/** Where the bytes sent per UTC day are kept, so a restart does not reset a metered link's budget. */
export interface UsageStore {
  bytesOn(day: string): number;
  add(day: string, bytes: number): void;
}

export interface LinkBudgetOptions {
  /** Payload bytes per second at most (token bucket, one second of burst). */
  readonly maxBytesPerS?: number | undefined;
  /** Payload bytes per UTC day; when spent, only priority 0 streams are sent. */
  readonly dailyBytes?: number | undefined;
}

const DAY_MS = 86_400_000;

function utcDay(now: number): string {
  return new Date(now).toISOString().slice(0, 10);
}

/**
 * What the uplink may spend on a metered link: a byte rate (token bucket) and a daily byte budget.
 * A batch goes when the bucket is not in debt; it may take the bucket below zero, and the next one
 * waits until it has paid that back, so the long-run rate is the cap whatever the batch size.
 */
export class LinkBudget {
  private tokens: number;
  private refilledAt: number;
  private day: string;
  private sentToday: number;

  constructor(
    private readonly opts: LinkBudgetOptions,
    private readonly clock: Clock,
    private readonly usage?: UsageStore,
  ) {
    const now = clock.now();
    this.tokens = opts.maxBytesPerS ?? 0;
    this.refilledAt = now;
    this.day = utcDay(now);
    this.sentToday = usage?.bytesOn(this.day) ?? 0;
  }

  /** Milliseconds until a batch of a stream with `priority` may go; 0 means now. */
  delayFor(priority: number): number {
    const now = this.clock.now();
    this.rollDay(now);
    if (this.opts.dailyBytes !== undefined && priority > 0 && this.sentToday >= this.opts.dailyBytes) {
      return DAY_MS - (now % DAY_MS);
    }
    const rate = this.opts.maxBytesPerS;
    if (rate === undefined) return 0;
    this.tokens = Math.min(rate, this.tokens + ((now - this.refilledAt) * rate) / 1000);
    this.refilledAt = now;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / rate);
  }

  /** The daily budget is spent (streams above priority 0 wait for the next UTC day). */
  exhausted(): boolean {
    this.rollDay(this.clock.now());
    return this.opts.dailyBytes !== undefined && this.sentToday >= this.opts.dailyBytes;
  }

  spend(bytes: number): void {
    const now = this.clock.now();
    this.rollDay(now);
    if (this.opts.maxBytesPerS !== undefined) this.tokens -= bytes;
    this.sentToday += bytes;
    this.usage?.add(this.day, bytes);
  }

  status(): { sentToday: number; dailyBytes?: number; maxBytesPerS?: number } {
    this.rollDay(this.clock.now());
    return {
      sentToday: this.sentToday,
      ...(this.opts.dailyBytes !== undefined ? { dailyBytes: this.opts.dailyBytes } : {}),
      ...(this.opts.maxBytesPerS !== undefined ? { maxBytesPerS: this.opts.maxBytesPerS } : {}),
    };
  }

  private rollDay(now: number): void {
    const day = utcDay(now);
    if (day === this.day) return;
    this.day = day;
    this.sentToday = this.usage?.bytesOn(day) ?? 0;
  }
}
