/** The in-flight cap never shrinks below this many readings (or one batch, if smaller). */
const MIN_FLIGHT_CAP = 16;
/** The in-flight cap grows by one batch per this many ms without a connection lost. */
const FLIGHT_CAP_GROWTH_MS = 2000;

/**
 * How much the uplink may have in flight on a connection, in batches and in readings.
 *
 * Batches: 1 after connecting, one more per acknowledgement up to maxInFlight. A link that drops
 * soon after it came back then duplicates at most a batch or two, not a full window (the cloud
 * would receive them and their PUBACKs would be lost).
 *
 * Readings: a cap adapted to how often the link drops (additive increase, multiplicative
 * decrease): halved whenever a connection is lost with batches unacknowledged, grown by one batch
 * per FLIGHT_CAP_GROWTH_MS of acknowledgements without a loss. On a link that keeps dropping,
 * little is in flight when it drops, so little is sent twice (at QoS 1 a batch that reached the
 * broker but whose PUBACK was lost goes again); on a steady link it is batchSize × maxInFlight.
 */
export class FlightControl {
  /** Batches awaiting acknowledgement on this connection. */
  batches = 0;
  /** Readings in them. */
  rows = 0;
  private window = 1;
  private cap: number;
  private capAt = 0;

  constructor(
    private readonly batchSize: number,
    private readonly maxInFlight: number,
    private readonly now: () => number,
  ) {
    this.cap = batchSize * maxInFlight;
  }

  /** Readings the next batch may carry now (0: nothing more may go). */
  room(): number {
    if (this.batches >= this.window) return 0;
    const left = Math.floor(this.cap) - this.rows;
    return left > 0 ? Math.min(this.batchSize, left) : 0;
  }

  /** A connection was accepted: one batch at a time again. */
  connected(): void {
    this.window = 1;
  }

  sent(rows: number): void {
    this.batches++;
    this.rows += rows;
  }

  /** A batch settled; `acked` widens the window and grows the cap. */
  settled(rows: number, acked: boolean): void {
    this.batches--;
    this.rows -= rows;
    if (!acked) return;
    this.window = Math.min(this.maxInFlight, this.window + 1);
    const full = this.batchSize * this.maxInFlight;
    if (this.cap >= full) return;
    const now = this.now();
    this.cap = Math.min(full, this.cap + (this.batchSize * Math.max(0, now - this.capAt)) / FLIGHT_CAP_GROWTH_MS);
    this.capAt = now;
  }

  /** A connection was lost with batches unacknowledged: halve the cap. */
  lost(): void {
    this.cap = Math.max(Math.min(MIN_FLIGHT_CAP, this.batchSize), this.cap / 2);
    this.capAt = this.now();
  }

  /** The session is gone: nothing is in flight any more. */
  reset(): void {
    this.batches = 0;
    this.rows = 0;
  }
}
