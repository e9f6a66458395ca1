import type { SequenceSource } from './contracts/index.js';
import type { Db } from './store/database.js';

/**
 * Sequence numbers unique across restarts without a write per reading: each start of the
 * gateway records a new boot number, and seq = boot * 2^32 + n. Good for 2^21 boots of
 * 4 billion readings each within JavaScript's safe integers.
 */
export class BootSequence implements SequenceSource {
  private n = 0;
  readonly boot: number;

  constructor(
    db: Db,
    private readonly gatewayId: string,
  ) {
    const row = db.prepare('INSERT INTO boots (started_at) VALUES (?) RETURNING boot').get(Date.now()) as { boot: number };
    this.boot = row.boot;
    if (this.boot >= 2 ** 21) throw new Error('boot counter exhausted');
  }

  next(): { seq: number; id: string } {
    this.n++;
    if (this.n >= 2 ** 32) throw new Error('sequence exhausted for this boot; restart the gateway');
    const seq = this.boot * 2 ** 32 + this.n;
    return { seq, id: `${this.gatewayId}:${seq}` };
  }
}
