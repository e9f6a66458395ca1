/** A batch on its way to the cloud broker. */
export interface SentBatch {
  readonly stream: string;
  readonly first: number;
  readonly last: number;
  readonly rows: number;
}

interface Head {
  first: number;
  /** Rows per batch while this head is being isolated. */
  size: number;
  failures: number;
}

/**
 * Keeps one bad reading from blocking its stream forever. A broker may refuse a message (an MQTT 5
 * reason code) or drop the connection over it (too large, malformed for its rules); each time the
 * oldest batch of a stream fails so, it counts. After `maxAttempts` failures the batch is halved,
 * and so on, until the one reading that fails alone `maxAttempts` times goes to the dead-letter
 * table. Any acknowledgement of the oldest batch clears the count. A flapping link can at worst
 * shrink batches for a while; dead letters are counted, kept and can be replayed.
 */
export class PoisonGuard {
  private readonly heads = new Map<string, Head>();

  constructor(private readonly maxAttempts: number) {}

  /** Rows to put in the next batch of `stream` that starts after row `after`. */
  limitFor(stream: string, after: number, defaultLimit: number): number {
    const head = this.heads.get(stream);
    return head && after < head.first ? Math.min(head.size, defaultLimit) : defaultLimit;
  }

  acked(batch: SentBatch): void {
    const head = this.heads.get(batch.stream);
    if (head && batch.first <= head.first && head.first <= batch.last) this.heads.delete(batch.stream);
  }

  /**
   * The batches still unacknowledged when their connection ended, or that the broker refused.
   * Returns the row ids to move to the dead-letter table now, and whether any batch size changed
   * (what was in flight must then not be sent again as it was).
   */
  failed(batches: Iterable<SentBatch>): { deadLetters: Array<{ stream: string; rowid: number }>; changed: boolean } {
    const oldest = new Map<string, SentBatch>();
    for (const b of batches) {
      const o = oldest.get(b.stream);
      if (!o || b.first < o.first) oldest.set(b.stream, b);
    }
    const out: Array<{ stream: string; rowid: number }> = [];
    let changed = false;
    for (const b of oldest.values()) {
      let head = this.heads.get(b.stream);
      if (!head || head.first !== b.first) {
        head = { first: b.first, size: b.rows, failures: 0 };
        this.heads.set(b.stream, head);
      }
      head.size = Math.min(head.size, b.rows);
      head.failures++;
      if (head.failures < this.maxAttempts) continue;
      changed = true;
      if (head.size > 1) {
        head.size = Math.ceil(head.size / 2);
        head.failures = 0;
      } else {
        out.push({ stream: b.stream, rowid: b.first });
        this.heads.delete(b.stream);
      }
    }
    return { deadLetters: out, changed };
  }
}
