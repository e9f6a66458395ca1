import { describe, expect, it } from 'vitest';
import { DrainCursors } from '../../cloud-bridge/drain-cursors.js';

describe('drain cursors', () => {
  it('with liveShare 0 reads each stream strictly oldest first, one range', () => {
    const c = new DrainCursors(0);
    c.reset(100);
    expect(c.candidates('t')).toEqual([{ after: 0, live: false }]);
    c.sent('t', 40, false, 40);
    expect(c.candidates('t')).toEqual([{ after: 40, live: false }]);
    // Another stream has its own cursor.
    expect(c.candidates('a')).toEqual([{ after: 0, live: false }]);
  });

  it('rewinds to the first row of a batch that failed, never forward', () => {
    const c = new DrainCursors(0);
    c.reset(0);
    c.sent('t', 10, false, 10);
    c.sent('t', 20, false, 10);
    c.rewind('t', 11, false);
    expect(c.candidates('t')).toEqual([{ after: 10, live: false }]);
    c.rewind('t', 15, false);
    expect(c.candidates('t')).toEqual([{ after: 10, live: false }]);
  });

  it('with a live share splits backlog (up to the session watermark) and live rows, and gives live rows about that share', () => {
    const c = new DrainCursors(0.25);
    c.reset(1000);
    let live = 0;
    let backlog = 0;
    for (let i = 0; i < 400; i++) {
      const [first] = c.candidates('t');
      if (first!.live) {
        live++;
        c.sent('t', 1000 + live, true, 1);
      } else {
        expect(first!.upTo).toBe(1000);
        backlog++;
        c.sent('t', backlog, false, 1);
      }
    }
    expect(live / (live + backlog)).toBeCloseTo(0.25, 1);
  });

  it('reads only live rows once the backlog range came back empty, until a backlog batch is rewound', () => {
    const c = new DrainCursors(0.5);
    c.reset(50);
    c.exhausted('t');
    expect(c.candidates('t')).toEqual([{ after: 50, live: true }]);
    c.sent('t', 40, false, 40);
    c.rewind('t', 30, false);
    expect(c.candidates('t')).toContainEqual({ after: 29, upTo: 50, live: false });
  });

  it('starts every session from the oldest row again', () => {
    const c = new DrainCursors(0);
    c.reset(0);
    c.sent('t', 99, false, 99);
    c.reset(200);
    expect(c.candidates('t')).toEqual([{ after: 0, live: false }]);
  });
});
