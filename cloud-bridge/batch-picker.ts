import type { Clock, OutboxRow } from '../runtime/contracts/index.js';
import type { DrainCursors, DrainRange } from './drain-cursors.js';
import type { PoisonGuard } from './poison-guard.js';
import type { UplinkOutbox } from './uplink-options.js';

/** Rows of one stream to send as one batch; `live`: read from the part stored in this session. */
export interface PickedBatch {
  readonly stream: string;
  readonly rows: OutboxRow[];
  readonly live: boolean;
}

/**
 * Which rows go next: from the highest-priority stream that has rows not yet sent on this
 * connection, oldest first (or as the drain cursors share the link between backlog and live), so
 * the readings of one source leave in the order they were stored; as many as the poison guard
 * allows. A stream may be held back: by the rate cap or the daily budget (`delayFor`, which spares
 * priority 0), or, above priority 0, while its batch is not full and its oldest reading is younger
 * than `lingerMs`.
 *
 * A lingering stream is not read again on every commit: `next` runs after each one, and at a
 * connection storm of thousands of children each commit is a birth or a few readings, so reading
 * (and splitting) up to a batch of rows each time was the uplink's largest cost. Until its linger
 * ends it is read again only once enough rows were stored, in any stream, to fill its batch.
 */
export class BatchPicker {
  /** Streams found lingering: where they were read from, what was there, and until when they wait. */
  private readonly lingering = new Map<string, Lingering>();

  constructor(
    private readonly outbox: UplinkOutbox,
    private readonly cursors: DrainCursors,
    private readonly guard: PoisonGuard,
    private readonly delayFor: (priority: number) => number,
    private readonly lingerMs: number,
    private readonly clock: Clock,
  ) {}

  /** The next batch of at most `limit` rows; else how long until one may go, if any is held back. */
  next(limit: number): { batch: PickedBatch } | { waitMs: number } | undefined {
    let wait: number | undefined;
    for (const { name, priority } of this.outbox.drainOrder()) {
      const still = this.stillLingering(name, limit);
      if (still !== undefined) {
        const delay = this.delayFor(priority) || still;
        wait = Math.min(wait ?? delay, delay);
        continue;
      }
      const found = this.read(name, limit);
      if (!found) continue;
      let delay = this.delayFor(priority);
      if (delay === 0 && priority > 0 && this.lingerMs > 0 && found.rows.length < limit) {
        delay = Math.max(0, found.rows[0]!.createdAt + this.lingerMs - this.clock.now());
        if (delay > 0 && found.first) {
          this.lingering.set(name, { after: found.range.after, upTo: found.range.upTo, rows: found.rows.length, newest: this.outbox.newestRowid(), until: this.clock.now() + delay });
        }
      }
      if (delay === 0) return { batch: { stream: name, rows: found.rows, live: found.live } };
      wait = Math.min(wait ?? delay, delay);
    }
    return wait === undefined ? undefined : { waitMs: wait };
  }

  /**
   * How long `stream` still lingers, when nothing it was read for has changed: read from the same
   * range, its linger not over, and fewer rows stored since (in all streams) than would fill the
   * batch. Undefined: read it again.
   */
  private stillLingering(stream: string, limit: number): number | undefined {
    const l = this.lingering.get(stream);
    if (!l) return undefined;
    const left = l.until - this.clock.now();
    const range = this.cursors.candidates(stream)[0];
    const fits = l.rows + (this.outbox.newestRowid() - l.newest) < this.guard.limitFor(stream, l.after, limit);
    if (left > 0 && range && range.after === l.after && range.upTo === l.upTo && fits) return left;
    this.lingering.delete(stream);
    return undefined;
  }

  /** The rows the cursors point at in `stream`, from the first of their ranges that has any. */
  private read(stream: string, limit: number): { rows: OutboxRow[]; live: boolean; range: DrainRange; first: boolean } | undefined {
    let first = true;
    for (const range of this.cursors.candidates(stream)) {
      const rows = this.outbox.peek(stream, range.after, this.guard.limitFor(stream, range.after, limit), range.upTo);
      if (rows.length > 0) return { rows, live: range.live, range, first };
      if (range.upTo !== undefined) this.cursors.exhausted(stream);
      first = false;
    }
    return undefined;
  }
}

interface Lingering {
  readonly after: number;
  readonly upTo: number | undefined;
  readonly rows: number;
  /** The outbox's newest row when the stream was read. */
  readonly newest: number;
  readonly until: number;
}
