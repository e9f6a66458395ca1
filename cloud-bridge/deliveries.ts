import type { MqttClient } from 'mqtt';
import { errorMessage, type Clock, type Counter, type Gauge, type Logger, type Metrics } from '../runtime/contracts/index.js';
import { BatchPicker, type PickedBatch } from './batch-picker.js';
import { DrainCursors } from './drain-cursors.js';
import { FlightControl } from './flight.js';
import type { UplinkGate } from './link-gate.js';
import { PoisonGuard, type SentBatch } from './poison-guard.js';
import { encodeBatch } from './uplink-payload.js';
import type { UplinkOptions, UplinkOutbox } from './uplink-options.js';

export type DeliveryOptions = Pick<UplinkOptions, 'gatewayId' | 'batchSize' | 'maxInFlight' | 'maxAttempts' | 'liveShare' | 'lingerMs' | 'qos' | 'compression'>;

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
  private readonly m: { bytes: Counter; ackFailures: Counter; deadLettered: Counter; batches: Counter; publishErrors: Counter; inFlight: Gauge };

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
    this.flight = new FlightControl(opts.batchSize, opts.maxInFlight, clock);
    this.cursors = new DrainCursors(opts.liveShare);
    this.picker = new BatchPicker(outbox, this.cursors, this.guard, (priority) => gate.batchDelay(priority), opts.lingerMs, clock);
    this.m = {
      deadLettered: metrics.counter('outpost_uplink_dead_lettered_total', 'Readings moved to the dead-letter table after repeated refusal'),
      ackFailures: metrics.counter('outpost_uplink_ack_failures_total', 'Acknowledged batches whose rows the store could not delete (sent again later)'),
      bytes: metrics.counter('outpost_uplink_bytes_total', 'Uplink payload bytes published (resends included)'),
      batches: metrics.counter('outpost_uplink_batches_total', 'Uplink messages acknowledged by the cloud broker'),
      publishErrors: metrics.counter('outpost_uplink_publish_failures_total', 'Uplink messages not acknowledged (resent later)'),
      inFlight: metrics.gauge('outpost_uplink_in_flight', 'Uplink messages awaiting PUBACK'),
    };
  }

  /** Batches awaiting acknowledgement on this session. */
  get inFlight(): number {
    return this.flight.inFlight;
  }

  /** The next batch, if the flight limits leave room; else how long until one may go, if any is held back. */
  next(): { batch: PickedBatch } | { waitMs: number } | undefined {
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
  connectionLost(): void {
    if (this.unacked.size === 0) return;
    this.refused([...this.unacked], 'connection lost with the batch in flight');
    this.flight.lost();
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
    const payload = encodeBatch(this.opts.gatewayId, this.clock.now(), rows, this.opts.compression);
    this.gate.spend(payload.length);
    this.m.bytes.inc(undefined, payload.length);
    this.flight.sent(rows.length);
    this.m.inFlight.set(this.flight.inFlight);
    this.log.debug({ stream, first, last, rows: rows.length, inFlight: this.flight.inFlight }, 'batch sent');
    const sent: SentBatch = { stream, first, last, rows: rows.length };
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
    // An MQTT 5 reason code of 0x80 or more in the PUBACK [MQTT-3.4.2.1]: the broker refused this batch.
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'number' && code >= 0x80) this.refused([sent], `refused by the cloud broker: ${errorMessage(err)} (0x${code.toString(16)})`);
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

  /** Counts failed batches against their stream; dead-letters a reading that keeps failing alone. */
  private refused(batches: readonly SentBatch[], reason: string): void {
    const { deadLetters, changed } = this.guard.failed(batches);
    // The batches in flight must not be sent again as they were: the next connection starts a
    // fresh session and reads the outbox again, in smaller batches or without the dead letter.
    if (changed) this.mustStartFresh = true;
    for (const { stream, rowid } of deadLetters) {
      try {
        const n = this.outbox.deadLetter(stream, [rowid], reason, this.clock.now());
        this.m.deadLettered.inc(undefined, n);
        this.log.error({ stream, rowid, reason }, 'reading moved to the dead-letter table');
      } catch (err) {
        this.log.error({ stream, rowid, err: errorMessage(err) }, 'dead-lettering failed');
      }
    }
  }
}
