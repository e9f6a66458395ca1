import type { MqttClient } from 'mqtt';
import { Backoff, errorMessage, type Clock, type Counter, type Gauge, type Logger, type Metrics } from '../runtime/contracts/index.js';
import { BatchPicker, type PickedBatch } from './batch-picker.js';
import { DrainCursors } from './drain-cursors.js';
import { FlightControl } from './flight.js';
import type { UplinkGate } from './link-gate.js';
import { PoisonGuard, type SentBatch } from './poison-guard.js';
import { classifyReasonCode, type Refusal } from './refusals.js';
import { encodeBatch } from './uplink-payload.js';
import type { UplinkOptions, UplinkOutbox } from './uplink-options.js';

export type DeliveryOptions = Pick<
  UplinkOptions,
  'gatewayId' | 'batchSize' | 'maxInFlight' | 'maxAttempts' | 'liveShare' | 'lingerMs' | 'qos' | 'encoding' | 'compression' | 'backoff' | 'random'
>;

/** Dead letters in a row, with no acknowledgement between them, after which the uplink stops dead-lettering. */
const DEAD_LETTERS_WITHOUT_ACK = 3;

/** The uplink's batches keep failing since `since`: shown in the status as the link failing. */
export interface DeliveryFailure {
  readonly since: number;
  readonly failures: number;
  readonly reason: string;
  /** Batches are held back until then (a refusal that is about the link, not a reading). */
  readonly heldUntil?: number;
  /** Streams whose bad reading is being narrowed down, and how many rows are still suspect. */
  readonly isolating: Array<{ stream: string; suspects: number }>;
}

/**
 * The uplink's batches from PUBLISH to acknowledgement, on the session the uplink keeps (uplink.ts).
 * Picks what goes next within the flight limits, publishes it, and settles each batch: rows are
 * deleted from the outbox only when the broker acknowledged their batch; a batch that failed is
 * read again from its first row; one the broker keeps refusing is narrowed by the poison guard
 * until the bad reading is dead-lettered. `onSettled` is called when a batch settled on the
 * current session (there may be room for the next one).
 */
export class Deliveries {
  /** Per stream: what was sent in this session, backlog and live. */
  private readonly cursors: DrainCursors;
  private readonly guard: PoisonGuard;
  private readonly flight: FlightControl;
  private readonly picker: BatchPicker;
  /** Batches of the current session awaiting acknowledgement. */
  private readonly unacked = new Set<SentBatch>();
  /** Which session a batch was sent in: what settles in a later one is not counted (flight, cursors). */
  private generation = 0;
  /** A batch size changed or a reading was dead-lettered since the last reconnect. */
  private mustStartFresh = false;
  /** Since the last acknowledgement with nothing left to isolate: what keeps failing. */
  private failure: { since: number; failures: number; reason: string } | undefined;
  /** Batches wait until then: the broker refused one for a reason that is about the link. */
  private heldUntil = 0;
  private readonly holdBackoff: Backoff;
  private deadLettersWithoutAck = 0;
  /** When the oldest batch in flight was sent, or the last acknowledgement came, whichever is later. */
  private progressAt = 0;
  private readonly m: {
    bytes: Counter;
    ackFailures: Counter;
    deadLettered: Counter;
    batches: Counter;
    publishErrors: Counter;
    refusals: Counter;
    inFlight: Gauge;
    failing: Gauge;
  };

  constructor(
    private readonly opts: DeliveryOptions,
    private readonly topic: string,
    private readonly outbox: UplinkOutbox,
    private readonly gate: UplinkGate,
    private readonly clock: Clock,
    private readonly log: Logger,
    metrics: Metrics,
    private readonly onSettled: () => void,
  ) {
    this.guard = new PoisonGuard(opts.maxAttempts);
    this.holdBackoff = new Backoff(opts.backoff.initialMs, opts.backoff.maxMs, opts.random);
    this.flight = new FlightControl(opts.batchSize, opts.maxInFlight, clock);
    this.cursors = new DrainCursors(opts.liveShare);
    this.picker = new BatchPicker(outbox, this.cursors, this.guard, (priority) => gate.batchDelay(priority), opts.lingerMs, clock);
    this.m = {
      deadLettered: metrics.counter('outpost_uplink_dead_lettered_total', 'Readings moved to the dead-letter table after repeated refusal'),
      ackFailures: metrics.counter('outpost_uplink_ack_failures_total', 'Acknowledged batches whose rows the store could not delete (sent again later)'),
      bytes: metrics.counter('outpost_uplink_bytes_total', 'Uplink payload bytes published (resends included)'),
      batches: metrics.counter('outpost_uplink_batches_total', 'Uplink messages acknowledged by the cloud broker'),
      publishErrors: metrics.counter('outpost_uplink_publish_failures_total', 'Uplink messages not acknowledged (resent later)'),
      refusals: metrics.counter('outpost_uplink_refusals_total', 'Uplink batches that failed, by kind: poison (about a reading) or link (rights, quota, broker state)', ['kind']),
      inFlight: metrics.gauge('outpost_uplink_in_flight', 'Uplink messages awaiting PUBACK'),
      failing: metrics.gauge('outpost_uplink_failing', '1 while uplink batches keep failing (refused, connection lost or not acknowledged)'),
    };
  }

  /** Batches awaiting acknowledgement on this session. */
  get inFlight(): number {
    return this.flight.inFlight;
  }

  /** The next batch, if the flight limits leave room; else how long until one may go, if any is held back. */
  next(): { batch: PickedBatch } | { waitMs: number } | undefined {
    const held = this.heldUntil - this.clock.now();
    if (held > 0) return { waitMs: held };
    // A lone suspect reading is judged only by failures it had alone in flight: one batch at a time.
    if (this.guard.hasLoneSuspect() && this.unacked.size > 0) return undefined;
    const room = this.flight.room();
    return room > 0 ? this.picker.next(room) : undefined;
  }

  /**
   * The batches in flight must not be sent again as they were (their size changed, or one holds
   * a dead letter): the next connection starts a fresh session. Asking clears it.
   */
  takeFreshSession(): boolean {
    const fresh = this.mustStartFresh;
    this.mustStartFresh = false;
    return fresh;
  }

  /** A new connection: one batch at a time until acknowledgements come. */
  connected(): void {
    this.flight.connected();
  }

  /**
   * The broker has no session for us (first connection, or it lost it): what was in flight may
   * never be acknowledged. mqtt.js still sends it again, but the outbox is read again from its
   * oldest row as well, so nothing depends on that.
   */
  sessionLost(): void {
    // Expected at QoS 1 (no session is kept); at QoS 2 it means the broker lost ours.
    if (this.flight.inFlight > 0 && this.opts.qos === 2) this.log.warn({ inFlight: this.flight.inFlight }, 'cloud session lost; unacknowledged batches are sent again');
    this.generation++;
    this.flight.clear();
    this.cursors.reset(this.outbox.newestRowid());
    this.unacked.clear();
    this.m.inFlight.set(0);
  }

  /**
   * A connection the broker had accepted was lost: the batches it left unacknowledged count as
   * failed (a batch that gets its connection dropped, maybe again on every resend right after
   * CONNACK, is what a poison message does), and less goes in flight for a while.
   */
  connectionLost(refusal: Refusal = { kind: 'poison', reason: 'connection lost with the batch in flight' }): void {
    if (this.unacked.size === 0) return;
    this.refused([...this.unacked], refusal);
    this.flight.lost();
  }

  /**
   * Nothing was acknowledged for `ms` while batches were in flight (a broker that drops a message
   * without a word, a connection that stalled): how long it has been, or 0.
   */
  stalledFor(now: number): number {
    return this.flight.inFlight > 0 ? now - this.progressAt : 0;
  }

  /** Batches keep failing: why, since when; undefined while they go through. */
  failing(): DeliveryFailure | undefined {
    if (!this.failure) return undefined;
    const held = this.heldUntil > this.clock.now() ? { heldUntil: this.heldUntil } : {};
    return { ...this.failure, ...held, isolating: this.guard.isolating() };
  }

  /** The uplink stopped: what settles after this is not counted against the flight limits. */
  stopped(): void {
    this.generation++;
  }

  send(client: MqttClient, { stream, rows, live }: PickedBatch): void {
    const generation = this.generation;
    const first = rows[0]!.rowid;
    const last = rows[rows.length - 1]!.rowid;
    this.cursors.sent(stream, last, live, rows.length);
    const payload = encodeBatch(this.opts.gatewayId, this.clock.now(), rows, this.opts);
    this.gate.spend(payload.length);
    this.m.bytes.inc(undefined, payload.length);
    this.flight.sent(rows.length);
    this.m.inFlight.set(this.flight.inFlight);
    this.log.debug({ stream, first, last, rows: rows.length, inFlight: this.flight.inFlight }, 'batch sent');
    const sent: SentBatch = { stream, first, last, rows: rows.length };
    if (this.unacked.size === 0) this.progressAt = this.clock.now();
    this.unacked.add(sent);
    client.publish(this.topic, payload, { qos: this.opts.qos }, (err) => {
      this.unacked.delete(sent);
      this.log.debug({ stream, first, last, err: err ? errorMessage(err) : undefined, current: generation === this.generation }, 'batch settled');
      if (err) this.failed(sent, live, err, generation);
      else this.acknowledged(sent, generation);
    });
  }

  /** Not acknowledged: the rows stay, and this stream is read again from the first of them. */
  private failed(sent: SentBatch, live: boolean, err: Error, generation: number): void {
    this.m.publishErrors.inc();
    if (generation !== this.generation) return;
    this.progressAt = this.clock.now();
    // An MQTT 5 reason code of 0x80 or more in the PUBACK [MQTT-3.4.2.1]: the broker refused this batch.
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'number' && code >= 0x80) this.refused([sent], classifyReasonCode(code, 'refused by the cloud broker'));
    this.flight.settled(sent.rows);
    this.m.inFlight.set(this.flight.inFlight);
    this.cursors.rewind(sent.stream, sent.first, live);
    // A refused batch leaves the connection up: send again now (smaller, or without the dead
    // letter), not when new rows or another acknowledgement happen to come.
    this.onSettled();
  }

  private acknowledged(sent: SentBatch, generation: number): void {
    const { stream, first, last } = sent;
    // At QoS 2, a completion that arrives in a later session than the batch was sent in is
    // no proof: a broker that lost the session answers PUBREL with PUBCOMP without having
    // delivered anything. Those rows are sent again from the outbox instead.
    if (this.opts.qos === 2 && generation !== this.generation) return;
    // Acknowledged: safe to delete even if the link dropped since. If the store cannot
    // write (disk full), the rows stay and go again later: a duplicate, never a loss.
    this.guard.acked(sent);
    this.progressAt = this.clock.now();
    this.deadLettersWithoutAck = 0;
    if (this.guard.isolating().length === 0) {
      this.holdBackoff.reset();
      this.recovered();
    }
    try {
      this.outbox.ack(stream, first, last);
    } catch (err) {
      this.m.ackFailures.inc();
      this.log.error({ stream, first, last, err: errorMessage(err) }, 'acknowledged rows could not be deleted');
    }
    this.m.batches.inc();
    if (generation !== this.generation) return;
    this.flight.acked(sent.rows);
    this.m.inFlight.set(this.flight.inFlight);
    this.onSettled();
  }

  /**
   * Failed batches. About a reading: counted against their stream by the poison guard, which
   * dead-letters a reading that keeps failing alone. About the link: nothing is counted, every
   * batch waits for a growing backoff.
   */
  private refused(batches: readonly SentBatch[], refusal: Refusal): void {
    const now = this.clock.now();
    this.m.refusals.inc({ kind: refusal.kind });
    if (!this.failure) {
      this.failure = { since: now, failures: 0, reason: refusal.reason };
      this.m.failing.set(1);
      this.log.warn({ reason: refusal.reason }, 'uplink batches failing');
    }
    this.failure.failures++;
    this.failure.reason = refusal.reason;
    if (refusal.kind === 'link') {
      this.hold(now, refusal.reason);
      return;
    }
    const { deadLetters, changed } = this.guard.failed(batches);
    // The batches in flight must not be sent again as they were: the next connection starts a
    // fresh session and reads the outbox again, in smaller batches or without the dead letter.
    if (changed) this.mustStartFresh = true;
    for (const { stream, rowid } of deadLetters) {
      if (this.deadLettersWithoutAck >= DEAD_LETTERS_WITHOUT_ACK) {
        // Reading after reading fails alone: the broker refuses them all (a broker that closes the
        // connection on an ACL refusal looks so). Dead-lettering the stream would empty it: hold.
        const reason = `the cloud broker refuses every reading (${DEAD_LETTERS_WITHOUT_ACK} dead-lettered in a row, none acknowledged since): ${refusal.reason}`;
        this.failure.reason = reason;
        this.hold(now, reason);
        continue;
      }
      try {
        const n = this.outbox.deadLetter(stream, [rowid], refusal.reason, now);
        this.deadLettersWithoutAck++;
        this.m.deadLettered.inc(undefined, n);
        this.log.error({ stream, rowid, reason: refusal.reason }, 'reading moved to the dead-letter table');
      } catch (err) {
        this.log.error({ stream, rowid, err: errorMessage(err) }, 'dead-lettering failed');
      }
    }
    // The bad readings are out of the way: unless another stream is still being narrowed, what
    // failed is resolved (the next failure, if any, starts a new episode).
    if (deadLetters.length > 0 && this.heldUntil <= now && this.guard.isolating().length === 0) this.recovered();
  }

  private recovered(): void {
    if (!this.failure) return;
    this.log.info({ failures: this.failure.failures, forMs: this.clock.now() - this.failure.since }, 'uplink batches go through again');
    this.failure = undefined;
    this.m.failing.set(0);
  }

  private hold(now: number, reason: string): void {
    const ms = Math.max(this.opts.backoff.initialMs, this.holdBackoff.next());
    this.heldUntil = Math.max(this.heldUntil, now + ms);
    this.log.warn({ reason, retryInMs: ms }, 'uplink batches held back');
  }
}
