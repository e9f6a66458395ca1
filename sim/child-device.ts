import mqtt, { type MqttClient } from 'mqtt';
import { randomBytes } from 'node:crypto';
import { createSignal, type Signal, type SignalSpec } from './signals.js';

export interface SimChildOptions {
  /** The gateway's local broker, e.g. mqtt://127.0.0.1:1883 (may change across gateway restarts). */
  readonly url: string;
  readonly deviceId: string;
  readonly intervalMs: number;
  readonly points: Readonly<Record<string, SignalSpec>>;
  /** Messages published but not yet acknowledged, at most. */
  readonly maxInFlight?: number;
  /** Its MQTT password (its id is its client id and username), e.g. a key derived from an enrollment group. */
  readonly password?: string;
}

/**
 * A child device that publishes telemetry to the gateway's broker on the documented topic, at QoS 1,
 * each message with its own id (a boot nonce and a counter), so every reading id is known on the
 * device side. A reading counts as delivered to the gateway only when its PUBACK arrived;
 * `acked` is the device's own record of what the gateway must never lose.
 */
export class SimChildDevice {
  private client: MqttClient | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly signals: Array<[string, Signal]>;
  private readonly nonce = randomBytes(3).toString('hex');
  private n = 0;
  private inFlight = 0;
  private idle: Array<() => void> = [];
  /** Reading ids (`{device}:{messageId}:{point}`) whose message the gateway acknowledged. */
  readonly acked: string[] = [];
  published = 0;
  skipped = 0;

  constructor(private readonly opts: SimChildOptions) {
    this.signals = Object.entries(opts.points).map(([name, spec]) => [name, createSignal(spec)]);
  }

  get id(): string {
    return this.opts.deviceId;
  }

  get topic(): string {
    return `outpost/v1/dev/${this.opts.deviceId}/telemetry`;
  }

  get connected(): boolean {
    return this.client?.connected ?? false;
  }

  start(url = this.opts.url): void {
    this.client = mqtt.connect(url, {
      clientId: this.opts.deviceId,
      ...(this.opts.password !== undefined ? { username: this.opts.deviceId, password: this.opts.password } : {}),
      clean: true,
      reconnectPeriod: 500,
      // A refusal such as "server unavailable" (a connection storm) is retried like a lost link.
      reconnectOnConnackError: true,
      connectTimeout: 5_000,
      keepalive: 30,
    });
    this.client.on('error', () => undefined);
    this.timer = setInterval(() => this.publishOnce(), this.opts.intervalMs);
  }

  /** One telemetry message now (skipped while the window of unacknowledged messages is full). */
  publishOnce(): void {
    const client = this.client;
    if (!client) return;
    if (this.inFlight >= (this.opts.maxInFlight ?? 100)) {
      this.skipped++;
      return;
    }
    const now = Date.now();
    const id = `${this.nonce}-${++this.n}`;
    const points: Record<string, number> = {};
    for (const [name, signal] of this.signals) points[name] = Math.round(signal.value(now) * 1000) / 1000;
    this.inFlight++;
    this.published++;
    client.publish(this.topic, JSON.stringify({ id, ts: now, points }), { qos: 1 }, (err) => {
      this.inFlight--;
      if (!err) for (const name of Object.keys(points)) this.acked.push(`${this.opts.deviceId}:${id}:${name}`);
      if (this.inFlight === 0) this.flushIdle();
    });
  }

  /** Stop publishing; wait up to `timeoutMs` for outstanding acknowledgements, then disconnect. */
  async stop(timeoutMs = 5_000): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.inFlight > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, timeoutMs);
        this.idle.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    await this.kill();
  }

  /** Drop the connection at once, as a device that loses power would. */
  async kill(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    const client = this.client;
    this.client = undefined;
    if (client) await new Promise<void>((resolve) => client.end(true, {}, () => resolve()));
  }

  private flushIdle(): void {
    const waiters = this.idle;
    this.idle = [];
    for (const w of waiters) w();
  }
}
