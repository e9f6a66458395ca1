import type { SequenceSource } from './contracts/index.js';
import type { Db } from './store/database.js';

/** Numbers from `base + 1` on, ids `prefix + seq`: the shape every sequence of the gateway has. */
export class CountingSequence implements SequenceSource {
  private n = 0;

  constructor(
    readonly idPrefix: string,
    private readonly base = 0,
    private readonly limit = Number.MAX_SAFE_INTEGER,
  ) {}

  next(): { seq: number; id: string } {
    const { seq0 } = this.reserve(1);
    return { seq: seq0, id: `${this.idPrefix}${seq0}` };
  }

  reserve(n: number): { seq0: number; idPrefix: string } {
    if (this.n + n >= this.limit) throw new Error('sequence exhausted for this boot; restart the gateway');
    const seq0 = this.base + this.n + 1;
    this.n += n;
    return { seq0, idPrefix: this.idPrefix };
  }
}

/**
 * Sequence numbers unique across restarts without a write per reading: each start of the
 * gateway records a new boot number, and seq = boot * 2^32 + n. Good for 2^21 boots of
 * 4 billion readings each within JavaScript's safe integers.
 */
export class BootSequence extends CountingSequence {
  readonly boot: number;

  constructor(db: Db, gatewayId: string) {
    const row = db.prepare('INSERT INTO boots (started_at) VALUES (?) RETURNING boot').get(Date.now()) as { boot: number };
    if (row.boot >= 2 ** 21) throw new Error('boot counter exhausted');
    super(`${gatewayId}:`, row.boot * 2 ** 32, 2 ** 32);
    this.boot = row.boot;
  }
}
