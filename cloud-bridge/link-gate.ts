import type { Clock, LinkGate } from '../runtime/contracts/index.js';
import { LinkBudget, type UsageStore } from './link-budget.js';
import { SyncWindows, type SyncWindowSpec } from './sync-windows.js';

export interface UplinkGateOptions {
  /** When set, the link is open only inside these windows. */
  readonly syncWindows?: readonly SyncWindowSpec[] | undefined;
  readonly maxBytesPerS?: number | undefined;
  readonly dailyBytes?: number | undefined;
}

/** How long other traffic is told to wait when no sync window is scheduled at all. */
const NO_WINDOW_RETRY_MS = 60_000;

/**
 * What a metered cloud link allows: its sync windows, its byte rate and its daily budget, for the
 * uplink's batches and for the traffic the uplink lends the link to (artifact downloads, through
 * the LinkGate contract), so that one budget holds for everything that crosses it.
 */
export class UplinkGate implements LinkGate {
  private readonly budget: LinkBudget;
  private readonly windows: SyncWindows | undefined;

  /** `onWindow` is called when a sync window opens (true) or closes (false). */
  constructor(opts: UplinkGateOptions, clock: Clock, onWindow: (open: boolean) => void, usage?: UsageStore) {
    this.budget = new LinkBudget({ maxBytesPerS: opts.maxBytesPerS, dailyBytes: opts.dailyBytes }, clock, usage);
    this.windows = opts.syncWindows && opts.syncWindows.length > 0 ? new SyncWindows(opts.syncWindows, clock, onWindow) : undefined;
  }

  start(): void {
    this.windows?.start();
  }

  stop(): void {
    this.windows?.stop();
  }

  /** Sync windows are configured: outside them the link is closed. */
  get windowed(): boolean {
    return this.windows !== undefined;
  }

  /** Inside a sync window, or none configured. */
  windowOpen(): boolean {
    return !this.windows || this.windows.isOpen();
  }

  /** Milliseconds until the next sync window opens (0 inside one), if any is scheduled. */
  msToNextWindow(): number | undefined {
    return this.windows?.msToNext();
  }

  /** For the uplink's batches: ms until a batch of a stream with `priority` may go (the budget spares priority 0); 0: now. */
  batchDelay(priority: number): number {
    return this.budget.delayFor(priority);
  }

  /**
   * For other traffic: ms until it may use the link (outside the sync windows, or with the daily
   * budget spent: later), 0 for now.
   */
  delayMs(): number {
    if (!this.windowOpen()) return this.windows?.msToNext() ?? NO_WINDOW_RETRY_MS;
    return this.budget.delayFor(1);
  }

  /** Other traffic may not use the link before the next sync window or UTC day (not just the rate cap). */
  closed(): boolean {
    return !this.windowOpen() || this.budget.exhausted();
  }

  /** Bytes that crossed the link (a batch, or other traffic), taken from the rate and the daily budget. */
  spend(bytes: number): void {
    this.budget.spend(bytes);
  }

  /** Bytes spent today and the configured caps. */
  status(): ReturnType<LinkBudget['status']> {
    return this.budget.status();
  }
}
