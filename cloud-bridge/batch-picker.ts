import type { Clock, OutboxRow } from '../runtime/contracts/index.js';
import type { DrainCursors } from './drain-cursors.js';
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
 */
export class BatchPicker {
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
      const found = this.read(name, limit);
      if (!found) continue;
      let delay = this.delayFor(priority);
      if (delay === 0 && priority > 0 && this.lingerMs > 0 && found.rows.length < limit) {
        delay = Math.max(0, found.rows[0]!.createdAt + this.lingerMs - this.clock.now());
      }
      if (delay === 0) return { batch: { stream: name, rows: found.rows, live: found.live } };
      wait = Math.min(wait ?? delay, delay);
    }
    return wait === undefined ? undefined : { waitMs: wait };
  }

  /** The rows the cursors point at in `stream`, from the first of their ranges that has any. */
  private read(stream: string, limit: number): { rows: OutboxRow[]; live: boolean } | undefined {
    for (const range of this.cursors.candidates(stream)) {
      const rows = this.outbox.peek(stream, range.after, this.guard.limitFor(stream, range.after, limit), range.upTo);
      if (rows.length > 0) return { rows, live: range.live };
      if (range.upTo !== undefined) this.cursors.exhausted(stream);
    }
    return undefined;
  }
}
