import type { Clock, Outbox, OutboxRow } from '../runtime/contracts/index.js';
import type { DrainCursors } from './drain-cursors.js';
import type { CloudLinkGate } from './link-gate.js';
import type { PoisonGuard } from './poison-guard.js';

export interface PickedBatch {
  readonly stream: string;
  readonly rows: OutboxRow[];
  /** From the live part of the stream (rows stored after the session began), not the backlog. */
  readonly live: boolean;
}

/**
 * Which rows the uplink sends next: from the highest-priority stream that has rows not yet sent on
 * this connection, oldest first, so the readings of one source leave in the order they were
 * stored; no more than a stream whose head is being isolated may take (poison guard); and only
 * when the link's rate cap and daily budget allow and a batch that is not full has lingered long
 * enough. Otherwise, how long until one may go.
 */
export class BatchPicker {
  constructor(
    private readonly outbox: Outbox,
    private readonly cursors: DrainCursors,
    private readonly guard: PoisonGuard,
    private readonly gate: CloudLinkGate,
    private readonly lingerMs: number,
    private readonly clock: Clock,
  ) {}

  /** The next batch of at most `limit` rows, or the wait until one may go (undefined: nothing to send). */
  next(limit: number): PickedBatch | { readonly waitMs: number | undefined } {
    let wait: number | undefined;
    for (const { name, priority } of this.outbox.drainOrder()) {
      let rows: OutboxRow[] = [];
      let live = false;
      for (const range of this.cursors.candidates(name)) {
        rows = this.outbox.peek(name, range.after, this.guard.limitFor(name, range.after, limit), range.upTo);
        live = range.live;
        if (rows.length > 0) break;
        if (range.upTo !== undefined) this.cursors.exhausted(name);
      }
      if (rows.length === 0) continue;
      // The rate cap or the daily budget may hold this stream back (the budget spares priority 0),
      // and a batch that is not full lingers until its oldest reading is old enough.
      let delay = this.gate.delayFor(priority);
      if (delay === 0 && priority > 0 && this.lingerMs > 0 && rows.length < limit) {
        delay = Math.max(0, rows[0]!.createdAt + this.lingerMs - this.clock.now());
      }
      if (delay === 0) return { stream: name, rows, live };
      wait = Math.min(wait ?? delay, delay);
    }
    return { waitMs: wait };
  }
}
