import type { MqttClient, MqttProtocol } from 'mqtt';
import { isIP } from 'node:net';
import { fetchArtifact } from './artifact-fetch.js';
import {
  Backoff,
  cloudTopics,
  connectMqtt,
  errorMessage,
  type Clock,
  type CloudLink,
  type Component,
  type StopOptions,
  type Counter,
  type Gauge,
  type Logger,
  type Metrics,
  type TimerHandle,
} from '../runtime/contracts/index.js';
import { BrokerList, type BrokerTarget } from './broker-list.js';
import { Deliveries, type DeliveryFailure } from './deliveries.js';
import { Downlinks } from './downlinks.js';
import { UplinkGate } from './link-gate.js';
import type { LinkBudget, UsageStore } from './link-budget.js';
import { NetWatch } from './net-watch.js';
import { classifyReasonCode, type Refusal } from './refusals.js';
import type { LinkState, UplinkOptions, UplinkOutbox } from './uplink-options.js';

export type { LinkState, UplinkOptions, UplinkOutbox } from './uplink-options.js';

/** The broker the link is up on or trying: its URL (redacted) and its position in cloud.urls (0: preferred). */
export interface BrokerInUse {
  readonly url: string;
  readonly index: number;
  readonly of: number;
}

/** CONNACK codes that refuse the client itself (3.1.1: 4 bad user name or password, 5 not authorized; 5.0: 0x86, 0x87, 0x8a banned, 0x8c bad authentication method). */
const CONNECT_REFUSALS = new Set([4, 5, 0x86, 0x87, 0x8a, 0x8c]);

/**
 * Drains the outbox to the cloud broker over MQTT, a batch of readings per message.
 *
 * Rows leave the outbox only when the broker acknowledged their batch (PUBACK, or PUBCOMP at
 * QoS 2). One mqtt.js client serves the whole run and resumes its session on every reconnect, so
 * the batches in flight when the link dropped are sent again by mqtt.js itself; at QoS 2 a broker
 * that kept the session delivers each once. Whenever the session is gone (first connection, a
 * broker that lost it, a gateway restart), the outbox is read again from its oldest row: a batch
 * may then arrive twice (the cloud deduplicates by reading id), but none is ever lost.
 *
 * This file keeps the MQTT session: connecting, reconnecting after the backoff or a network change,
 * failing over between the brokers of a cluster (which one: broker-list.ts), closing the link
 * outside the sync windows, and the drain loop. The batches from PUBLISH to
 * acknowledgement are deliveries.ts (which rows go next: batch-picker.ts; how much may be in flight:
 * flight.ts; the message format: uplink-payload.ts); what the link allows (sync windows, rate, daily
 * budget), for batches and for the traffic it is lent to, is link-gate.ts.
 */
export class Uplink implements Component {
  readonly name = 'uplink';
  private client: MqttClient | undefined;
  private readonly downlinks: Downlinks;
  private readonly upListeners: Array<() => void> = [];
  private state: LinkState = 'down';
  private readonly deliveries: Deliveries;
  private retryTimer: TimerHandle | undefined;
  private readonly backoff: Backoff;
  private readonly statusTopic: string;
  private idleWaiters: Array<() => void> = [];
  private readonly gate: UplinkGate;
  private deferTimer: TimerHandle | undefined;
  private deferredUntil = 0;
  /** The broker accepted the current connection (what is lost with it then counts against its batches). */
  private connackSeen = false;
  /** The last connection attempt reached the broker (a failing delivery is then the broker's answer, not the network). */
  private reachable = false;
  /** Why the current connection is being closed, when the gateway or the broker closed it over a batch. */
  private lossRefusal: Refusal | undefined;
  private stallTimer: TimerHandle | undefined;
  /** The broker refused the last CONNECT (credentials, authorization): why, until a connection succeeds. */
  private connectRefused: string | undefined;
  /** QoS 2: the clean first connection is being closed on purpose, to open the session the broker keeps. */
  private reopeningSession = false;
  private readonly netWatch: NetWatch | undefined;
  /** The cloud brokers in order of preference, and which one the current attempt is for. */
  private readonly brokers: BrokerList;
  /** The next broker of a round, tried once the closed connection has been cleaned up. */
  private hop: NodeJS.Immediate | undefined;
  /** When the last connection that was up went down. */
  private downSince: number | undefined;
  /**
   * Downlink subscriptions of this connection: `pending` while the SUBSCRIBE awaits its SUBACK
   * (no batch goes before it, so a broker that closes the connection over the subscription is not
   * taken for one refusing a batch); `skipped` when the last connection was closed over them (the
   * uplink goes on without them; they are tried again after `subscribeBackoff`, between batches).
   */
  private subscription: 'none' | 'pending' | 'done' | 'skipped' = 'none';
  private subscribeRefused: string | undefined;
  private subscribeDue = false;
  private subscribeTimer: TimerHandle | undefined;
  private readonly subscribeBackoff: Backoff;
  private readonly m: { connects: Counter; linkUp: Gauge; broker: Gauge; failovers: Counter };

  constructor(
    private readonly opts: UplinkOptions,
    private readonly outbox: UplinkOutbox,
    private readonly clock: Clock,
    private readonly log: Logger,
    metrics: Metrics,
    usage?: UsageStore,
  ) {
    this.gate = new UplinkGate(opts, clock, (open) => (open ? this.wake() : this.maybeIdle()), usage);
    this.downlinks = new Downlinks(log);
    this.netWatch =
      opts.netWatchMs !== undefined && opts.netWatchMs > 0
        ? new NetWatch(clock, opts.netWatchMs, (addresses) => this.networkChanged(addresses), opts.interfaces)
        : undefined;
    this.backoff = new Backoff(opts.backoff.initialMs, opts.backoff.maxMs, opts.random);
    this.brokers = new BrokerList(opts.urls);
    this.subscribeBackoff = new Backoff(opts.backoff.maxMs, Math.max(opts.backoff.maxMs, 300_000), opts.random);
    this.statusTopic = cloudTopics.status(opts.topicPrefix, opts.gatewayId);
    const topic = cloudTopics.telemetry(opts.topicPrefix, opts.gatewayId);
    this.deliveries = new Deliveries(opts, topic, outbox, this.gate, clock, log, metrics, () => this.pump());
    this.m = {
      connects: metrics.counter('outpost_uplink_connects_total', 'Connections established to the cloud broker'),
      linkUp: metrics.gauge('outpost_uplink_up', '1 while connected to the cloud broker'),
      broker: metrics.gauge('outpost_uplink_broker', '1 for the cloud broker the link is up on (by URL, redacted), 0 for the others', ['url']),
      failovers: metrics.counter('outpost_uplink_failovers_total', 'Connections that came up on another cloud broker than the last one (or, first, than the preferred one)'),
    };
    for (const t of this.brokers.targets) this.m.broker.set(0, { url: t.shown });
  }

  get linkState(): LinkState {
    return this.state;
  }

  /** Bytes spent today and the configured caps. */
  budgetStatus(): ReturnType<LinkBudget['status']> {
    return this.gate.status();
  }

  /**
   * The link's state and what it spent: a section of the gateway's status. `failing`: the broker
   * is reachable but batches keep failing (refused, the connection dropped over them, or never
   * acknowledged); `uplink.failing` says why and since when.
   */
  status(): { link: LinkState | 'failing'; uplink: ReturnType<LinkBudget['status']> & { broker: BrokerInUse; failing?: DeliveryFailure; refused?: string; downlinks?: string } } {
    const failing = this.deliveries.failing();
    const refused: { refused?: string; downlinks?: string } = this.connectRefused !== undefined && this.state !== 'up' ? { refused: this.connectRefused } : {};
    const broker = this.brokerInUse();
    if (this.subscribeRefused !== undefined) refused.downlinks = this.subscribeRefused;
    if (!failing || this.state === 'stopped' || this.state === 'idle') return { link: this.state, uplink: { ...this.gate.status(), broker, ...refused } };
    return { link: this.reachable ? 'failing' : this.state, uplink: { ...this.gate.status(), broker, failing, ...refused } };
  }

  /** The broker the link is up on, or else the one being tried (redacted URL, position in the list). */
  brokerInUse(): BrokerInUse {
    const t = this.brokers.current;
    return { url: t.shown, index: t.index, of: this.brokers.targets.length };
  }

  /** The cloud link as other parts use it: downlink subscriptions and artifact downloads through the link's gate. */
  get cloudLink(): CloudLink {
    return {
      subscribe: (filter, handler) => this.subscribe(filter, handler),
      onLinkUp: (fn) => this.onLinkUp(fn),
      delayMs: () => this.gate.delayMs(),
      closed: () => this.gate.closed(),
      spend: (bytes) => this.gate.spend(bytes),
      download: (target, opts) => fetchArtifact(target, opts),
    };
  }

  async start(): Promise<void> {
    this.gate.start();
    this.netWatch?.start();
    if (this.linkWanted()) this.connect();
    else this.state = 'idle';
    await Promise.resolve();
  }

  /** Called after new rows were committed. */
  notify(): void {
    if (this.state === 'idle') {
      if (this.linkWanted()) this.wake();
      return;
    }
    this.pump();
  }

  /**
   * Messages the cloud sends on `filter` (QoS 1), for releases and commands. Handlers run on the
   * MQTT client's event; one that throws is logged and does not affect the others.
   */
  subscribe(filter: string, handler: (topic: string, payload: Buffer) => void): void {
    this.downlinks.add(filter, handler);
    if (this.state === 'up') this.client?.subscribe(filter, { qos: 1 });
  }

  /** Called each time the link comes up (e.g. to resume downloads at once). */
  onLinkUp(fn: () => void): void {
    this.upListeners.push(fn);
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

  /** With `drainMs`: first delivers what the outbox holds, for that long at most (the rest stays stored). */
  async stop(opts: StopOptions = {}): Promise<void> {
    if (this.state === 'stopped') return;
    if ((opts.drainMs ?? 0) > 0) await this.drained(opts.drainMs!);
    this.state = 'stopped';
    this.gate.stop();
    this.netWatch?.stop();
    this.deliveries.stopped();
    this.endStallCheck();
    this.endSubscribeRetry();
    if (this.hop) clearImmediate(this.hop);
    this.hop = undefined;
    if (this.retryTimer) this.clock.clearTimeout(this.retryTimer);
    if (this.deferTimer) this.clock.clearTimeout(this.deferTimer);
    const client = this.client;
    this.client = undefined;
    this.m.linkUp.set(0);
    if (!client) return;
    if (client.connected) {
      // A clean stop publishes the offline status itself; the last will covers crashes. At most a
      // second for its PUBACK; the timer goes with it, or it would outlive the stop.
      await new Promise<void>((resolve) => {
        const timer = this.clock.setTimeout(resolve, 1000);
        client.publish(this.statusTopic, JSON.stringify({ state: 'offline' }), { qos: 1, retain: true }, () => {
          this.clock.clearTimeout(timer);
          resolve();
        });
      });
    }
    await new Promise<void>((resolve) => client.end(true, {}, () => resolve()));
  }

  /** Inside a sync window (or none configured), or a priority 0 stream has something to send. */
  private linkWanted(): boolean {
    if (this.gate.windowOpen()) return true;
    return this.outbox.stats().streams.some((s) => s.priority === 0 && s.depth > 0);
  }

  private wake(): void {
    if (this.state !== 'idle') return;
    this.brokers.restart();
    if (this.client) this.reopen(this.client);
    else this.connect();
  }

  /** Outside the windows with nothing urgent in flight: close the link until it is wanted again. */
  private maybeIdle(): void {
    const client = this.client;
    if (!this.gate.windowed || this.state !== 'up' || !client || this.deliveries.inFlight > 0 || this.linkWanted()) return;
    this.state = 'idle';
    this.log.info({ nextWindowInMs: this.gate.msToNextWindow() }, 'sync window closed; cloud link closed until the next one');
    client.publish(this.statusTopic, JSON.stringify({ state: 'offline' }), { qos: 1, retain: true }, () => {
      if (this.state === 'idle') client.end(false);
    });
  }

  private isDrained(): boolean {
    return this.deliveries.inFlight === 0 && this.outbox.stats().depth === 0;
  }

  private connect(): void {
    if (this.state === 'stopped') return;
    this.state = 'connecting';
    // One client for the life of the gateway. The first CONNECT starts a clean session (a session
    // left by an earlier run could hold QoS 2 packet ids this run would reuse); every reconnect
    // resumes it, and mqtt.js sends the unacknowledged batches again from its own store: at QoS 2
    // the broker recognizes them and delivers each once.
    const client = connectMqtt(this.brokers.restart().url, {
      clientId: this.opts.clientId,
      protocolVersion: this.opts.protocolVersion,
      ...(this.opts.tls ?? {}),
      username: this.opts.username,
      password: this.opts.password,
      clean: true,
      reconnectPeriod: 0,
      // No table of 65,536 pre-built number buffers in mqtt-packet (8 MiB of heap; see EmbeddedBroker).
      writeCache: false,
      connectTimeout: 10_000,
      keepalive: this.opts.keepaliveS,
      queueQoSZero: false,
      will: { topic: this.statusTopic, payload: Buffer.from(JSON.stringify({ state: 'offline' })), qos: 1, retain: true },
    });
    this.client = client;
    client.on('connect', (connack) => {
      if (this.state === 'stopped') return;
      if (this.opts.qos === 2 && client.options.clean) {
        // That cleared whatever an earlier run left; now open the session the broker keeps
        // (MQTT 3.1.1 keeps no session opened with clean = 1).
        client.options.clean = false;
        this.backoff.reset();
        // Not a failure of what is in flight: the batches are sent again on the session opened next.
        this.connackSeen = false;
        this.reopeningSession = true;
        client.stream.destroy();
        return;
      }
      this.linkUp(client, connack.sessionPresent);
    });
    client.on('message', (topic, payload) => this.downlinks.dispatch(topic, payload));
    client.on('packetreceive', (packet) => {
      if (packet.cmd === 'connack') this.connackSeen = true;
    });
    client.on('error', (err) => {
      // An attempt that fails while another broker of the round is left is no news: the round
      // goes on, and its outcome is what gets logged (the failover, or the last broker's error).
      const attempt = this.brokers.current;
      const quiet = !client.connected && attempt.index < this.brokers.targets.length - 1;
      this.log[quiet ? 'debug' : 'warn']({ err: errorMessage(err), broker: attempt.shown }, 'cloud link error');
      // The broker answered CONNECT with a refusal (bad credentials, not authorized, banned…).
      const code = (err as { code?: unknown }).code;
      if (!client.connected && typeof code === 'number' && CONNECT_REFUSALS.has(code)) this.connectRefused = `CONNACK ${code}: ${errorMessage(err)}`;
      // An error on an open connection is a packet the client could not take (a reason code MQTT
      // does not allow there, a malformed packet): the stream cannot be trusted past it, and the
      // batches in flight would wait for a keepalive timeout. Close it now [MQTT-4.13.1-1].
      if (client === this.client && client.connected && !client.stream.destroyed) {
        this.lossRefusal = { kind: 'poison', reason: `protocol error from the cloud broker: ${errorMessage(err)}` };
        client.stream.destroy();
      }
    });
    client.on('disconnect', (packet) => {
      const code = packet.reasonCode ?? 0;
      this.log.warn({ reasonCode: code, reason: packet.properties?.reasonString }, 'the cloud broker disconnected');
      if (code >= 0x80) this.lossRefusal = classifyReasonCode(code, 'the cloud broker disconnected');
    });
    client.on('close', () => this.linkLost(client));
  }

  private linkUp(client: MqttClient, sessionPresent: boolean): void {
    this.state = 'up';
    const on = this.brokers.current;
    const replaced = this.brokers.connected();
    for (const t of this.brokers.targets) this.m.broker.set(t === on ? 1 : 0, { url: t.shown });
    if (replaced) {
      this.m.failovers.inc();
      const downForMs = this.downSince === undefined ? undefined : this.clock.now() - this.downSince;
      this.log.warn({ from: replaced.shown, to: on.shown, position: on.index + 1, of: this.brokers.targets.length, downForMs }, 'cloud link failed over to another broker');
    }
    this.downSince = undefined;
    this.reachable = true;
    this.connectRefused = undefined;
    this.lossRefusal = undefined;
    this.backoff.reset();
    if (!sessionPresent) this.deliveries.sessionLost();
    this.deliveries.connected();
    this.m.connects.inc();
    this.m.linkUp.set(1);
    // The URL may carry user info (mqtts://user:pass@host): only its redacted form is logged.
    this.log.info({ url: on.shown, sessionPresent }, 'cloud link up');
    client.publish(this.statusTopic, JSON.stringify({ state: 'online' }), { qos: 1, retain: true });
    if (this.subscription === 'skipped') {
      // The last connection was closed over the subscriptions: deliver first, try them later.
      this.subscribeDue = false;
      this.endSubscribeRetry();
      this.subscribeTimer = this.clock.setTimeout(() => {
        this.subscribeTimer = undefined;
        this.subscribeDue = true;
        this.pump();
      }, this.subscribeBackoff.next());
    } else {
      this.subscribeDownlinks(client);
    }
    for (const fn of this.upListeners) {
      try {
        fn();
      } catch (err) {
        this.log.error({ err: errorMessage(err) }, 'link-up listener failed');
      }
    }
    this.pump();
  }

  private linkLost(client: MqttClient): void {
    this.m.linkUp.set(0);
    if (this.state === 'stopped' || this.state === 'idle') return;
    this.endStallCheck();
    const reopening = this.reopeningSession;
    this.endSubscribeRetry();
    if (this.subscription === 'pending') {
      // Closed before the SUBACK, with no batch in flight: the broker would not take the
      // subscriptions (RabbitMQ 3.x, for one, while the node that held this client id's queue is down).
      const first = this.subscribeRefused === undefined;
      this.subscribeRefused = `the cloud broker ${this.brokers.current.shown} closed the connection over the downlink subscriptions; the uplink goes on without them and tries again later`;
      if (first) this.log.warn({ broker: this.brokers.current.shown }, 'the cloud broker closed the connection over the downlink subscriptions; delivering without them, trying again later');
      this.subscription = 'skipped';
    } else if (this.subscription !== 'skipped') {
      this.subscription = 'none';
    }
    // Counted only for connections the broker accepted: a broker out of reach is no poison.
    if (this.connackSeen) this.deliveries.connectionLost(this.lossRefusal);
    else if (!reopening) this.reachable = false;
    this.reopeningSession = false;
    this.connackSeen = false;
    this.lossRefusal = undefined;
    const wasUp = this.state === 'up';
    this.state = 'down';
    if (wasUp) {
      this.downSince = this.clock.now();
      this.m.broker.set(0, { url: this.brokers.current.shown });
    }
    // An attempt that failed (no answer, refused) goes on at once to the next broker of the
    // round; the backoff waits only between rounds. A drop starts the next round at the first.
    if (!wasUp && !reopening) {
      const failed = this.brokers.current;
      const next = this.brokers.advance();
      if (next) {
        this.log.debug({ failed: failed.shown, next: next.shown }, 'cloud broker did not answer; trying the next one');
        // After mqtt.js has finished with the closed connection (this runs inside its 'close').
        this.hop = setImmediate(() => {
          this.hop = undefined;
          if (this.state === 'down') this.reopen(client);
        });
        return;
      }
    }
    // The QoS 2 session is reopened on the broker that just answered.
    if (!reopening) this.brokers.restart();
    const delay = this.backoff.next();
    if (wasUp) this.log.warn({ retryInMs: delay }, 'cloud link down');
    this.retryTimer = this.clock.setTimeout(() => {
      this.retryTimer = undefined;
      if (this.state === 'stopped') return;
      if (!this.linkWanted()) {
        this.state = 'idle';
        return;
      }
      this.reopen(client);
    }, delay);
  }

  /** The host's addresses changed while waiting to reconnect: the link may be back, try now. */
  private networkChanged(addresses: string): void {
    const client = this.client;
    if (this.state !== 'down' || !client || !this.retryTimer) return;
    this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.backoff.reset();
    this.brokers.restart();
    this.log.info({ addresses }, 'network changed; reconnecting now');
    if (this.linkWanted()) this.reopen(client);
    else this.state = 'idle';
  }

  private reopen(client: MqttClient): void {
    this.state = 'connecting';
    this.aim(client, this.brokers.current);
    if (!this.deliveries.takeFreshSession() && this.opts.qos === 2) {
      // Resume: keep the stores, they hold what is in flight.
      client.reconnect({ incomingStore: client.incomingStore, outgoingStore: client.outgoingStore });
    } else {
      // QoS 1, or a session that must not resend what it holds: empty stores, clean session;
      // the outbox is read again from its oldest row.
      client.options.clean = true;
      client.reconnect();
    }
  }

  /**
   * Points the client at `target`: mqtt.js reads where to connect from its options on every
   * (re)connect, so the one client (and its session stores) moves between the brokers.
   */
  private aim(client: MqttClient, target: BrokerTarget): void {
    const o = client.options;
    const tls = this.opts.tls;
    // As mqtt.js does for the URL it was given: a client certificate makes mqtt:// mqtts://.
    o.protocol = (tls?.cert && tls.key && target.protocol === 'mqtt' ? 'mqtts' : target.protocol) as MqttProtocol;
    o.host = target.host;
    o.hostname = target.host;
    // mqtt.js fills in its default port (1883, 8883) when none is set.
    o.port = target.port;
    // The name the broker's certificate is checked against: the configured one, else this host
    // (mqtt.js would otherwise keep the first broker's name for every later one).
    const servername = tls?.servername ?? (isIP(target.host) === 0 ? target.host : undefined);
    if (servername === undefined) delete o.servername;
    else o.servername = servername;
    o.username = target.username ?? this.opts.username;
    o.password = target.password ?? this.opts.password;
  }

  /** Sends what the flight limits allow; wakes drain waiters once the outbox is empty and nothing is in flight. */
  private pump(): void {
    const client = this.client;
    if (this.state !== 'up' || !client) return;
    // A retry of refused subscriptions waits for a moment with no batch in flight.
    if (this.subscribeDue && this.deliveries.inFlight === 0) {
      this.subscribeDue = false;
      this.subscribeDownlinks(client);
    }
    if (this.subscription === 'pending') return;
    for (let next = this.deliveries.next(); next; next = this.deliveries.next()) {
      if ('waitMs' in next) {
        this.deferPump(next.waitMs);
        break;
      }
      this.deliveries.send(client, next.batch);
    }
    this.armStallCheck();
    if (this.deliveries.inFlight === 0) this.maybeIdle();
    if (this.isDrained()) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /**
   * Batches in flight and no acknowledgement for ackTimeoutMs (a broker that drops a message
   * without a word, a connection that stalled): the connection is closed, and the batches count
   * as failed, so that a message the broker never acknowledges is isolated like one it refuses.
   */
  private armStallCheck(): void {
    if (this.stallTimer || this.state !== 'up' || this.deliveries.inFlight === 0) return;
    const limit = this.opts.ackTimeoutMs;
    this.stallTimer = this.clock.setTimeout(
      () => {
        this.stallTimer = undefined;
        const client = this.client;
        if (this.state !== 'up' || !client) return;
        if (this.deliveries.stalledFor(this.clock.now()) < limit) {
          this.armStallCheck();
          return;
        }
        this.lossRefusal = { kind: 'poison', reason: `not acknowledged by the cloud broker within ${limit / 1000} s` };
        this.log.warn({ ackTimeoutMs: limit, inFlight: this.deliveries.inFlight }, 'no acknowledgement from the cloud broker; closing the connection');
        client.stream.destroy();
      },
      Math.max(1, limit - this.deliveries.stalledFor(this.clock.now())),
    );
  }

  /** SUBSCRIBE to the downlink filters; batches wait for the SUBACK (at most ackTimeoutMs). */
  private subscribeDownlinks(client: MqttClient): void {
    const filters = this.downlinks.filters();
    if (filters.length === 0) {
      this.subscription = 'done';
      return;
    }
    this.endSubscribeRetry();
    this.subscription = 'pending';
    const done = (err?: Error | null): void => {
      // mqtt.js fails a pending SUBSCRIBE as its connection closes, before it reports the close:
      // that is for linkLost to judge.
      if (client !== this.client || this.state !== 'up' || this.subscription !== 'pending' || client.stream.destroyed) return;
      this.endSubscribeRetry();
      this.subscription = 'done';
      if (err) {
        this.log.warn({ err: errorMessage(err) }, 'downlink subscriptions not granted');
      } else {
        this.subscribeRefused = undefined;
        this.subscribeBackoff.reset();
      }
      this.pump();
    };
    this.subscribeTimer = this.clock.setTimeout(() => {
      this.subscribeTimer = undefined;
      done(new Error(`no SUBACK within ${this.opts.ackTimeoutMs / 1000} s`));
    }, this.opts.ackTimeoutMs);
    client.subscribe(filters, { qos: 1 }, (err) => done(err));
  }

  private endSubscribeRetry(): void {
    if (this.subscribeTimer) this.clock.clearTimeout(this.subscribeTimer);
    this.subscribeTimer = undefined;
  }

  private endStallCheck(): void {
    if (this.stallTimer) this.clock.clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
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
