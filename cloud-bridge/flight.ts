import type { Clock } from '../runtime/contracts/index.js';

/** The in-flight cap never shrinks below this many readings (or one batch, if smaller). */
const MIN_FLIGHT_CAP = 16;
/** The in-flight cap grows by one batch per this many ms without a connection lost. */
const FLIGHT_CAP_GROWTH_MS = 2000;

/**
 * How much the uplink may have unacknowledged on its connection, so that a link that drops sends
 * little twice (at QoS 1 a batch that reached the broker but whose PUBACK was lost goes again).
 *
 * Batches: 1 after connecting, one more per PUBACK up to maxInFlight. A link that drops soon after
 * it came back then duplicates at most a batch or two, not a full window.
 *
 * Readings: a cap adapted to how often the link drops (additive increase, multiplicative
 * decrease): halved whenever a connection is lost with batches unacknowledged, grown by one batch
 * per FLIGHT_CAP_GROWTH_MS of acknowledgements without a loss. On a steady link it is
 * batchSize × maxInFlight.
 */
export class FlightControl {
  private batches = 0;
  private rows = 0;
  private window = 1;
  private cap: number;
  private capAt = 0;

  constructor(
    private readonly batchSize: number,
    private readonly maxInFlight: number,
    private readonly clock: Clock,
  ) {
    this.cap = batchSize * maxInFlight;
  }

  /** Batches awaiting acknowledgement. */
  get inFlight(): number {
    return this.batches;
  }

  /** Readings the next batch may hold: 0 while the window or the cap is full. */
  room(): number {
    const cap = Math.floor(this.cap);
    if (this.batches >= this.window || this.rows >= cap) return 0;
    return Math.min(this.batchSize, cap - this.rows);
  }

  sent(rows: number): void {
    this.batches++;
    this.rows += rows;
  }

  /** A batch of this connection was acknowledged: the window and the cap grow. */
  acked(rows: number): void {
    this.window = Math.min(this.maxInFlight, this.window + 1);
    this.grow();
    this.settled(rows);
  }

  /** A batch of this connection failed: it is no longer in flight. */
  settled(rows: number): void {
    this.batches--;
    this.rows -= rows;
  }

  /** A new connection: one batch at a time until acknowledgements come. */
  connected(): void {
    this.window = 1;
  }

  /** A connection was lost with batches unacknowledged: halve the cap. */
  lost(): void {
    this.cap = Math.max(Math.min(MIN_FLIGHT_CAP, this.batchSize), this.cap / 2);
    this.capAt = this.clock.now();
  }

  /** The session is gone: nothing of it will be acknowledged any more. */
  clear(): void {
    this.batches = 0;
    this.rows = 0;
  }

  private grow(): void {
    const full = this.batchSize * this.maxInFlight;
    if (this.cap >= full) return;
    const now = this.clock.now();
    this.cap = Math.min(full, this.cap + (this.batchSize * Math.max(0, now - this.capAt)) / FLIGHT_CAP_GROWTH_MS);
    this.capAt = now;
  }
}
