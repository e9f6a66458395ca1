import type { IPublishPacket, MqttClient } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import {
  Backoff,
  errorMessage,
  connectMqtt,
  LOCAL_PREFIX,
  redactText,
  redactUrl,
  type Clock,
  type ComponentContext,
  type Counter,
  type Gauge,
  type InboundPublish,
  type Logger,
  type TimerHandle,
} from '../contracts/index.js';
import { SITE_BROKER_FILTERS, type ExternalBrokerConfig } from './config.js';
import type { SiteBroker } from './site-broker.js';


/** Messages being committed at once at most; past it the next packet waits (backpressure to the broker). */
const MAX_IN_FLIGHT = 1000;
/** Payload bytes being committed at once at most (as the embedded broker's default `limits.maxIntakeBytes`). */
const MAX_INTAKE_BYTES = 4 * 1024 * 1024;

/** `done(err)` makes mqtt.js send no PUBACK: the message was not taken (the broker delivers it again). */
const NOT_TAKEN = new Error('site broker intake stopped: not acknowledged, the broker delivers it again');
/** The same, for a message taken: the gateway writes its PUBACK itself once it is committed. */
const NOT_TAKEN_BY_MQTTJS = new Error('acknowledged by the gateway after commit');

/** Messages to children held while the site broker link is down, at most. */
const MAX_WAITING_PUBLISHES = 10_000;

interface Outgoing {
  readonly topic: string;
  readonly payload: string;
  readonly qos: 0 | 1;
  readonly retain: boolean;
}

function send(client: MqttClient, m: Outgoing): Promise<void> {
  return new Promise((resolve, reject) => client.publish(m.topic, m.payload, { qos: m.qos, retain: m.retain }, (err) => (err ? reject(err) : resolve())));
}

/** A handler that throws instead of rejecting counts as a rejection (never as an exception in mqtt.js's packet loop). */
function callSafely(h: (msg: InboundPublish) => Promise<void>, msg: InboundPublish): Promise<void> {
  try {
    return h(msg);
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
}

/** CONNACK codes that refuse the client itself (3.1.1: 4 bad user name or password, 5 not authorized). */
const CONNECT_REFUSALS = new Set([4, 5]);

export interface ExternalBrokerOptions {
  readonly config: ExternalBrokerConfig;
  /** The gateway's id: the default client id is `outpost-{id}-intake`. */
  readonly gatewayId: string;
  /** The PEM contents of config.tls's files, read by the part (a missing file is a config error). */
  readonly tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer; servername?: string; rejectUnauthorized: boolean } | undefined;
  /** For the backoff's jitter (tests). */
  readonly random?: () => number;
}

export type SiteLinkState = 'idle' | 'connecting' | 'up' | 'down' | 'stopped';

type Observed = { readonly topic: string; readonly payload: Buffer; readonly retain: boolean };

/**
 * Child intake from an external site broker (Mosquitto, EMQX, …): the gateway is one MQTT client of
 * it, subscribed at QoS 1 in a persistent session (clean session off, a fixed client id), so that
 * the broker keeps what the gateway has not acknowledged while it is down or restarting.
 *
 * A message is acknowledged (PUBACK to the site broker) only after the interceptors resolved, that
 * is after its readings are committed to the store. A gateway killed before that leaves the message
 * unacknowledged in its session and the broker delivers it again on the next connection
 * [MQTT-4.4.0-1]. When an interceptor rejects (the store cannot take it), nothing more is
 * acknowledged on this connection: it is closed and opened again after the backoff, and the broker
 * redelivers. Messages are committed in groups (many in flight, bounded) and acknowledged in the
 * order they came.
 *
 * The site broker knows the children; the gateway does not: `clientId` of an intercepted message is
 * undefined (MQTT does not carry the publisher), and the site broker's ACLs must hold each device to
 * its own subtree. The link reconnects with backoff (full jitter, capped), reports its state in the
 * status and in metrics, and a broker that refuses or breaks never stops the gateway.
 */
export class ExternalBroker implements SiteBroker {
  readonly name = 'mqtt-broker';
  private client: MqttClient | undefined;
  private state: SiteLinkState = 'idle';
  private since = 0;
  private readonly handlers: Array<(msg: InboundPublish) => Promise<void>> = [];
  private readonly observers: Array<(msg: Observed) => void> = [];
  private readonly backoff: Backoff;
  private retryTimer: TimerHandle | undefined;
  /** Settles once every message taken so far is acknowledged or left for redelivery; awaited when intake stops. */
  private ackChain: Promise<void> = Promise.resolve();
  private inFlight = 0;
  private corked: MqttClient['stream'] | undefined;
  private inFlightBytes = 0;
  /** Messages to children waiting for the link. */
  private readonly outgoing: Array<Outgoing & { resolve: () => void; reject: (err: Error) => void }> = [];
  /** mqtt.js's next packet, held back while too much is being committed. */
  private waiting: Array<() => void> = [];
  /** Set when a message could not be committed: nothing more is acknowledged on this connection. */
  private refusing = false;
  /** A session was opened in this run: a CONNACK without one after it means the broker lost it. */
  private hadSession = false;
  private sessionPresent: boolean | undefined;
  private refused: string | undefined;
  private lastError: string | undefined;
  private connects = 0;
  private acknowledged = 0;
  private notAcknowledged = 0;
  private log: Logger | undefined;
  private clock: Clock | undefined;
  private m: { up: Gauge; connects: Counter; sessionsLost: Counter; messages: Counter } | undefined;

  constructor(private readonly opts: ExternalBrokerOptions) {
    this.backoff = new Backoff(opts.config.backoff.initialMs, opts.config.backoff.maxMs, opts.random);
  }

  get clientId(): string {
    return this.opts.config.clientId ?? `outpost-${this.opts.gatewayId}-intake`;
  }

  get linkState(): SiteLinkState {
    return this.state;
  }

  /** The core starts early, as the embedded broker's does: interceptors are registered; nothing connects yet (`connect`). */
  async start(ctx: ComponentContext): Promise<void> {
    this.log = ctx.log;
    this.clock = ctx.clock;
    this.since = ctx.clock.now();
    this.m = {
      up: ctx.metrics.gauge('outpost_site_broker_up', '1 while connected to the external site broker'),
      connects: ctx.metrics.counter('outpost_site_broker_connects_total', 'Connections established to the external site broker'),
      sessionsLost: ctx.metrics.counter(
        'outpost_site_broker_sessions_lost_total',
        'Reconnections to the site broker that found no session (the broker lost it: what it held for the gateway is gone)',
      ),
      messages: ctx.metrics.counter('outpost_site_broker_messages_total', 'Messages from the site broker, by outcome (acknowledged after commit, or left for redelivery)', ['outcome']),
    };
    this.m.up.set(0);
    await Promise.resolve();
  }

  intercept(handler: (msg: InboundPublish) => Promise<void>): void {
    this.handlers.push(handler);
  }

  observe(handler: (msg: Observed) => void): void {
    this.observers.push(handler);
  }

  /** Opens the link; once everything that takes children's data runs (runtime/parts/broker.ts). */
  connect(): void {
    if (this.state !== 'idle' && this.state !== 'down') return;
    this.setState('connecting');
    const c = this.opts.config;
    const client = connectMqtt(c.url, {
      clientId: this.clientId,
      protocolVersion: 4,
      ...(this.opts.tls ?? {}),
      ...(c.username !== undefined ? { username: c.username } : {}),
      ...(c.password !== undefined ? { password: c.password } : {}),
      // The broker keeps the subscriptions and every QoS 1 message not yet acknowledged across
      // disconnections and gateway restarts [MQTT-3.1.2-4].
      clean: false,
      // Reconnects are ours (backoff with jitter), and so are the subscriptions.
      reconnectPeriod: 0,
      // No table of 65,536 pre-built number buffers in mqtt-packet (8 MiB of heap; see EmbeddedBroker).
      writeCache: false,
      resubscribe: false,
      connectTimeout: 10_000,
      keepalive: c.keepaliveS,
      queueQoSZero: false,
    });
    this.client = client;
    this.refusing = false;
    client.handleMessage = (packet, done) => this.take(client, packet, done);
    client.on('connect', (connack) => this.linkUp(client, connack.sessionPresent));
    client.on('error', (err) => {
      // Error texts may carry the URL: what the status shows goes through the same redaction as the log.
      const message = redactText(errorMessage(err));
      this.lastError = message;
      const code = (err as { code?: unknown }).code;
      if (!client.connected && typeof code === 'number' && CONNECT_REFUSALS.has(code)) {
        // Logged once per refusal streak, not at every retry of the backoff.
        if (this.refused === undefined) this.log?.error({ url: redactUrl(c.url), clientId: this.clientId, code }, `the site broker refused the gateway (${message}): check broker.external.username/password and the broker's ACL`);
        this.refused = `CONNACK ${code}: ${message}`;
      } else this.log?.warn({ err: message }, 'site broker link error');
    });
    client.on('close', () => this.linkLost(client));
  }

  private linkUp(client: MqttClient, sessionPresent: boolean): void {
    if (client !== this.client || this.state === 'stopped') return;
    if (!sessionPresent && this.hadSession) {
      this.m?.sessionsLost.inc();
      this.log?.error({ clientId: this.clientId }, 'the site broker kept no session for the gateway: messages it held while the gateway was away are lost (is its persistence on? did another client take this client id?)');
    }
    this.hadSession = true;
    this.sessionPresent = sessionPresent;
    this.refused = undefined;
    this.connects++;
    this.m?.connects.inc();
    this.m?.up.set(1);
    this.backoff.reset();
    this.setState('up');
    this.log?.info({ url: redactUrl(this.opts.config.url), clientId: this.clientId, sessionPresent }, 'site broker link up');
    for (const w of this.outgoing.splice(0)) send(client, w).then(w.resolve, w.reject);
    // Subscribed on every connection: a broker that lost the session has lost these too.
    client.subscribe(
      [...SITE_BROKER_FILTERS],
      { qos: 1 },
      (err, granted) => {
        if (err) {
          this.log?.warn({ err: errorMessage(err) }, 'subscription to the site broker failed');
          return;
        }
        const refused = (granted ?? []).filter((g) => g.qos !== 1);
        if (refused.length > 0) {
          // 0x80: the broker's ACL does not let the gateway read these; QoS 0: no acknowledgement to hold back.
          this.lastError = `subscriptions not granted at QoS 1: ${refused.map((g) => `${g.topic} (${g.qos === 128 ? 'refused' : `QoS ${g.qos}`})`).join(', ')}`;
          this.log?.error({ granted: refused }, `site broker: ${this.lastError}; give the gateway's user read access to ${LOCAL_PREFIX}/# in the broker's ACL`);
        }
      },
    );
  }

  private linkLost(client: MqttClient): void {
    if (client !== this.client) return;
    this.m?.up.set(0);
    if (this.state === 'stopped') return;
    const wasUp = this.state === 'up';
    this.setState('down');
    const delay = this.backoff.next();
    if (wasUp) this.log?.warn({ retryInMs: delay }, 'site broker link down');
    const clock = this.clock!;
    this.retryTimer = clock.setTimeout(() => {
      this.retryTimer = undefined;
      if (this.state !== 'down' || this.client !== client) return;
      this.setState('connecting');
      this.refusing = false;
      client.reconnect();
    }, delay);
  }

  /**
   * One PUBLISH from the site broker: the interceptors (drivers: validate and commit), then the
   * observers, then the PUBACK. mqtt.js hands a connection's packets over one at a time and would
   * send the PUBACK when `done` is called without an error; the gateway calls it with one (no
   * PUBACK from mqtt.js, the next packet comes at once) and writes the PUBACK itself once the
   * message is committed. Messages of one connection are thus committed together (group commit)
   * while their PUBACKs still leave one by one, in the order the PUBLISHes came [MQTT-4.6.0-2],
   * each only on the connection it came on.
   */
  private take(client: MqttClient, packet: IPublishPacket, done: (err?: Error) => void): void {
    if (this.state === 'stopped' || this.refusing || client !== this.client) {
      done(NOT_TAKEN);
      return;
    }
    const stream = client.stream;
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
    // MQTT does not say who published: the site broker's ACLs answer for that (docs/operations.md).
    const msg: InboundPublish = { clientId: undefined, topic: packet.topic, payload, qos: packet.qos };
    this.inFlight++;
    this.inFlightBytes += payload.length;
    const committed = Promise.all(this.handlers.map((h) => callSafely(h, msg))).then(
      () => true,
      (err: unknown) => {
        // Not stored: no PUBACK for it nor for anything after it on this connection. Closing the
        // connection makes the broker deliver everything unacknowledged again on the next session.
        this.notAcknowledged++;
        this.m?.messages.inc({ outcome: 'not-acknowledged' });
        if (!this.refusing) {
          this.refusing = true;
          this.lastError = `message not committed: ${errorMessage(err)}`;
          this.log?.warn({ topic: packet.topic, err: errorMessage(err) }, 'site broker message not accepted; reconnecting so the broker delivers it again');
          stream.destroy();
        }
        return false;
      },
    );
    // PUBACKs in arrival order: each waits for the ones before it.
    const acked = this.ackChain.then(async () => {
      const ok = await committed;
      this.inFlight--;
      this.inFlightBytes -= payload.length;
      if (!ok) return;
      this.acknowledged++;
      this.m?.messages.inc({ outcome: 'acknowledged' });
      if (packet.qos > 0 && packet.messageId !== undefined && client === this.client && client.stream === stream && !stream.destroyed && !this.refusing) {
        // The PUBACKs of one commit leave in one write.
        if (this.corked !== stream) {
          this.corked = stream;
          stream.cork();
          process.nextTick(() => {
            this.corked = undefined;
            stream.uncork();
          });
        }
        mqttPacket.writeToStream({ cmd: 'puback', messageId: packet.messageId }, stream);
      }
      for (const o of this.observers) {
        try {
          o({ topic: packet.topic, payload, retain: packet.retain });
        } catch (err) {
          this.log?.error({ topic: packet.topic, err: errorMessage(err) }, 'site broker message observer failed');
        }
      }
      this.admitWaiting();
    });
    this.ackChain = acked.catch((err: unknown) => this.log?.error({ err: errorMessage(err) }, 'site broker acknowledgement failed'));
    // Bounded: past MAX_IN_FLIGHT messages or MAX_INTAKE_BYTES of payload being committed, the next packet is
    // read only once the oldest is acknowledged (TCP holds the rest back at the broker).
    if (this.inFlight < MAX_IN_FLIGHT && this.inFlightBytes < MAX_INTAKE_BYTES) done(NOT_TAKEN_BY_MQTTJS);
    else this.waiting.push(() => done(NOT_TAKEN_BY_MQTTJS));
  }

  private admitWaiting(): void {
    while (this.waiting.length > 0 && this.inFlight < MAX_IN_FLIGHT && this.inFlightBytes < MAX_INTAKE_BYTES) this.waiting.shift()!();
  }

  /**
   * A message from the gateway to children, through the site broker. While the link is not up it
   * waits in memory (at most MAX_WAITING_PUBLISHES, then refused) and goes out once it is: the
   * registry republishes every child's desired document at start, before the link opens.
   */
  publish(topic: string, payload: string, qos: 0 | 1, retain: boolean): Promise<void> {
    if (this.state === 'stopped') return Promise.reject(new Error(`the site broker link is stopped: ${topic} not published`));
    const client = this.client;
    if (client && this.state === 'up') return send(client, { topic, payload, qos, retain });
    if (this.outgoing.length >= MAX_WAITING_PUBLISHES) {
      return Promise.reject(new Error(`the site broker is not connected (${this.state}) and ${MAX_WAITING_PUBLISHES} messages already wait for it: ${topic} not published`));
    }
    return new Promise((resolve, reject) => this.outgoing.push({ topic, payload, qos, retain, resolve, reject }));
  }

  /**
   * Intake stops first: no message is taken from now on (what arrives stays unacknowledged in the
   * session); the one being committed is finished and acknowledged; then the connection closes.
   */
  async stopIntake(): Promise<void> {
    if (this.state === 'stopped') return;
    this.setState('stopped');
    if (this.retryTimer) this.clock?.clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    for (const w of this.outgoing.splice(0)) w.reject(new Error(`the gateway is stopping: ${w.topic} not published to the site broker`));
    // What is waiting for its turn is not taken; what was taken is committed and acknowledged.
    for (const w of this.waiting.splice(0)) w();
    await this.ackChain;
    const client = this.client;
    this.m?.up.set(0);
    if (!client) return;
    // end(false) lets the last PUBACK out; a broker that does not answer does not hold the stop.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => client.end(true, {}, () => resolve()), 2000);
      client.end(false, {}, () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  async stop(): Promise<void> {
    await this.stopIntake();
  }

  status(): Record<string, unknown> {
    return {
      siteBroker: {
        url: redactUrl(this.opts.config.url),
        clientId: this.clientId,
        state: this.state,
        since: this.since,
        ...(this.sessionPresent !== undefined ? { sessionPresent: this.sessionPresent } : {}),
        connects: this.connects,
        acknowledged: this.acknowledged,
        notAcknowledged: this.notAcknowledged,
        ...(this.refused !== undefined && this.state !== 'up' ? { refused: this.refused } : {}),
        ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
      },
    };
  }

  private setState(state: SiteLinkState): void {
    if (this.state === state) return;
    this.state = state;
    this.since = this.clock?.now() ?? Date.now();
  }
}
