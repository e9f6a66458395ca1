import mqtt, { type MqttClient } from 'mqtt';
import { performance } from 'node:perf_hooks';
import { deriveDeviceKey } from '../runtime/contracts/index.js';
import { decodeUplinkPayload } from '../runtime/contracts/uplink-payload.js';

/** The one point every benchmark message carries: one message is one reading at the cloud. */
export const POINT = 'flow_rate_m3h';
/** Device id prefix of the load; readings of other devices (the probe) are not counted. */
const DEVICE_PREFIX = 'bench-';
const PROBE_DEVICE = 'probe';

function telemetryTopic(device: string): string {
  return `outpost/v1/dev/${device}/telemetry`;
}

/** Reading id as the gateway derives it from a child message id (docs/topics.md). */
function readingId(device: string, messageId: string | number, point: string): string {
  return `${device}:${messageId}:${point}`;
}

/** ~95 bytes of the documented child contract; the value varies so payloads are not identical. */
function payload(n: number): string {
  return `{"id":${n},"ts":${Date.now()},"points":{"${POINT}":{"value":${(n % 997) + 0.25},"quality":"good"}}}`;
}

/**
 * The enrollment group secret of benchmark gateways: every simulated device authenticates with
 * its derived key, as on a real site (brokers without authentication ignore the credentials).
 */
export const BENCH_GROUP_SECRET = 'outpost-bench-group-secret-0001';

/** The site config section that lets the benchmark's devices in. */
export const benchIdentities = { groups: [{ name: 'bench', secret: BENCH_GROUP_SECRET }] };

/** A device's MQTT credentials in the benchmark group: its id is its client id and username. */
export function benchCredentials(deviceId: string): { clientId: string; username: string; password: string } {
  return { clientId: deviceId, username: deviceId, password: deriveDeviceKey(BENCH_GROUP_SECRET, deviceId) };
}

/** How devices reach the site broker: credentials (default: derived keys) and TLS trust. */
export interface DeviceAccess {
  /** No credentials: for a broker that lets anonymous clients in (a baseline without authentication). */
  readonly anonymous?: boolean;
  /** PEM of the site broker's TLS certificate (mqtts:// URLs). */
  readonly ca?: string;
}

function connect(url: string, clientId: string, access: DeviceAccess = {}, timeoutMs = 10_000, clean = true): Promise<MqttClient> {
  // Reconnecting like a real device: the gateway closes a connection whose message it could not
  // store, and mqtt.js then resends what was not acknowledged.
  const client = mqtt.connect(url, {
    ...(access.anonymous ? { clientId } : benchCredentials(clientId)),
    ...(access.ca ? { ca: access.ca } : {}),
    clean,
    reconnectPeriod: 500,
    connectTimeout: 5_000,
    keepalive: 30,
  });
  return new Promise((resolve, reject) => {
    const fail = (err: Error): void => {
      clearTimeout(timer);
      // Without this the client would keep reconnecting and hold the process open.
      client.end(true);
      reject(err);
    };
    const timer = setTimeout(() => fail(new Error(`${clientId}: no CONNACK from ${url} within ${timeoutMs} ms`)), timeoutMs);
    client.once('error', fail);
    client.once('connect', () => {
      clearTimeout(timer);
      client.off('error', fail);
      client.on('error', () => undefined);
      resolve(client);
    });
  });
}

export interface LoadOptions {
  readonly url: string;
  readonly publishers: number;
  /** Unacknowledged messages across all publishers. */
  readonly inFlight: number;
  readonly messages: number;
  readonly access?: DeviceAccess;
  /**
   * Message `n` of publisher `publisher`: its payload (the child contract, `id` = n) and the one
   * point it carries. Default: the ~95-byte `flow_rate_m3h` message.
   */
  readonly message?: (publisher: number, n: number) => { readonly payload: string; readonly point: string };
}

/**
 * Child devices that publish a fixed number of QoS 1 messages as fast as their window of
 * unacknowledged messages allows: a closed loop, so the rate is what the path behind the broker
 * sustains, not a rate we chose. A message counts as acked only when its PUBACK arrived.
 */
export class LoadGenerator {
  private readonly clients: MqttClient[] = [];
  /** Reading ids whose message was acknowledged: what must arrive at the cloud. */
  readonly ackedIds: string[] = [];
  published = 0;
  failed = 0;
  reconnects = 0;
  lastAckAt = 0;
  private settledCount = 0;

  constructor(private readonly opts: LoadOptions) {}

  get acked(): number {
    return this.ackedIds.length;
  }

  get settled(): boolean {
    return this.settledCount >= this.opts.messages;
  }

  async connect(): Promise<void> {
    for (let i = 0; i < this.opts.publishers; i++) {
      const client = await connect(this.opts.url, `${DEVICE_PREFIX}${i}`, this.opts.access);
      client.on('reconnect', () => this.reconnects++);
      this.clients.push(client);
    }
  }

  /** Starts every publisher; progress is read from the counters. */
  start(): void {
    const { publishers, inFlight, messages } = this.opts;
    this.clients.forEach((client, i) => {
      // Spread the remainders so every message and every in-flight slot is used.
      const share = Math.floor(messages / publishers) + (i < messages % publishers ? 1 : 0);
      const window = Math.max(1, Math.floor(inFlight / publishers) + (i < inFlight % publishers ? 1 : 0));
      this.publisher(client, i, share, window);
    });
  }

  private publisher(client: MqttClient, index: number, share: number, window: number): void {
    const device = `${DEVICE_PREFIX}${index}`;
    const topic = telemetryTopic(device);
    const message = this.opts.message ?? ((_: number, n: number) => ({ payload: payload(n), point: POINT }));
    let next = 0;
    let inFlight = 0;
    const pump = (): void => {
      while (inFlight < window && next < share) {
        const n = next++;
        const m = message(index, n);
        inFlight++;
        this.published++;
        client.publish(topic, m.payload, { qos: 1 }, (err) => {
          inFlight--;
          this.settledCount++;
          if (err) this.failed++;
          else {
            this.ackedIds.push(readingId(device, n, m.point));
            this.lastAckAt = performance.now();
          }
          pump();
        });
      }
    };
    pump();
  }

  async close(): Promise<void> {
    await Promise.all(this.clients.splice(0).map((c) => c.endAsync(true)));
  }
}

/** Consumers started by this process: each gets a client id (and session) of its own. */
let consumers = 0;

/**
 * The cloud-side consumer of a benchmark: counts unique reading ids on the cloud broker, from the
 * gateway's uplink batches (`batches`) or from child messages forwarded as they are by a bridge
 * (`messages`). Both modes do the same work per reading (a JSON parse and a Set insert), so the
 * consumer costs the two paths alike; it stamps the arrival of every new reading.
 */
export class CloudCounter {
  private client: MqttClient | undefined;
  private readonly ids = new Set<string>();
  received = 0;
  rejected = 0;
  probeSeen = false;
  lastArrivalAt = 0;
  /** Times the consumer lost its connection (its session keeps what arrived meanwhile). */
  reconnects = 0;

  constructor(
    private readonly url: string,
    private readonly mode: 'batches' | 'messages',
  ) {}

  get unique(): number {
    return this.ids.size;
  }

  get duplicates(): number {
    return this.received - this.ids.size;
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }

  async start(): Promise<void> {
    // A persistent session, as a cloud consumer has: if this process is starved long enough for
    // the broker to drop the connection, the broker keeps what arrives meanwhile.
    const client = await connect(this.url, `bench-cloud-consumer-${process.pid}-${(consumers += 1)}`, {}, 10_000, false);
    this.client = client;
    client.on('reconnect', () => this.reconnects++);
    client.on('message', (topic, buf) => {
      if (this.mode === 'batches') this.onBatch(buf);
      else this.onMessage(topic, buf);
    });
    await client.subscribeAsync(this.mode === 'batches' ? 'outpost/v1/gw/+/telemetry' : 'outpost/v1/dev/+/telemetry', { qos: 1 });
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client) await client.endAsync(true);
  }

  private record(id: string): void {
    if (!id.startsWith(DEVICE_PREFIX)) {
      if (id.startsWith(`${PROBE_DEVICE}:`)) this.probeSeen = true;
      return;
    }
    this.received++;
    if (this.ids.has(id)) return;
    this.ids.add(id);
    this.lastArrivalAt = performance.now();
  }

  private onBatch(buf: Buffer): void {
    const batch = parse(buf) as { readings?: unknown } | undefined;
    if (!batch || !Array.isArray(batch.readings)) {
      this.rejected++;
      return;
    }
    for (const r of batch.readings as unknown[]) {
      const id = (r as { id?: unknown } | null)?.id;
      if (typeof id === 'string') this.record(id);
      else this.rejected++;
    }
  }

  private onMessage(topic: string, buf: Buffer): void {
    const device = topic.split('/')[3];
    const msg = parse(buf) as { id?: unknown; points?: unknown } | undefined;
    if (!device || !msg || (typeof msg.id !== 'number' && typeof msg.id !== 'string') || typeof msg.points !== 'object' || !msg.points) {
      this.rejected++;
      return;
    }
    for (const point of Object.keys(msg.points)) this.record(readingId(device, msg.id, point));
  }
}

function parse(buf: Buffer): unknown {
  try {
    return decodeUplinkPayload(buf);
  } catch {
    return undefined;
  }
}

/**
 * Proves the whole path is up (gateway uplink or bridge connected, consumer subscribed) before the
 * clock starts: a probe device publishes until the consumer saw its reading. Its id repeats, so
 * resends deduplicate, and it is not counted with the load.
 */
export async function awaitPath(
  url: string,
  counter: { readonly probeSeen: boolean },
  timeoutMs: number,
  access: DeviceAccess = {},
  /** The probe's message; one that the path's rules pass when they filter (default: value 1). */
  probe = `{"id":"probe","points":{"${POINT}":1}}`,
): Promise<void> {
  const client = await connect(url, PROBE_DEVICE, access);
  try {
    const deadline = Date.now() + timeoutMs;
    while (!counter.probeSeen) {
      if (Date.now() > deadline) throw new Error(`the path to the cloud consumer was not up within ${timeoutMs} ms`);
      client.publish(telemetryTopic(PROBE_DEVICE), probe, { qos: 1 });
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await client.endAsync(true);
  }
}
