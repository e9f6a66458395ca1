import type { Clock } from './clock.js';
import type { ReadingSink, SequenceSource } from './ingest.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';

export interface DriverContext {
  readonly sink: ReadingSink;
  readonly sequence: SequenceSource;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: Metrics;
}

/**
 * A southbound driver. Lifecycle: construct with validated config -> `start(ctx)` (connect,
 * begin polling or subscribing; must not throw for an unreachable device, which is retried with
 * backoff and reported as quality `bad`) -> `stop()` (stop intake, wait for in-flight readings
 * to be submitted, release connections).
 */
export interface Driver {
  readonly name: string;
  start(ctx: DriverContext): Promise<void>;
  stop(): Promise<void>;
  /** A small JSON-able summary for the status API. */
  status(): Record<string, unknown>;
}
