import { describe, expect, it } from 'vitest';
import { DrainCursors } from '../../cloud-bridge/drain-cursors.js';

/** One stream's rows (ids ascending), read through the cursors as the uplink reads the outbox. */
class Stream {
  constructor(
    readonly name: string,
    public rows: number[],
  ) {}

  peek(after: number, limit: number, upTo?: number): number[] {
    return this.rows.filter((r) => r > after && (upTo === undefined || r <= upTo)).slice(0, limit);
  }

  /** The next batch as the uplink picks it: the first candidate range that has rows. */
  next(cursors: DrainCursors, limit: number): { rows: number[]; live: boolean } | undefined {
    for (const range of cursors.candidates(this.name)) {
      const rows = this.peek(range.after, limit, range.upTo);
      if (rows.length > 0) return { rows, live: range.live };
      if (range.upTo !== undefined) cursors.exhausted(this.name);
    }
    return undefined;
  }

  /** Sends batches until none is left or `max` were sent; returns them. */
  drain(cursors: DrainCursors, limit: number, max = 1000): Array<{ rows: number[]; live: boolean }> {
    const out: Array<{ rows: number[]; live: boolean }> = [];
    while (out.length < max) {
      const b = this.next(cursors, limit);
      if (!b) break;
      cursors.sent(this.name, b.rows.at(-1)!, b.live, b.rows.length);
      out.push(b);
    }
    return out;
  }
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('drain cursors', () => {
  it('with liveShare 0 drain strictly oldest first, live rows after the whole backlog', () => {
    const cursors = new DrainCursors(0);
    const s = new Stream('t', range(1, 100));
    cursors.reset(60);
    const sent = s.drain(cursors, 10).flatMap((b) => b.rows);
    expect(sent).toEqual(range(1, 100));
  });

  it('with liveShare 0 offer one range only, from where the last batch ended', () => {
    const cursors = new DrainCursors(0);
    cursors.reset(50);
    expect(cursors.candidates('t')).toEqual([{ after: 0, live: false }]);
    cursors.sent('t', 10, false, 10);
    expect(cursors.candidates('t')).toEqual([{ after: 10, live: false }]);
  });

  it('with a live share, live readings take about that share of what is sent while a backlog remains', () => {
    const cursors = new DrainCursors(0.25);
    const s = new Stream('t', range(1, 1000));
    // Rows up to 800 were stored before the session: backlog; 801..1000 are live.
    cursors.reset(800);
    const batches = s.drain(cursors, 10, 40);
    const live = batches.filter((b) => b.live).flatMap((b) => b.rows);
    const backlog = batches.filter((b) => !b.live).flatMap((b) => b.rows);
    expect(live.length).toBe(100);
    expect(backlog.length).toBe(300);
    // Each part keeps its own order.
    expect(live).toEqual(range(801, 900));
    expect(backlog).toEqual(range(1, 300));
  });

  it('sends the first batch of a session live when a live share is set and live rows exist', () => {
    const cursors = new DrainCursors(0.5);
    const s = new Stream('t', range(1, 30));
    cursors.reset(20);
    expect(s.next(cursors, 5)).toEqual({ rows: range(21, 25), live: true });
  });

  it('falls back to the other part when the preferred one is empty', () => {
    const cursors = new DrainCursors(0.5);
    // Nothing live yet: the backlog goes even though live is due.
    const s = new Stream('t', range(1, 20));
    cursors.reset(20);
    const all = s.drain(cursors, 5);
    expect(all.every((b) => !b.live)).toBe(true);
    expect(all.flatMap((b) => b.rows)).toEqual(range(1, 20));
  });

  it('once the backlog is exhausted, read one live range to the end', () => {
    const cursors = new DrainCursors(0.5);
    const s = new Stream('t', range(1, 10));
    cursors.reset(10);
    s.drain(cursors, 5);
    expect(cursors.candidates('t')).toEqual([{ after: 10, live: true }]);
    // New rows arrive: live, in order.
    s.rows = range(1, 16);
    expect(s.drain(cursors, 5).flatMap((b) => b.rows)).toEqual(range(11, 16));
  });

  it('rewinds a failed backlog batch so its rows are read again, and never skips ahead', () => {
    const cursors = new DrainCursors(0);
    const s = new Stream('t', range(1, 30));
    cursors.reset(30);
    s.drain(cursors, 10, 3);
    // Batches 1..10 and 21..30 failed (in either order): reading starts again at row 1.
    cursors.rewind('t', 21, false);
    cursors.rewind('t', 1, false);
    cursors.rewind('t', 21, false);
    expect(cursors.candidates('t')).toEqual([{ after: 0, live: false }]);
    expect(s.drain(cursors, 10).flatMap((b) => b.rows)).toEqual(range(1, 30));
  });

  it('rewinds a failed live batch in the live part only', () => {
    const cursors = new DrainCursors(0.5);
    const s = new Stream('t', range(1, 40));
    cursors.reset(20);
    const sent = s.drain(cursors, 5, 4);
    const firstLive = sent.find((b) => b.live)!;
    cursors.rewind('t', firstLive.rows[0]!, true);
    const again = s.drain(cursors, 5, 2).find((b) => b.live)!;
    expect(again.rows).toEqual(firstLive.rows);
  });

  it('a rewound backlog batch brings the exhausted backlog back', () => {
    const cursors = new DrainCursors(0.5);
    const s = new Stream('t', range(1, 10));
    cursors.reset(10);
    const sent = s.drain(cursors, 10);
    expect(cursors.candidates('t')).toEqual([{ after: 10, live: true }]);
    cursors.rewind('t', sent[0]!.rows[0]!, false);
    expect(s.drain(cursors, 10).flatMap((b) => b.rows)).toEqual(range(1, 10));
  });

  it('a new session forgets what was sent: everything stored so far is backlog, read from the oldest row', () => {
    const cursors = new DrainCursors(0.5);
    const s = new Stream('t', range(1, 40));
    cursors.reset(20);
    s.drain(cursors, 5, 3);
    cursors.reset(40);
    expect(s.drain(cursors, 5).flatMap((b) => b.rows)).toEqual(range(1, 40));
  });

  it('keeps each stream’s position apart', () => {
    const cursors = new DrainCursors(0);
    cursors.reset(0);
    cursors.sent('a', 10, false, 10);
    expect(cursors.candidates('b')).toEqual([{ after: 0, live: false }]);
    expect(cursors.candidates('a')).toEqual([{ after: 10, live: false }]);
  });
});
