import { Aedes } from 'aedes';
import mqtt, { type MqttClient } from 'mqtt';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { uplinkBatchSchema } from '../runtime/contracts/topics.js';
import { decodeUplinkPayload } from '../runtime/contracts/uplink-payload.js';
import { DeliveryLedger } from './ledger.js';
import { CloudTwins } from './cloud-twins.js';

/** Decodes one uplink message into the ledger; false when it breaks the published contract. */
function ingest(ledger: DeliveryLedger, payload: Buffer): boolean {
  let json: unknown;
  try {
    json = decodeUplinkPayload(payload);
  } catch {
    ledger.rejected++;
    return false;
  }
  const batch = uplinkBatchSchema.safeParse(json);
  if (!batch.success) {
    ledger.rejected++;
    return false;
  }
  ledger.recordBatch(batch.data.gateway, batch.data.readings);
  return true;
}

/**
 * A simulated cloud: an MQTT broker on loopback whose ingestion records every uplink batch in a
 * ledger before the broker acknowledges it, as a cloud that persists before PUBACK would. It can be
 * stopped and started again on the same port to take the cloud away mid-run.
 */
export class SimCloud {
  readonly ledger = new DeliveryLedger();
  /** Retained status per gateway (`online` / `offline`). */
  readonly status = new Map<string, string>();
  private aedes: Aedes | undefined;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private boundPort = 0;

  /** The cloud side of twins, configurations and calls (its records come in with the batches). */
  readonly twins: CloudTwins;

  /**
   * When set, only clients presenting these credentials connect (CONNACK 4, bad user name or
   * password, for the others); may be changed while running (a credential rotation at the cloud).
   */
  credentials: { username: string; password: string } | undefined;

  private constructor(private readonly prefix: string) {
    this.twins = new CloudTwins(prefix, (topic, payload, retain) => this.publish(topic, payload, retain));
    this.ledger.onRecord = (gateway, r) => this.twins.record(gateway, r);
  }

  static async start(opts: { port?: number; topicPrefix?: string; credentials?: { username: string; password: string } } = {}): Promise<SimCloud> {
    const cloud = new SimCloud(opts.topicPrefix ?? 'outpost');
    cloud.credentials = opts.credentials;
    await cloud.listen(opts.port ?? 0);
    return cloud;
  }

  get port(): number {
    return this.boundPort;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.boundPort}`;
  }

  get running(): boolean {
    return this.server !== undefined;
  }

  async start(): Promise<void> {
    if (!this.server) await this.listen(this.boundPort);
  }

  /** Publishes a retained QoS 1 message from the cloud side (releases, commands). */
  publishRetained(topic: string, payload: string): Promise<void> {
    return this.publish(topic, payload, true);
  }

  /** Publishes a QoS 1 message from the cloud side. */
  publish(topic: string, payload: string, retain: boolean): Promise<void> {
    const aedes = this.aedes;
    if (!aedes) return Promise.reject(new Error('cloud broker not running'));
    return new Promise((resolve, reject) => {
      aedes.publish({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, retain, dup: false }, (err) => (err ? reject(err) : resolve()));
    });
  }

  /** The broker goes away: the port closes and every connection is dropped. */
  async stop(): Promise<void> {
    const server = this.server;
    const aedes = this.aedes;
    this.server = undefined;
    this.aedes = undefined;
    if (!server || !aedes) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await closed;
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
  }

  private async listen(port: number): Promise<void> {
    const aedes = await Aedes.createBroker();
    const telemetry = new RegExp(`^${this.prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/v1/gw/([^/]+)/(telemetry|status)$`);
    const record = (topic: string, raw: Buffer | string): void => {
      const m = telemetry.exec(topic);
      const payload = Buffer.isBuffer(raw) ? raw : Buffer.from(raw);
      if (m?.[2] === 'telemetry') ingest(this.ledger, payload);
      else if (m?.[2] === 'status' && m[1]) {
        try {
          this.status.set(m[1], String((JSON.parse(payload.toString('utf8')) as { state?: unknown }).state));
        } catch {
          this.ledger.rejected++;
        }
      }
    };
    // QoS 0/1: recorded before the broker acknowledges, as a cloud that persists before PUBACK.
    aedes.authenticate = (_client, username, password, callback) => {
      const want = this.credentials;
      if (!want || (username === want.username && password?.toString() === want.password)) return callback(null, true);
      callback(Object.assign(new Error('bad user name or password'), { returnCode: 4 as const }), false);
    };
    aedes.authorizePublish = (_client, packet, callback) => {
      if (packet.qos < 2) record(packet.topic, packet.payload);
      callback(null);
    };
    // QoS 2: recorded when the broker publishes it, which it does once per packet id (a resent
    // PUBLISH of a session it kept is recognized and not published again).
    aedes.on('publish', (packet, client) => {
      if (client && packet.qos === 2) record(packet.topic, packet.payload);
    });
    const server = createServer((socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      aedes.handle(socket);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.boundPort = (server.address() as AddressInfo).port;
    this.server = server;
    this.aedes = aedes;
  }
}

/**
 * A cloud-side consumer of any MQTT broker (Mosquitto in the interoperability tests): a persistent
 * session (clean: false) subscribed at QoS 1 to every gateway's telemetry, so a broker restart
 * with persistence loses nothing on the way to it.
 */
export class CloudConsumer {
  readonly ledger = new DeliveryLedger();
  private client: MqttClient | undefined;

  constructor(
    private readonly url: string,
    private readonly prefix = 'outpost',
    private readonly clientId = `cloud-consumer-${process.pid}`,
  ) {}

  async start(): Promise<void> {
    const client = mqtt.connect(this.url, { clientId: this.clientId, clean: false, reconnectPeriod: 200, connectTimeout: 5_000 });
    this.client = client;
    client.on('error', () => undefined);
    client.on('message', (_topic, payload) => {
      ingest(this.ledger, payload);
    });
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    await client.subscribeAsync(`${this.prefix}/v1/gw/+/telemetry`, { qos: 1 });
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client) await client.endAsync(true);
  }
}
