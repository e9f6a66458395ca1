import { describe, expect, it } from 'vitest';
import { PoisonGuard, type SentBatch } from '../../cloud-bridge/poison-guard.js';

const batch = (stream: string, first: number, rows: number): SentBatch => ({ stream, first, last: first + rows - 1, rows });

/**
 * Drives the guard as the uplink does: the oldest batch of `stream` is read from row 1 with the
 * size the guard allows, and fails until `poison` is no longer in it (then it is acknowledged).
 * Returns every failure in order and the row dead-lettered, if any.
 */
function isolate(guard: PoisonGuard, stream: string, rows: number, poison: number, batchSize: number): { sizes: number[]; deadLetter?: number } {
  const sizes: number[] = [];
  let first = 1;
  for (let tries = 0; tries < 1000; tries++) {
    const size = Math.min(guard.limitFor(stream, first - 1, batchSize), rows - first + 1);
    if (size <= 0) return { sizes };
    const b = batch(stream, first, size);
    if (poison < b.first || poison > b.last) {
      guard.acked(b);
      first = b.last + 1;
      continue;
    }
    sizes.push(size);
    const { deadLetters } = guard.failed([b]);
    if (deadLetters.length > 0) {
      expect(deadLetters).toEqual([{ stream, rowid: poison }]);
      return { sizes, deadLetter: poison };
    }
  }
  throw new Error('the guard never isolated the reading');
}

describe('poison guard', () => {
  it('bisects a stream’s failing oldest batch down to the one bad reading, then dead-letters it after maxAttempts failures alone', () => {
    const guard = new PoisonGuard(3);
    const { sizes, deadLetter } = isolate(guard, 'telemetry', 8, 1, 8);
    expect(sizes).toEqual([8, 4, 2, 1, 1, 1]);
    expect(deadLetter).toBe(1);
    // Isolated: the stream goes back to full batches.
    expect(guard.limitFor('telemetry', 0, 8)).toBe(8);
  });

  it('isolates a bad reading anywhere in a batch of 500 within ⌈log2 500⌉ + maxAttempts failures', () => {
    for (const poison of [1, 2, 137, 250, 251, 499, 500]) {
      const guard = new PoisonGuard(8);
      const { sizes, deadLetter } = isolate(guard, 's', 600, poison, 500);
      expect(deadLetter).toBe(poison);
      expect(sizes.length).toBeLessThanOrEqual(9 + 8);
    }
  });

  it('only narrows batches that start at the failing head; later rows of the stream go in full batches', () => {
    const guard = new PoisonGuard(2);
    guard.failed([batch('s', 11, 8)]);
    guard.failed([batch('s', 11, 8)]);
    expect(guard.limitFor('s', 10, 8)).toBe(4);
    expect(guard.limitFor('s', 0, 8)).toBe(4);
    expect(guard.limitFor('s', 18, 8)).toBe(8);
  });

  it('dead-letters a reading that fails alone maxAttempts times, and not one attempt sooner', () => {
    const guard = new PoisonGuard(4);
    for (let i = 1; i < 4; i++) {
      expect(guard.failed([batch('s', 7, 1)])).toEqual({ deadLetters: [], changed: false });
    }
    expect(guard.failed([batch('s', 7, 1)])).toEqual({ deadLetters: [{ stream: 's', rowid: 7 }], changed: true });
  });

  it('a reading with a bad neighbour is delivered once it is sent without it', () => {
    const guard = new PoisonGuard(2);
    const { deadLetter } = isolate(guard, 's', 16, 6, 16);
    expect(deadLetter).toBe(6);
  });

  it('acknowledgements use up the suspect rows; when all went through (a flapping link, no bad reading), batches are full again', () => {
    const guard = new PoisonGuard(3);
    expect(guard.failed([batch('s', 1, 8)]).changed).toBe(true);
    expect(guard.limitFor('s', 0, 8)).toBe(4);
    guard.acked(batch('s', 1, 4));
    // The bad reading, if any, is among rows 5–8: their first half goes next.
    expect(guard.limitFor('s', 4, 8)).toBe(2);
    expect(guard.isolating()).toEqual([{ stream: 's', suspects: 4 }]);
    guard.acked(batch('s', 5, 2));
    expect(guard.limitFor('s', 6, 8)).toBe(1);
    guard.acked(batch('s', 7, 1));
    guard.acked(batch('s', 8, 1));
    expect(guard.isolating()).toEqual([]);
    expect(guard.limitFor('s', 8, 8)).toBe(8);
  });

  it('an acknowledgement of a later batch does not clear the head', () => {
    const guard = new PoisonGuard(2);
    guard.failed([batch('s', 1, 8)]);
    guard.acked(batch('s', 9, 8));
    expect(guard.limitFor('s', 0, 8)).toBe(4);
  });

  it('a failed batch that starts before the suspect rows (read again from an older row) starts a new search', () => {
    const guard = new PoisonGuard(2);
    guard.failed([batch('s', 5, 2)]);
    expect(guard.limitFor('s', 4, 8)).toBe(1);
    guard.failed([batch('s', 1, 8)]);
    expect(guard.limitFor('s', 0, 8)).toBe(4);
  });

  it('keeps each stream’s count apart, and counts only the oldest batch of a stream per failure', () => {
    const guard = new PoisonGuard(2);
    // A connection lost with three batches of `a` and one of `b` in flight: each stream's oldest is halved.
    expect(guard.failed([batch('a', 9, 8), batch('a', 1, 8), batch('b', 100, 4), batch('a', 17, 8)])).toEqual({ deadLetters: [], changed: true });
    expect(guard.limitFor('a', 0, 8)).toBe(4);
    expect(guard.limitFor('a', 8, 8)).toBe(8);
    expect(guard.limitFor('b', 99, 8)).toBe(2);
    // `b` acknowledged, its half and then the rest: `a` stays narrowed.
    guard.acked(batch('b', 100, 2));
    expect(guard.limitFor('b', 101, 8)).toBe(1);
    guard.acked(batch('b', 102, 2));
    expect(guard.limitFor('b', 99, 8)).toBe(8);
    expect(guard.limitFor('a', 0, 8)).toBe(4);
    expect(guard.limitFor('c', 0, 8)).toBe(8);
  });

  it('learns a batch size the broker takes when every row goes through in smaller batches, and grows back', () => {
    const guard = new PoisonGuard(2);
    // A broker that refuses any batch over 20 rows (a message size limit it does not announce); 1000 rows of backlog.
    let next = 1;
    let failures = 0;
    const sizes: number[] = [];
    while (next <= 1000) {
      const size = Math.min(guard.limitFor('t', next - 1, 500), 1000 - next + 1);
      const b = batch('t', next, size);
      if (size > 20) {
        failures++;
        expect(guard.failed([b]).deadLetters).toEqual([]);
        continue;
      }
      guard.acked(b);
      sizes.push(size);
      next += size;
    }
    // Narrowed once (500 -> 250 -> 125 -> 63 -> 32 -> 16), then kept to what went through, doubling
    // after 8 batches: one more refusal each time it grows past the limit.
    expect(failures).toBeLessThanOrEqual(5 + Math.ceil(1000 / (16 * 8)));
    expect(Math.max(...sizes)).toBeLessThanOrEqual(20);
    expect(guard.isolating()).toEqual([]);
  });

  it('never dead-letters an innocent reading of another stream that was in flight when the connection broke', () => {
    const guard = new PoisonGuard(2);
    // Stream "twins" has one good row in flight each time "telemetry"'s bad row breaks the connection.
    for (let i = 0; i < 10; i++) {
      const { deadLetters } = guard.failed([batch('telemetry', 3, 1), batch('twins', 50, 1)]);
      expect(deadLetters).toEqual([]);
    }
    expect(guard.hasLoneSuspect()).toBe(true);
    // Alone, the bad row fails twice and is dead-lettered; the twins row alone goes through.
    expect(guard.failed([batch('telemetry', 3, 1)]).deadLetters).toEqual([]);
    expect(guard.failed([batch('telemetry', 3, 1)]).deadLetters).toEqual([{ stream: 'telemetry', rowid: 3 }]);
    guard.acked(batch('twins', 50, 1));
    expect(guard.isolating()).toEqual([]);
  });

  it('isolates bad readings in several streams failing on the same connections, delivering every other reading', () => {
    const guard = new PoisonGuard(2);
    const streams = [
      { name: 'a', first: 1, end: 8, poison: 3, next: 1, delivered: [] as number[] },
      { name: 'b', first: 101, end: 104, poison: 104, next: 101, delivered: [] as number[] },
    ];
    const dead: Array<{ stream: string; rowid: number }> = [];
    for (let round = 0; round < 50; round++) {
      // Each stream sends what the guard allows; batches without a bad reading are acknowledged.
      const failing: SentBatch[] = [];
      for (const s of streams) {
        while (s.next <= s.end) {
          const size = Math.min(guard.limitFor(s.name, s.next - 1, 8), s.end - s.next + 1);
          const b = batch(s.name, s.next, size);
          const bad = !dead.some((d) => d.stream === s.name) && s.poison >= b.first && s.poison <= b.last;
          if (bad) {
            failing.push(b);
            break;
          }
          guard.acked(b);
          for (let r = b.first; r <= b.last; r++) if (r !== s.poison) s.delivered.push(r);
          s.next = b.last + 1;
        }
      }
      if (failing.length === 0) break;
      // The connection drops with both in flight: one failure for each stream. Once a stream is
      // down to one suspect, batches go one at a time (as the uplink sends them then).
      const { deadLetters } = guard.failed(guard.hasLoneSuspect() ? failing.slice(0, 1) : failing);
      dead.push(...deadLetters);
      for (const d of deadLetters) {
        const s = streams.find((x) => x.name === d.stream)!;
        if (s.next === d.rowid) s.next++;
      }
    }
    expect(dead.sort((x, y) => x.rowid - y.rowid)).toEqual([
      { stream: 'a', rowid: 3 },
      { stream: 'b', rowid: 104 },
    ]);
    expect(streams[0]!.delivered.sort((x, y) => x - y)).toEqual([1, 2, 4, 5, 6, 7, 8]);
    expect(streams[1]!.delivered).toEqual([101, 102, 103]);
  });
});
