import type { Clock, LinkGate } from '../runtime/contracts/index.js';
import { LinkBudget, type UsageStore } from './link-budget.js';
import { SyncWindows, type SyncWindowSpec } from './sync-windows.js';

export interface LinkGateOptions {
  readonly maxBytesPerS?: number | undefined;
  readonly dailyBytes?: number | undefined;
  /** When set, the link is up only inside these windows (and while priority 0 streams hold rows). */
  readonly syncWindows?: readonly SyncWindowSpec[] | undefined;
}

/**
 * What a metered link allows, for the uplink and for other traffic on the link (artifact
 * downloads, through the CloudLink contract): the sync windows it may be open in, the byte-rate
 * cap and the daily budget. One gate, so every byte that crosses the link is counted once.
 */
export class CloudLinkGate implements LinkGate {
  private readonly budget: LinkBudget;
  private readonly windows: SyncWindows | undefined;

  constructor(opts: LinkGateOptions, clock: Clock, usage: UsageStore | undefined, onWindow: (open: boolean) => void) {
    this.budget = new LinkBudget({ maxBytesPerS: opts.maxBytesPerS, dailyBytes: opts.dailyBytes }, clock, usage);
    this.windows = opts.syncWindows && opts.syncWindows.length > 0 ? new SyncWindows(opts.syncWindows, clock, onWindow) : undefined;
  }

  start(): void {
    this.windows?.start();
  }

  stop(): void {
    this.windows?.stop();
  }

  /** Sync windows are configured: outside them the link is closed on purpose. */
  get windowed(): boolean {
    return this.windows !== undefined;
  }

  /** Inside a sync window, or none configured. */
  windowOpen(): boolean {
    return !this.windows || this.windows.isOpen();
  }

  /** Milliseconds until the next window opens (0 while one is open), if any is scheduled. */
  msToNextWindow(): number | undefined {
    return this.windows?.msToNext();
  }

  /** Milliseconds until a batch of a stream with `priority` may go (rate cap, daily budget); 0: now. */
  delayFor(priority: number): number {
    return this.budget.delayFor(priority);
  }

  /** For other traffic: ms until it may use the link (outside the windows or with the budget spent: later). */
  delayMs(): number {
    if (!this.windowOpen()) return this.windows!.msToNext() ?? 60_000;
    return this.budget.delayFor(1);
  }

  /** Other traffic may not use the link before the next sync window or UTC day (not just the rate cap). */
  closed(): boolean {
    return !this.windowOpen() || this.budget.exhausted();
  }

  /** Bytes that crossed the link (uplink payloads, downloads). */
  spend(bytes: number): void {
    this.budget.spend(bytes);
  }

  /** Bytes spent today and the configured caps. */
  status(): ReturnType<LinkBudget['status']> {
    return this.budget.status();
  }
}
