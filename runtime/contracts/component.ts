import type { Clock } from './clock.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';

/** What every component is started with: the gateway's clock, a logger named for it, and metrics. */
export interface ComponentContext {
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: Metrics;
}

/**
 * One part of the gateway: the broker, a driver, the rule engine, the uplink, the HTTP API, the
 * Node-RED host, the OTA service. Lifecycle, the same for every part:
 *
 *   construct  with its validated config and the services it uses (no I/O, no timers)
 *   start(ctx) open what it serves or polls; resolves once it is running (a listener is bound,
 *              a poll loop runs); an unreachable peer is retried, never fatal; a bad config or a
 *              port in use rejects, and the gateway then stops what already started
 *   status()   a small JSON-able section for the status API, also after stop
 *   stop()     idempotent; stops intake first, finishes or hands back in-flight work, then ends
 *              every timer, socket, file handle and child it owns: once every component has
 *              stopped, nothing of the gateway keeps the Node.js process alive
 *
 * The gateway starts its components in one ordered list and stops them in the reverse order
 * (runtime/parts/index.ts states the order and why it loses nothing).
 */
export interface Component {
  readonly name: string;
  start(ctx: ComponentContext): Promise<void>;
  stop(opts?: StopOptions): Promise<void>;
  status(): Record<string, unknown>;
}

export interface StopOptions {
  /**
   * How long a part that forwards data may keep delivering what it holds before it stops (the
   * uplink drains the outbox); what it cannot deliver in that time stays stored. Default 0.
   */
  readonly drainMs?: number;
}
