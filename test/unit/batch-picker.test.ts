import { describe, expect, it } from 'vitest';
import { BatchPicker } from '../../cloud-bridge/batch-picker.js';
import { DrainCursors } from '../../cloud-bridge/drain-cursors.js';
import { PoisonGuard } from '../../cloud-bridge/poison-guard.js';
import { ManualClock } from '../helpers/fakes.js';
import { MemoryOutbox } from './uplink-peers.js';

const ids = (prefix: string, n: number): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

function setup(opts: { lingerMs?: number; delayFor?: (priority: number) => number; maxAttempts?: number } = {}) {
  const clock = new ManualClock();
  clock.t = 1_000_000;
  const outbox = new MemoryOutbox([
    { name: 'telemetry', priority: 5 },
    { name: 'alarms', priority: 0 },
  ]);
  const cursors = new DrainCursors(0);
  cursors.reset(0);
  const guard = new PoisonGuard(opts.maxAttempts ?? 1);
  const picker = new BatchPicker(outbox, cursors, guard, opts.delayFor ?? (() => 0), opts.lingerMs ?? 0, clock);
  const idsOf = (r: ReturnType<BatchPicker['next']>): string[] =>
    r && 'batch' in r ? r.batch.rows.map((x) => (JSON.parse(x.body) as { id: string }).id) : [];
  return { clock, outbox, cursors, guard, picker, idsOf };
}

describe('batch picker', () => {
  it('takes the highest priority stream first, its oldest rows, at most the limit', () => {
    const { clock, outbox, picker, idsOf } = setup();
    outbox.add('telemetry', ids('t', 5), clock.now());
    outbox.add('alarms', ids('a', 3), clock.now());
    expect(idsOf(picker.next(2))).toEqual(['a0', 'a1']);
  });

  it('takes the next stream once the first has nothing left to send', () => {
    const { clock, outbox, cursors, picker, idsOf } = setup();
    outbox.add('telemetry', ids('t', 5), clock.now());
    const [alarm] = outbox.add('alarms', ['a0'], clock.now());
    cursors.sent('alarms', alarm!.rowid, false, 1);
    expect(idsOf(picker.next(10))).toEqual(ids('t', 5));
  });

  it('nothing to send: no batch and no wait', () => {
    expect(setup().picker.next(10)).toBeUndefined();
  });

  it('a batch that is not full lingers until its oldest reading is lingerMs old; a full one goes now', () => {
    const { clock, outbox, picker, idsOf } = setup({ lingerMs: 5000 });
    outbox.add('telemetry', ids('t', 3), clock.now());
    clock.t += 2000;
    expect(picker.next(10)).toEqual({ waitMs: 3000 });
    expect(idsOf(picker.next(3))).toEqual(ids('t', 3));
    clock.t += 3000;
    expect(idsOf(picker.next(10))).toEqual(ids('t', 3));
  });

  it('priority 0 never lingers', () => {
    const { clock, outbox, picker, idsOf } = setup({ lingerMs: 5000 });
    outbox.add('alarms', ['a0'], clock.now());
    expect(idsOf(picker.next(10))).toEqual(['a0']);
  });

  it('a stream held back by the budget lets the next one go; when all are held, the shortest wait is returned', () => {
    const { clock, outbox, picker, idsOf } = setup({ delayFor: (p) => (p === 0 ? 0 : 7000) });
    outbox.add('telemetry', ids('t', 3), clock.now());
    expect(picker.next(10)).toEqual({ waitMs: 7000 });
    outbox.add('alarms', ['a0'], clock.now());
    expect(idsOf(picker.next(10))).toEqual(['a0']);
  });

  it('narrows the batch that starts at a failing head to the size the poison guard allows', () => {
    const { clock, outbox, guard, picker, idsOf } = setup({ maxAttempts: 1 });
    const rows = outbox.add('telemetry', ids('t', 8), clock.now());
    guard.failed([{ stream: 'telemetry', first: rows[0]!.rowid, last: rows[7]!.rowid, rows: 8 }]);
    expect(idsOf(picker.next(8))).toEqual(ids('t', 4));
  });

  it('a lingering batch is read once per linger, not on every commit, and goes as soon as enough rows came to fill it', () => {
    const { clock, outbox, picker, idsOf } = setup({ lingerMs: 5000 });
    let reads = 0;
    const peek = outbox.peek.bind(outbox);
    outbox.peek = (...args: Parameters<typeof peek>) => {
      if (args[0] === 'telemetry') reads++;
      return peek(...args);
    };
    outbox.add('telemetry', ids('t', 3), clock.now());
    clock.t += 1000;
    expect(picker.next(10)).toEqual({ waitMs: 4000 });
    // Commits that cannot fill the batch (a connection storm: a birth or a reading each).
    for (let i = 3; i < 9; i++) {
      outbox.add('telemetry', [`t${i}`], clock.now());
      clock.t += 10;
      expect(picker.next(10)).toEqual({ waitMs: 4000 - (i - 2) * 10 });
    }
    expect(reads).toBe(1);
    // A smaller window could be filled by what is there: read again.
    expect(idsOf(picker.next(9))).toEqual(ids('t', 9));
    expect(reads).toBe(2);
    // The tenth row can fill a batch of 10: it goes at once.
    outbox.add('telemetry', ['t9'], clock.now());
    expect(idsOf(picker.next(10))).toEqual(ids('t', 10));
    expect(reads).toBe(3);
  });

  it('a lingering batch goes when its linger ends, with no new rows', () => {
    const { clock, outbox, picker, idsOf } = setup({ lingerMs: 5000 });
    outbox.add('telemetry', ids('t', 2), clock.now());
    expect(picker.next(10)).toEqual({ waitMs: 5000 });
    clock.t += 5000;
    expect(idsOf(picker.next(10))).toEqual(ids('t', 2));
  });
});
