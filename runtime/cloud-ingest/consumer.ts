import mqtt, { type IClientOptions, type MqttClient, type Packet } from 'mqtt';
import { Backoff, errorMessage, redactUrl, type Logger } from '../contracts/index.js';
import { decodeBatch, telemetryGateway, type IngestReading, type RefusalReason } from './decode.js';
import { RowsRefusedError } from './pg-sink.js';

/** Where the readings go; resolves with how many were new, only once they are committed. */
export interface ReadingSink {
  write(gateway: string, readings: readonly IngestReading[]): Promise<number>;
}

export interface ConsumerOptions {
  readonly brokers: readonly string[];
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  /** PEM text of the certificate(s) to trust for mqtts:// and wss://. */
  readonly caText?: string | undefined;
  readonly prefix: string;
  readonly shareGroup?: string | undefined;
  readonly clientId: string;
  /** MQTT sessions, each writing one batch at a time. */
  readonly concurrency: number;
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
}

export interface IngestFigures {
  /** Uplink messages taken (stored or refused) and acknowledged. */
  batches: number;
  /** Readings in the batches stored (duplicates included; the gateway's `$` records not). */
  readings: number;
  /** Rows the readings added: `readings - rows` arrived before (redelivery, a resend). */
  rows: number;
  /** The gateway's own records (points starting with `$`), skipped. */
  records: number;
  /** Messages refused, by reason; each was acknowledged so that it does not block the queue. */
  refused: Record<RefusalReason, number>;
  /** Database writes that failed and were tried again. */
  retries: number;
  /** Sessions connected and subscribed now. */
  connected: number;
  /** The broker each of those is on (URLs without user info): in a cluster, the node to watch. */
  brokers: string[];
  /** Connections made (the first of each session included). */
  connects: number;
}

const REFUSAL_REASONS: readonly RefusalReason[] = ['topic', 'not-decodable', 'schema', 'gateway-mismatch', 'database'];

/**
 * The reference cloud consumer: persistent MQTT sessions (clean session 0, a fixed client id)
 * subscribed at QoS 1 to every gateway's telemetry, each batch written to the sink before its
 * PUBACK. mqtt.js hands a session's messages to `handleMessage` one at a time and sends the PUBACK
 * when its callback runs, in order [MQTT-4.6.0-2]; a batch whose write has not committed is never
 * acknowledged, so the broker delivers it again after a crash or a lost connection, and the
 * sink's primary key makes that harmless.
 */
export class CloudIngestConsumer {
  private readonly figures_: IngestFigures = {
    batches: 0,
    readings: 0,
    rows: 0,
    records: 0,
    refused: Object.fromEntries(REFUSAL_REASONS.map((r) => [r, 0])) as Record<RefusalReason, number>,
    retries: 0,
    connected: 0,
    connects: 0,
    brokers: [],
  };
  private readonly sessions: Session[] = [];
  private draining = false;
  /** Wakes the database retry waits when draining starts. */
  private readonly drainAbort = new AbortController();
  private readonly logThrottle = new Map<string, number>();

  constructor(
    private readonly opts: ConsumerOptions,
    private readonly sink: ReadingSink,
    private readonly log: Logger,
  ) {}

  /** The subscription filter: every gateway's telemetry, shared when a group is given. */
  get filter(): string {
    const base = `${this.opts.prefix}/v1/gw/+/telemetry`;
    return this.opts.shareGroup ? `$share/${this.opts.shareGroup}/${base}` : base;
  }

  figures(): IngestFigures {
    const on = this.sessions.filter((s) => s.connected);
    return { ...this.figures_, refused: { ...this.figures_.refused }, connected: on.length, brokers: on.map((s) => redactUrl(s.url)) };
  }

  /** Opens the sessions; each connects (and reconnects, with backoff) on its own. */
  start(): void {
    for (let i = 0; i < this.opts.concurrency; i++) {
      const clientId = this.opts.concurrency === 1 ? this.opts.clientId : `${this.opts.clientId}-${i + 1}`;
      const session = new Session(clientId, this.opts, this.log.child({ session: clientId }), {
        filter: this.filter,
        handle: (topic, payload) => this.handle(topic, payload),
        connected: () => this.figures_.connects++,
        isDraining: () => this.draining,
      });
      this.sessions.push(session);
      session.connect();
    }
  }

  /**
   * Stops taking messages, lets the batches being written commit and be acknowledged, then closes
   * the sessions (their subscriptions stay with the broker, which keeps what arrives meanwhile).
   * A batch that cannot be committed (the database is away) is left unacknowledged.
   */
  async drain(): Promise<void> {
    this.draining = true;
    this.drainAbort.abort();
    await Promise.all(this.sessions.map((s) => s.close()));
  }

  /** One uplink message: resolves when it may be acknowledged; rejects when it must not be. */
  private async handle(topic: string, payload: Buffer): Promise<void> {
    const gateway = telemetryGateway(this.opts.prefix, topic);
    if (gateway === undefined) return this.refuse('topic', topic, `not a telemetry topic under ${this.opts.prefix}/v1/gw/`);
    const decoded = decodeBatch(gateway, payload);
    if (!decoded.ok) return this.refuse(decoded.reason, topic, decoded.detail);
    const backoff = new Backoff(this.opts.backoff?.initialMs ?? 200, this.opts.backoff?.maxMs ?? 10_000);
    for (;;) {
      try {
        const rows = await this.sink.write(decoded.gateway, decoded.readings);
        this.figures_.batches++;
        this.figures_.readings += decoded.readings.length;
        this.figures_.rows += rows;
        this.figures_.records += decoded.records;
        return;
      } catch (err) {
        // The data itself was refused: trying again would block this gateway's queue for ever.
        if (err instanceof RowsRefusedError) return this.refuse('database', topic, errorMessage(err));
        this.figures_.retries++;
        if (this.draining) throw new Error('draining: the batch is left to the broker, unacknowledged', { cause: err });
        const delay = backoff.next();
        this.throttled('db', () => this.log.warn({ err: errorMessage(err), retryInMs: delay, retries: this.figures_.retries }, 'database write failed; the batch waits unacknowledged and is tried again'));
        await sleep(delay, this.drainAbort.signal);
        if (this.draining) throw new Error('draining: the batch is left to the broker, unacknowledged', { cause: err });
      }
    }
  }

  private refuse(reason: RefusalReason, topic: string, detail: string): void {
    this.figures_.batches++;
    this.figures_.refused[reason]++;
    // A gateway sending garbage sends a lot of it: one line per reason per 10 s, with the count.
    this.throttled(`refused:${reason}`, () => this.log.warn({ topic, reason, detail, refused: this.figures_.refused[reason] }, 'uplink message refused (acknowledged, not stored)'));
  }

  private throttled(key: string, write: () => void): void {
    const now = Date.now();
    if ((this.logThrottle.get(key) ?? 0) > now) return;
    this.logThrottle.set(key, now + 10_000);
    write();
  }
}

interface SessionHooks {
  readonly filter: string;
  readonly handle: (topic: string, payload: Buffer) => Promise<void>;
  readonly connected: () => void;
  readonly isDraining: () => boolean;
}

/**
 * One persistent MQTT session. A new mqtt.js client per connection attempt, each on the next of
 * the broker URLs (the nodes of one cluster), after a backoff with full jitter; the session itself
 * lives at the broker under the fixed client id, so any node of a cluster resumes it.
 */
class Session {
  private client: MqttClient | undefined;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** The message being written, if any (handleMessage takes one at a time). */
  private inFlight: Promise<void> | undefined;
  private readonly backoff: Backoff;
  connected = false;
  /** The broker of the current (or last) connection attempt. */
  url = '';

  constructor(
    private readonly clientId: string,
    private readonly opts: ConsumerOptions,
    private readonly log: Logger,
    private readonly hooks: SessionHooks,
  ) {
    this.backoff = new Backoff(opts.backoff?.initialMs ?? 200, opts.backoff?.maxMs ?? 10_000);
  }

  connect(): void {
    if (this.closed) return;
    const url = this.opts.brokers[this.attempt % this.opts.brokers.length]!;
    this.url = url;
    this.attempt++;
    const options: IClientOptions = {
      clientId: this.clientId,
      // MQTT 3.1.1 clean session 0: the broker keeps the subscription and every QoS 1 message
      // for it while the consumer is away (crashed, restarting, moving to another node).
      protocolVersion: 4,
      clean: false,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      keepalive: 30,
      ...(this.opts.username !== undefined ? { username: this.opts.username } : {}),
      ...(this.opts.password !== undefined ? { password: this.opts.password } : {}),
      ...(this.opts.caText !== undefined ? { ca: this.opts.caText } : {}),
    };
    const client = mqtt.connect(url, options);
    this.client = client;
    // The PUBACK of a message goes when the callback runs: only after its batch committed. A
    // message that must not be acknowledged (draining with the database away) gets no callback:
    // the session stalls there, and the broker delivers it again on the next connection.
    client.handleMessage = (packet: Packet, callback: (err?: Error) => void) => {
      if (packet.cmd !== 'publish') return callback();
      if (this.hooks.isDraining()) return;
      const topic = packet.topic;
      const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
      const work = this.hooks.handle(topic, payload).then(
        () => {
          if (client === this.client && !client.disconnecting) callback();
        },
        (err: unknown) => this.log.info({ err: errorMessage(err) }, 'batch left unacknowledged'),
      );
      this.inFlight = work.finally(() => (this.inFlight = undefined));
    };
    client.on('connect', (connack) => {
      this.backoff.reset();
      this.hooks.connected();
      this.log.info({ url: redactUrl(url), sessionPresent: connack.sessionPresent }, 'connected');
      // Subscribing again on a session that has the subscription changes nothing; on a new one
      // (first start, a broker that lost it) it is what starts the flow.
      client.subscribe(this.hooks.filter, { qos: 1 }, (err, granted) => {
        const refused = granted?.find((g) => g.qos === 128);
        // Connected counts from here: the session receives (a broker keeps nothing for a
        // subscription it has not made yet, so a first start is ready only now).
        if (!err && !refused && client === this.client && client.connected) this.connected = true;
        if (err || refused) {
          this.log.error(
            { filter: this.hooks.filter, err: err ? errorMessage(err) : 'SUBACK 0x80' },
            `the broker refused the subscription${this.hooks.filter.startsWith('$share/') ? ' (does it support shared subscriptions? leave --share-group off for brokers that do not)' : ''}; check the consumer's permissions`,
          );
        }
      });
    });
    client.on('error', (err) => {
      this.log.warn({ url: redactUrl(url), err: errorMessage(err) }, connectionHint(err));
    });
    client.on('close', () => {
      const was = this.connected;
      this.connected = false;
      if (this.closed || client !== this.client) return;
      client.end(true);
      const delay = this.backoff.next();
      this.log.warn({ url: redactUrl(url), retryInMs: delay }, was ? 'connection lost; reconnecting' : 'could not connect; trying the next broker');
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        this.connect();
      }, delay);
    });
  }

  /** Lets the message being written finish (and be acknowledged), then disconnects. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await this.inFlight;
    const client = this.client;
    if (!client) return;
    // A clean DISCONNECT after the last PUBACK; a connection that does not close in time is cut
    // (what it had not acknowledged is delivered again, and stored once).
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([client.endAsync(false), new Promise((resolve) => (timer = setTimeout(resolve, 5_000)))]);
    clearTimeout(timer);
    if (!client.disconnected) client.end(true);
  }
}

/** What a connection error means for the operator, and what to do about it. */
export function connectionHint(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  if (code === 4 || code === 5 || code === 134 || code === 135) {
    return 'the broker refused the credentials: check --username and --password-file (OUTPOST_INGEST_USERNAME, OUTPOST_INGEST_PASSWORD) and the broker\'s ACL';
  }
  if (code === 2 || code === 133) return 'the broker refused the client id: give each consumer its own --client-id';
  if (typeof code === 'string' && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME/.test(code)) {
    return "the broker's certificate is not trusted: give the CA that signed it with --ca (OUTPOST_INGEST_CA)";
  }
  return 'broker connection error';
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
