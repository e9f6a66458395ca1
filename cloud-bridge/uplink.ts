import mqtt, { type MqttClient } from 'mqtt';
import { fetchArtifact } from './artifact-fetch.js';
import {
  Backoff,
  cloudTopics,
  errorMessage,
  type Clock,
  type CloudLink,
  type Component,
  type StopOptions,
  type Counter,
  type Gauge,
  type Logger,
  type Metrics,
  type Outbox,
  type TimerHandle,
} from '../runtime/contracts/index.js';
import { Downlinks } from './downlinks.js';
import { FlightControl } from './flight.js';
import type { LinkBudget, UsageStore } from './link-budget.js';
import { CloudLinkGate } from './link-gate.js';
import { NetWatch } from './net-watch.js';
import { DrainCursors } from './drain-cursors.js';
import { PoisonGuard, type SentBatch } from './poison-guard.js';
import { BatchPicker } from './batch-picker.js';
import type { UplinkOptions } from './uplink-options.js';
import { encodeBatch } from './uplink-payload.js';

export type { UplinkOptions } from './uplink-options.js';


/** `idle`: outside every sync window, the link is closed on purpose. */
export type LinkState = 'connecting' | 'up' | 'down' | 'idle' | 'stopped';

/**
 * Drains the outbox to the cloud broker over MQTT, a batch of readings per message.
 *
 * Rows leave the outbox only when the broker acknowledged their batch (PUBACK, or PUBCOMP at
 * QoS 2). One mqtt.js client serves the whole run and resumes its session on every reconnect, so
 * the batches in flight when the link dropped are sent again by mqtt.js itself; at QoS 2 a broker
 * that kept the session delivers each once. Whenever the session is gone (first connection, a
 * broker that lost it, a gateway restart), the outbox is read again from its oldest row: a batch
 * may then arrive twice (the cloud deduplicates by reading id), but none is ever lost.
 */
export class Uplink implements Component {
  readonly name = 'uplink';
  private client: MqttClient | undefined;
  /** Downlink: cloud topics the gateway listens to, subscribed again on every connection. */
  private readonly downlinks: Downlinks;
  private readonly upListeners: Array<() => void> = [];
  private state: LinkState = 'down';
  /** Per stream: what was sent in this session, backlog and live. */
  private readonly cursors: DrainCursors;
  /** Which rows go next, from which stream. */
  private readonly picker: BatchPicker;
  /** Batches and readings in flight, and how many may be. */
  private readonly flight: FlightControl;
  private generation = 0;
  private retryTimer: TimerHandle | undefined;
  private readonly backoff: Backoff;
  private readonly topic: string;
  private readonly statusTopic: string;
  private idleWaiters: Array<() => void> = [];
  /** Sync windows, rate cap, daily budget: for the uplink and, lent through cloudLink, downloads. */
  private readonly gate: CloudLinkGate;
  private deferTimer: TimerHandle | undefined;
  private deferredUntil = 0;
  private readonly mBytes: Counter;
  private readonly mAckFailures: Counter;
  private readonly mDeadLettered: Counter;
  private readonly guard: PoisonGuard;
  /** Batches of the current session awaiting acknowledgement. */
  private readonly unacked = new Set<SentBatch>();
  private connackSeen = false;
  private freshSession = false;
  private readonly netWatch: NetWatch | undefined;
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
    this.gate = new CloudLinkGate(opts, clock, usage, (open) => (open ? this.wake() : this.maybeIdle()));
    this.guard = new PoisonGuard(opts.maxAttempts);
    this.flight = new FlightControl(opts.batchSize, opts.maxInFlight, () => clock.now());
    this.cursors = new DrainCursors(opts.liveShare);
    this.picker = new BatchPicker(outbox, this.cursors, this.guard, this.gate, opts.lingerMs, clock);
    this.downlinks = new Downlinks(log);
    this.netWatch =
      opts.netWatchMs !== undefined && opts.netWatchMs > 0
        ? new NetWatch(clock, opts.netWatchMs, (addresses) => this.networkChanged(addresses), opts.interfaces)
        : undefined;
    this.mDeadLettered = metrics.counter('outpost_uplink_dead_lettered_total', 'Readings moved to the dead-letter table after repeated refusal');
    this.mAckFailures = metrics.counter('outpost_uplink_ack_failures_total', 'Acknowledged batches whose rows the store could not delete (sent again later)');
    this.mBytes = metrics.counter('outpost_uplink_bytes_total', 'Uplink payload bytes published (resends included)');
    this.backoff = new Backoff(opts.backoff.initialMs, opts.backoff.maxMs, opts.random);
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
    return this.gate.status();
  }

  /** The link's state and what it spent: a section of the gateway's status. */
  status(): { link: LinkState; uplink: ReturnType<LinkBudget['status']> } {
    return { link: this.state, uplink: this.gate.status() };
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
    this.startLink();
    await Promise.resolve();
  }

  private startLink(): void {
    this.gate.start();
    this.netWatch?.start();
    if (this.linkWanted()) this.connect();
    else this.state = 'idle';
  }

  /** Called after new rows were committed. */
  notify(): void {
    if (this.state === 'idle') {
      if (this.linkWanted()) this.wake();
      return;
    }
    this.pump();
  }

  /** Inside a sync window (or none configured), or a priority 0 stream has something to send. */
  private linkWanted(): boolean {
    if (this.gate.windowOpen()) return true;
    return this.outbox.stats().streams.some((s) => s.priority === 0 && s.depth > 0);
  }

  private wake(): void {
    if (this.state !== 'idle') return;
    if (this.client) this.reopen(this.client);
    else this.connect();
  }

  /** Outside the windows with nothing urgent in flight: close the link until it is wanted again. */
  private maybeIdle(): void {
    const client = this.client;
    if (!this.gate.windowed || this.state !== 'up' || !client || this.flight.batches > 0 || this.linkWanted()) return;
    this.state = 'idle';
    this.log.info({ nextWindowInMs: this.gate.msToNextWindow() }, 'sync window closed; cloud link closed until the next one');
    client.publish(this.statusTopic, JSON.stringify({ state: 'offline' }), { qos: 1, retain: true }, () => {
      if (this.state === 'idle') client.end(false);
    });
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
    this.generation++;
    if (this.retryTimer) this.clock.clearTimeout(this.retryTimer);
    if (this.deferTimer) this.clock.clearTimeout(this.deferTimer);
    const client = this.client;
    this.client = undefined;
    this.mLinkUp.set(0);
    if (!client) return;
    if (client.connected) {
      // A clean stop publishes the offline status itself; the last will covers crashes.
      // At most a second for the broker to take it: the timer goes with the answer.
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

  private isDrained(): boolean {
    return this.flight.batches === 0 && this.outbox.stats().depth === 0;
  }

  private connect(): void {
    if (this.state === 'stopped') return;
    this.state = 'connecting';
    // One client for the life of the gateway. The first CONNECT starts a clean session (a session
    // left by an earlier run could hold QoS 2 packet ids this run would reuse); every reconnect
    // resumes it, and mqtt.js sends the unacknowledged batches again from its own store: at QoS 2
    // the broker recognizes them and delivers each once.
    const client = mqtt.connect(this.opts.url, {
      clientId: this.opts.clientId,
      protocolVersion: this.opts.protocolVersion,
      ...(this.opts.tls ?? {}),
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
    client.on('connect', (connack) => {
      if (this.state === 'stopped') return;
      if (this.opts.qos === 2 && client.options.clean) {
        // That cleared whatever an earlier run left; now open the session the broker keeps
        // (MQTT 3.1.1 keeps no session opened with clean = 1).
        client.options.clean = false;
        this.backoff.reset();
        client.stream.destroy();
        return;
      }
      this.state = 'up';
      this.backoff.reset();
      if (!connack.sessionPresent) this.sessionLost();
      this.flight.connected();
      this.mConnects.inc();
      this.mLinkUp.set(1);
      this.log.info({ url: this.opts.url, sessionPresent: connack.sessionPresent }, 'cloud link up');
      client.publish(this.statusTopic, JSON.stringify({ state: 'online' }), { qos: 1, retain: true });
      const filters = this.downlinks.filters();
      if (filters.length > 0) client.subscribe(filters, { qos: 1 });
      for (const fn of this.upListeners) {
        try {
          fn();
        } catch (err) {
          this.log.error({ err: errorMessage(err) }, 'link-up listener failed');
        }
      }
      this.pump();
    });
    client.on('message', (topic, payload) => this.downlinks.deliver(topic, payload));
    client.on('packetreceive', (packet) => {
      if (packet.cmd === 'connack') this.connackSeen = true;
    });
    client.on('error', (err) => {
      this.log.warn({ err: err.message }, 'cloud link error');
    });
    client.on('close', () => {
      this.mLinkUp.set(0);
      if (this.state === 'stopped' || this.state === 'idle') return;
      // Counted only for connections the broker accepted: a batch that gets its connection
      // dropped, maybe again on every resend right after CONNACK, is what a poison message does.
      if (this.connackSeen && this.unacked.size > 0) {
        this.refused([...this.unacked], 'connection lost with the batch in flight');
        this.flight.lost();
      }
      this.connackSeen = false;
      const wasUp = this.state === 'up';
      this.state = 'down';
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
    });
  }

  /** The host's addresses changed while waiting to reconnect: the link may be back, try now. */
  private networkChanged(addresses: string): void {
    const client = this.client;
    if (this.state !== 'down' || !client || !this.retryTimer) return;
    this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.backoff.reset();
    this.log.info({ addresses }, 'network changed; reconnecting now');
    if (this.linkWanted()) this.reopen(client);
    else this.state = 'idle';
  }

  private reopen(client: MqttClient): void {
    this.state = 'connecting';
    if (this.opts.qos === 2 && !this.freshSession) {
      // Resume: keep the stores, they hold what is in flight.
      client.reconnect({ incomingStore: client.incomingStore, outgoingStore: client.outgoingStore });
    } else {
      // QoS 1, or a session that must not resend what it holds: empty stores, clean session;
      // the outbox is read again from its oldest row.
      this.freshSession = false;
      client.options.clean = true;
      client.reconnect();
    }
  }

  /**
   * The broker has no session for us (first connection, or it lost it): what was in flight may
   * never be acknowledged. mqtt.js still sends it again, but the outbox is read again from its
   * oldest row as well, so nothing depends on that.
   */
  private sessionLost(): void {
    // Expected at QoS 1 (no session is kept); at QoS 2 it means the broker lost ours.
    if (this.flight.batches > 0 && this.opts.qos === 2) this.log.warn({ inFlight: this.flight.batches }, 'cloud session lost; unacknowledged batches are sent again');
    this.generation++;
    this.flight.reset();
    this.cursors.reset(this.outbox.newestRowid());
    this.unacked.clear();
    this.mInFlight.set(0);
  }

  /** Counts failed batches against their stream; dead-letters a reading that keeps failing alone. */
  private refused(batches: readonly SentBatch[], reason: string): void {
    const { deadLetters, changed } = this.guard.failed(batches);
    // The batches in flight must not be sent again as they were: the next connection starts a
    // fresh session and reads the outbox again, in smaller batches or without the dead letter.
    if (changed) this.freshSession = true;
    for (const { stream, rowid } of deadLetters) {
      try {
        const n = this.outbox.deadLetter(stream, [rowid], reason, this.clock.now());
        this.mDeadLettered.inc(undefined, n);
        this.log.error({ stream, rowid, reason }, 'reading moved to the dead-letter table');
      } catch (err) {
        this.log.error({ stream, rowid, err: errorMessage(err) }, 'dead-lettering failed');
      }
    }
  }

  private pump(): void {
    const client = this.client;
    if (this.state !== 'up' || !client) return;
    const generation = this.generation;
    for (let room = this.flight.room(); room > 0; room = this.flight.room()) {
      const next = this.picker.next(room);
      if ('waitMs' in next) {
        if (next.waitMs !== undefined) this.deferPump(next.waitMs);
        break;
      }
      const batch = next;
      const { stream, rows, live } = batch;
      const first = rows[0]!.rowid;
      const last = rows[rows.length - 1]!.rowid;
      this.cursors.sent(stream, last, live, rows.length);
      const payload = encodeBatch(this.opts.gatewayId, this.clock.now(), rows, this.opts.compression);
      this.gate.spend(payload.length);
      this.mBytes.inc(undefined, payload.length);
      this.flight.sent(rows.length);
      this.mInFlight.set(this.flight.batches);
      this.log.debug({ stream, first, last, rows: rows.length, inFlight: this.flight.batches }, 'batch sent');
      const sent: SentBatch = { stream, first, last, rows: rows.length };
      this.unacked.add(sent);
      client.publish(this.topic, payload, { qos: this.opts.qos }, (err) => {
        this.unacked.delete(sent);
        this.log.debug({ stream, first, last, err: err?.message, current: generation === this.generation }, 'batch settled');
        if (err) {
          // Not acknowledged: the rows stay, and this stream is read again from the first of them.
          this.mPublishErrors.inc();
          if (generation !== this.generation) return;
          // An MQTT 5 reason code: the broker refused this batch.
          const code = (err as { code?: unknown }).code;
          if (typeof code === 'number' && code >= 0x80) this.refused([sent], `refused by the cloud broker: ${err.message} (0x${code.toString(16)})`);
          this.flight.settled(sent.rows, false);
          this.mInFlight.set(this.flight.batches);
          this.cursors.rewind(stream, first, live);
          return;
        }
        // At QoS 2, a completion that arrives in a later session than the batch was sent in is
        // no proof: a broker that lost the session answers PUBREL with PUBCOMP without having
        // delivered anything. Those rows are sent again from the outbox instead.
        if (this.opts.qos === 2 && generation !== this.generation) return;
        // Acknowledged: safe to delete even if the link dropped since. If the store cannot
        // write (disk full), the rows stay and go again later: a duplicate, never a loss.
        this.guard.acked(sent);
        try {
          this.outbox.ack(stream, first, last);
        } catch (e) {
          this.mAckFailures.inc();
          this.log.error({ stream, first, last, err: errorMessage(e) }, 'acknowledged rows could not be deleted');
        }
        this.mBatches.inc();
        if (generation !== this.generation) return;
        this.flight.settled(sent.rows, true);
        this.mInFlight.set(this.flight.batches);
        this.pump();
      });
    }
    if (this.flight.batches === 0) this.maybeIdle();
    if (this.isDrained()) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
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
