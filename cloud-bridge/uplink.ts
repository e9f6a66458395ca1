import mqtt, { type MqttClient } from 'mqtt';
import { deflateSync } from 'node:zlib';
import {
  Backoff,
  cloudTopics,
  type Clock,
  type Counter,
  type Gauge,
  type Logger,
  type Metrics,
  type Outbox,
  type OutboxRow,
  type TimerHandle,
} from '../runtime/contracts/index.js';
import { LinkBudget, type UsageStore } from './link-budget.js';

export interface UplinkOptions {
  readonly gatewayId: string;
  readonly url: string;
  readonly clientId: string;
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  readonly topicPrefix: string;
  readonly batchSize: number;
  readonly maxInFlight: number;
  readonly keepaliveS: number;
  readonly backoff: { readonly initialMs: number; readonly maxMs: number };
  readonly compression: 'deflate' | 'none';
  readonly lingerMs: number;
  readonly maxBytesPerS?: number | undefined;
  readonly dailyBytes?: number | undefined;
}

export type LinkState = 'connecting' | 'up' | 'down' | 'stopped';

/**
 * Drains the outbox to the cloud broker over MQTT, QoS 1, a batch of readings per message.
 *
 * Each connection is a fresh mqtt.js client with its own reconnect logic switched off: when a
 * connection drops, the client is ended with `force`, which fails every unacknowledged publish,
 * and the outbox is read again from its oldest row on the next connection. Rows leave the outbox
 * only in the PUBACK callback, so a drop at any moment can duplicate a batch (the cloud
 * deduplicates by reading id) but never lose one.
 */
export class Uplink {
  private client: MqttClient | undefined;
  private state: LinkState = 'down';
  /** Per stream: the last row id sent on this connection. */
  private readonly cursors = new Map<string, number>();
  private inFlight = 0;
  private generation = 0;
  private retryTimer: TimerHandle | undefined;
  private readonly backoff: Backoff;
  private readonly topic: string;
  private readonly statusTopic: string;
  private idleWaiters: Array<() => void> = [];
  private readonly budget: LinkBudget;
  private deferTimer: TimerHandle | undefined;
  private deferredUntil = 0;
  private readonly mBytes: Counter;
  private readonly mBatches: Counter;
  private readonly mConnects: Counter;
  private readonly mPublishErrors: Counter;
  private readonly mLinkUp: Gauge;
  private readonly mInFlight: Gauge;

  constructor(
    private readonly opts: UplinkOptions,
    private readonly outbox: Outbox,
    private readonly clock: Clock,
    private readonly log: Logger,
    metrics: Metrics,
    usage?: UsageStore,
  ) {
    this.budget = new LinkBudget({ maxBytesPerS: opts.maxBytesPerS, dailyBytes: opts.dailyBytes }, clock, usage);
    this.mBytes = metrics.counter('outpost_uplink_bytes_total', 'Uplink payload bytes published (resends included)');
    this.backoff = new Backoff(opts.backoff.initialMs, opts.backoff.maxMs);
    this.topic = cloudTopics.telemetry(opts.topicPrefix, opts.gatewayId);
    this.statusTopic = cloudTopics.status(opts.topicPrefix, opts.gatewayId);
    this.mBatches = metrics.counter('outpost_uplink_batches_total', 'Uplink messages acknowledged by the cloud broker');
    this.mConnects = metrics.counter('outpost_uplink_connects_total', 'Connections established to the cloud broker');
    this.mPublishErrors = metrics.counter('outpost_uplink_publish_failures_total', 'Uplink messages not acknowledged (resent later)');
    this.mLinkUp = metrics.gauge('outpost_uplink_up', '1 while connected to the cloud broker');
    this.mInFlight = metrics.gauge('outpost_uplink_in_flight', 'Uplink messages awaiting PUBACK');
  }

  get linkState(): LinkState {
    return this.state;
  }

  /** Bytes spent today and the configured caps. */
  budgetStatus(): ReturnType<LinkBudget['status']> {
    return this.budget.status();
  }

  start(): void {
    this.connect();
  }

  /** Called after new rows were committed. */
  notify(): void {
    this.pump();
  }

  /** Resolves when the outbox is empty and nothing is in flight, or after `timeoutMs`. */
  async drained(timeoutMs: number): Promise<boolean> {
    if (this.isDrained()) return true;
    return new Promise((resolve) => {
      const timer = this.clock.setTimeout(() => {
        this.idleWaiters = this.idleWaiters.filter((w) => w !== done);
        resolve(false);
      }, timeoutMs);
      const done = (): void => {
        this.clock.clearTimeout(timer);
        resolve(true);
      };
      this.idleWaiters.push(done);
    });
  }

  async stop(): Promise<void> {
    this.state = 'stopped';
    this.generation++;
    if (this.retryTimer) this.clock.clearTimeout(this.retryTimer);
    if (this.deferTimer) this.clock.clearTimeout(this.deferTimer);
    const client = this.client;
    this.client = undefined;
    this.mLinkUp.set(0);
    if (!client) return;
    if (client.connected) {
      // A clean stop publishes the offline status itself; the last will covers crashes.
      await new Promise<void>((resolve) => {
        client.publish(this.statusTopic, JSON.stringify({ state: 'offline' }), { qos: 1, retain: true }, () => resolve());
        this.clock.setTimeout(resolve, 1000);
      });
    }
    await new Promise<void>((resolve) => client.end(true, {}, () => resolve()));
  }

  private isDrained(): boolean {
    return this.inFlight === 0 && this.outbox.stats().depth === 0;
  }

  private connect(): void {
    if (this.state === 'stopped') return;
    this.state = 'connecting';
    const generation = ++this.generation;
    const client = mqtt.connect(this.opts.url, {
      clientId: this.opts.clientId,
      username: this.opts.username,
      password: this.opts.password,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      keepalive: this.opts.keepaliveS,
      queueQoSZero: false,
      will: { topic: this.statusTopic, payload: Buffer.from(JSON.stringify({ state: 'offline' })), qos: 1, retain: true },
    });
    this.client = client;
    client.on('connect', () => {
      if (generation !== this.generation) return;
      this.state = 'up';
      this.backoff.reset();
      this.cursors.clear();
      this.inFlight = 0;
      this.mConnects.inc();
      this.mLinkUp.set(1);
      this.log.info({ url: this.opts.url }, 'cloud link up');
      client.publish(this.statusTopic, JSON.stringify({ state: 'online' }), { qos: 1, retain: true });
      this.pump();
    });
    client.on('error', (err) => {
      this.log.warn({ err: err.message }, 'cloud link error');
    });
    client.on('close', () => {
      if (generation !== this.generation) return;
      this.generation++;
      this.mLinkUp.set(0);
      this.mInFlight.set(0);
      // Fail every publish still waiting for a PUBACK; the rows stay in the outbox for the next link.
      client.end(true);
      this.inFlight = 0;
      this.cursors.clear();
      if (this.state === 'stopped') return;
      const wasUp = this.state === 'up';
      this.state = 'down';
      const delay = this.backoff.next();
      if (wasUp) this.log.warn({ retryInMs: delay }, 'cloud link down');
      this.retryTimer = this.clock.setTimeout(() => this.connect(), delay);
    });
  }

  private pump(): void {
    const client = this.client;
    if (this.state !== 'up' || !client) return;
    const generation = this.generation;
    while (this.inFlight < this.opts.maxInFlight) {
      const batch = this.nextBatch();
      if (!batch) break;
      const { stream, rows } = batch;
      const first = rows[0]!.rowid;
      const last = rows[rows.length - 1]!.rowid;
      this.cursors.set(stream, last);
      const json = `{"v":1,"gateway":${JSON.stringify(this.opts.gatewayId)},"sentAt":${this.clock.now()},"readings":[${rows
        .map((r) => r.body)
        .join(',')}]}`;
      const payload = this.opts.compression === 'deflate' ? deflateSync(json) : Buffer.from(json);
      this.budget.spend(payload.length);
      this.mBytes.inc(undefined, payload.length);
      this.inFlight++;
      this.mInFlight.set(this.inFlight);
      this.log.debug({ stream, first, last, rows: rows.length, inFlight: this.inFlight }, 'batch sent');
      client.publish(this.topic, payload, { qos: 1 }, (err) => {
        this.log.debug({ stream, first, last, err: err?.message, current: generation === this.generation }, 'batch settled');
        if (err) {
          // Connection lost before the PUBACK: the rows stay and are sent again.
          this.mPublishErrors.inc();
          return;
        }
        // Acknowledged: safe to delete even if the link dropped since.
        this.outbox.ack(stream, first, last);
        this.mBatches.inc();
        if (generation !== this.generation) return;
        this.inFlight--;
        this.mInFlight.set(this.inFlight);
        this.pump();
      });
    }
    if (this.isDrained()) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /**
   * The next batch: from the highest-priority stream that has rows not yet sent on this
   * connection, oldest first, so the readings of one source leave in the order they were stored.
   */
  private nextBatch(): { stream: string; rows: OutboxRow[] } | undefined {
    let wait: number | undefined;
    for (const { name, priority } of this.outbox.drainOrder()) {
      const rows = this.outbox.peek(name, this.cursors.get(name) ?? 0, this.opts.batchSize);
      if (rows.length === 0) continue;
      // The rate cap or the daily budget may hold this stream back (the budget spares priority 0),
      // and a batch that is not full lingers until its oldest reading is old enough.
      let delay = this.budget.delayFor(priority);
      if (delay === 0 && priority > 0 && this.opts.lingerMs > 0 && rows.length < this.opts.batchSize) {
        delay = Math.max(0, rows[0]!.createdAt + this.opts.lingerMs - this.clock.now());
      }
      if (delay === 0) return { stream: name, rows };
      wait = Math.min(wait ?? delay, delay);
    }
    if (wait !== undefined) this.deferPump(wait);
    return undefined;
  }

  private deferPump(ms: number): void {
    const due = this.clock.now() + ms;
    if (this.deferTimer && this.deferredUntil <= due) return;
    if (this.deferTimer) this.clock.clearTimeout(this.deferTimer);
    this.deferredUntil = due;
    this.deferTimer = this.clock.setTimeout(() => {
      this.deferTimer = undefined;
      this.pump();
    }, ms);
  }
}
