import { describe, expect, it } from 'vitest';
import { PoisonGuard, type SentBatch } from '../../cloud-bridge/poison-guard.js';

const batch = (stream: string, first: number, rows: number): SentBatch => ({ stream, first, last: first + rows - 1, rows });

describe('poison guard', () => {
  it('lets a batch fail maxAttempts times, then halves it, until one reading that fails alone is dead-lettered', () => {
    const g = new PoisonGuard(2);
    // The oldest batch of 8 rows starting at row 100 keeps failing.
    const sizes: number[] = [];
    let dead: Array<{ stream: string; rowid: number }> = [];
    for (let attempt = 0; attempt < 20 && dead.length === 0; attempt++) {
      const size = g.limitFor('t', 99, 8);
      sizes.push(size);
      const r = g.failed([batch('t', 100, size)]);
      dead = r.deadLetters;
    }
    expect(sizes).toEqual([8, 8, 4, 4, 2, 2, 1, 1]);
    expect(dead).toEqual([{ stream: 't', rowid: 100 }]);
    // Isolation is over: full batches again.
    expect(g.limitFor('t', 99, 8)).toBe(8);
  });

  it('says when batch sizes changed, so what was in flight is not sent again as it was', () => {
    const g = new PoisonGuard(2);
    expect(g.failed([batch('t', 1, 8)]).changed).toBe(false);
    expect(g.failed([batch('t', 1, 8)]).changed).toBe(true);
  });

  it('forgets the count once the oldest batch is acknowledged', () => {
    const g = new PoisonGuard(2);
    g.failed([batch('t', 1, 8)]);
    g.acked(batch('t', 1, 8));
    expect(g.failed([batch('t', 1, 8)]).changed).toBe(false);
    expect(g.limitFor('t', 0, 8)).toBe(8);
  });

  it('counts only the oldest batch of each stream, and streams apart', () => {
    const g = new PoisonGuard(2);
    // Two batches of stream a in flight and one of b: only a's oldest and b's count.
    g.failed([batch('a', 10, 4), batch('a', 14, 4), batch('b', 1, 4)]);
    const r = g.failed([batch('a', 10, 4), batch('a', 14, 4), batch('b', 1, 4)]);
    expect(r.changed).toBe(true);
    expect(g.limitFor('a', 9, 4)).toBe(2);
    expect(g.limitFor('b', 0, 4)).toBe(2);
    // A batch after the head is not held back.
    expect(g.limitFor('a', 14, 4)).toBe(4);
  });

  it('starts over when the head moved (another row became the oldest)', () => {
    const g = new PoisonGuard(2);
    g.failed([batch('t', 1, 8)]);
    expect(g.failed([batch('t', 9, 8)]).changed).toBe(false);
  });
});
