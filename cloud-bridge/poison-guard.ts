/** A batch on its way to the cloud broker. */
export interface SentBatch {
  readonly stream: string;
  readonly first: number;
  readonly last: number;
  readonly rows: number;
}

/** A stream whose oldest rows keep failing: where the bad reading must be. */
interface Suspects {
  /** Rows up to this row id are not suspect (acknowledged, or before the window). */
  after: number;
  /** The window's first row id, when known (the first row of the batch that failed). */
  first: number | undefined;
  /** The bad reading is among the first `window` rows after `after`. */
  window: number;
  /** Rows to put in the next batch that starts there. */
  size: number;
  /** Failures of a single-reading batch (the window is 1). */
  failures: number;
  /** The largest batch acknowledged while narrowing: what went through. */
  good: number;
  /** Failures while narrowing, and the smallest batch among them. */
  narrowed: number;
  smallestFailed: number;
}

/** Batches that grow back by doubling after this many acknowledged at the learned size. */
const GROW_AFTER = 8;

/**
 * Keeps one bad reading from blocking its stream. A broker may refuse a message (an MQTT 5 reason
 * code), drop the connection over it (too large, malformed for its rules), answer with a packet the
 * client rejects, or never acknowledge it. Each time the oldest batch of a stream fails so, the
 * guard narrows where the bad reading can be, by bisection: the failed batch is the window and the
 * next try is its first half; when a half goes through, the bad reading is in the rest, whose
 * first half goes next. Once the window is one reading, that reading is dead-lettered after it
 * failed alone `maxAttempts` times. A batch of n rows is so isolated in at most ⌈log2 n⌉ +
 * maxAttempts failures, counting for the last step only failures of the suspect alone in flight
 * (with several streams in flight, a closed connection cannot say which one broke it, so an innocent
 * reading of another stream is never dead-lettered for it). A flapping link can at worst shrink batches for about one batch's worth of
 * rows (the window is used up by acknowledgements); dead letters are counted, kept and can be
 * replayed.
 */
export class PoisonGuard {
  private readonly heads = new Map<string, Suspects>();
  /**
   * Per stream, a batch size learned from a narrowing that ended without a bad reading: every row
   * went through in smaller batches, so the batches were too large for the broker (a message size
   * limit it does not announce). Later batches keep to it, doubling again after GROW_AFTER
   * acknowledgements, so a stream with a backlog is not narrowed again batch after batch.
   */
  private readonly learned = new Map<string, { rows: number; streak: number; growAfter: number }>();

  constructor(private readonly maxAttempts: number) {}

  /** Rows to put in the next batch of `stream` that starts after row `after`. */
  limitFor(stream: string, after: number, defaultLimit: number): number {
    const head = this.heads.get(stream);
    const limit = Math.min(defaultLimit, this.learned.get(stream)?.rows ?? defaultLimit);
    return head && after <= head.after ? Math.min(head.size, limit) : limit;
  }

  /**
   * Whether some stream is down to one suspect reading. Its failures count only when it was alone
   * in flight (a closed connection says nothing about which of several batches caused it), so
   * batches then go one at a time.
   */
  hasLoneSuspect(): boolean {
    for (const h of this.heads.values()) if (h.window === 1) return true;
    return false;
  }

  /** Streams being narrowed, with the size of their suspect window (for the status). */
  isolating(): Array<{ stream: string; suspects: number }> {
    return [...this.heads].map(([stream, h]) => ({ stream, suspects: h.window }));
  }

  acked(batch: SentBatch): void {
    const head = this.heads.get(batch.stream);
    const learned = this.learned.get(batch.stream);
    if (learned && !head && batch.rows >= learned.rows && ++learned.streak >= learned.growAfter) {
      learned.rows *= 2;
      learned.streak = 0;
      if (learned.rows >= 1 << 20) this.learned.delete(batch.stream);
    }
    // Only the batch that holds the window's first row counts: the one that failed there, or after
    // part of the window went through, the next one acknowledged (acknowledgements come in the order
    // the batches were sent), or one read again from an older row that reaches into the window.
    if (!head || batch.last <= head.after || (head.first !== undefined && batch.first > head.first)) return;
    const rest = head.window - batch.rows;
    head.good = Math.max(head.good, batch.rows);
    if (rest <= 0) {
      this.heads.delete(batch.stream);
      // Everything went through, in batches smaller than every one that failed, after failing more
      // than once: the size was the problem, not a reading (a single failure is a flapping link).
      if (head.narrowed >= 2 && head.good < head.smallestFailed) this.learned.set(batch.stream, { rows: head.good, streak: 0, growAfter: GROW_AFTER });
      return;
    }
    head.after = batch.last;
    head.first = undefined;
    head.window = rest;
    head.size = Math.ceil(rest / 2);
    head.failures = 0;
  }

  /**
   * The batches still unacknowledged when their connection ended, or that the broker refused.
   * Returns the row ids to move to the dead-letter table now, and whether any batch size changed
   * (what was in flight must then not be sent again as it was).
   */
  failed(batches: Iterable<SentBatch>): { deadLetters: Array<{ stream: string; rowid: number }>; changed: boolean } {
    const all = [...batches];
    const oldest = new Map<string, SentBatch>();
    for (const b of all) {
      const o = oldest.get(b.stream);
      if (!o || b.first < o.first) oldest.set(b.stream, b);
    }
    const out: Array<{ stream: string; rowid: number }> = [];
    let changed = false;
    for (const b of oldest.values()) {
      // A batch grown back to a size learned too small failed: back to half, and grow more slowly.
      const learned = this.learned.get(b.stream);
      if (learned && b.rows >= learned.rows && b.rows > 1) {
        learned.rows = Math.ceil(b.rows / 2);
        learned.streak = 0;
        learned.growAfter *= 2;
      }
      let head = this.heads.get(b.stream);
      // The oldest batch in flight starts where the window does, unless it starts before it (read
      // again from an earlier row) or after it (a later batch failed while the window's was still
      // in flight): a new search from this batch.
      const startsWindow = head !== undefined && b.first > head.after && (head.first === undefined || head.first === b.first);
      if (!head || !startsWindow) {
        head = { after: b.first - 1, first: b.first, window: b.rows, size: b.rows, failures: 0, good: 0, narrowed: 0, smallestFailed: b.rows };
        this.heads.set(b.stream, head);
      }
      head.first = b.first;
      head.window = Math.min(head.window, b.rows);
      head.narrowed++;
      head.smallestFailed = Math.min(head.smallestFailed, b.rows);
      if (head.window > 1) {
        head.size = Math.ceil(head.window / 2);
        head.failures = 0;
        changed = true;
        continue;
      }
      head.size = 1;
      // A failure with other batches in flight (of another stream, which may hold the bad reading)
      // is no evidence against this one: it counts once the reading failed alone.
      if (all.length > 1) continue;
      head.failures++;
      if (head.failures < this.maxAttempts) continue;
      changed = true;
      out.push({ stream: b.stream, rowid: b.first });
      this.heads.delete(b.stream);
    }
    return { deadLetters: out, changed };
  }
}
