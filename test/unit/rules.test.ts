import { describe, expect, it } from 'vitest';
import { makeEnvelope, type Clock, type Envelope, type RuleOutput } from '../../runtime/contracts/index.js';
import { Rules } from '../../rules/engine.js';
import type { RuleSpec } from '../../rules/types.js';
import { CountingSequence } from '../../runtime/sequence.js';

class FakeClock implements Clock {
  constructor(public t = 0) {}
  now = (): number => this.t;
  setTimeout = (): { unref(): void } => ({ unref() {} });
  clearTimeout = (): void => {};
}

let n = 0;
const sequence = new CountingSequence('gw:');
const reading = (device: string, point: string, value: Envelope['value'], quality: Envelope['quality'] = 'good'): Envelope =>
  makeEnvelope({ id: `r${++n}`, device, point, value, quality, ts: 0, seq: n });

const filter = {
  id: 'hot',
  type: 'filter',
  match: { device: 'meter-*', point: 'temp' },
  min: 0,
  max: 100,
  route: 'cloud',
  stream: 'telemetry',
} satisfies RuleSpec;
const window = {
  id: 'p1m',
  type: 'window',
  match: { device: '*', point: 'power' },
  windowMs: 1000,
  aggregates: ['avg', 'min', 'max', 'count'],
  route: 'cloud',
  stream: 'telemetry',
} satisfies RuleSpec;

/** An output with its readings one by one: a batch output becomes one entry per reading. */
interface Out {
  readonly route: RuleOutput['route'];
  readonly stream: string;
  readonly envelope: Envelope;
}
const collect =
  (out: Out[]) =>
  (o: RuleOutput): void => {
    if (o.batch) for (const envelope of o.batch) out.push({ route: o.route, stream: o.stream, envelope });
    else out.push({ route: o.route, stream: o.stream, envelope: o.envelope });
  };

function run(rules: Rules, readings: Envelope[]): Out[] {
  const out: Out[] = [];
  for (const r of readings) rules.process(r, collect(out));
  return out;
}

describe('filter rule', () => {
  it('passes values in range on matching devices, and bad quality always', () => {
    const rules = new Rules([filter], new FakeClock(), sequence);
    const out = run(rules, [
      reading('meter-1', 'temp', 20),
      reading('meter-1', 'temp', 120),
      reading('pump-1', 'temp', 20),
      reading('meter-2', 'temp', null, 'bad'),
      reading('meter-2', 'temp', 'hot'),
    ]);
    expect(out.map((o) => [o.envelope.device, o.envelope.value])).toEqual([
      ['meter-1', 20],
      ['meter-2', null],
    ]);
  });

  it('emits a reading once even when two filters pass it', () => {
    const rules = new Rules([filter, { ...filter, id: 'all', min: undefined, max: undefined }], new FakeClock(), sequence);
    expect(run(rules, [reading('meter-1', 'temp', 20)])).toHaveLength(1);
  });

  it('emits a reading once per stream when filters route it to two streams', () => {
    const rules = new Rules([filter, { ...filter, id: 'alarm', stream: 'alarms' }], new FakeClock(), sequence);
    expect(run(rules, [reading('meter-1', 'temp', 20)]).map((o) => o.stream)).toEqual(['telemetry', 'alarms']);
  });
});

describe('tumbling window', () => {
  it('aggregates per device and point and closes on the boundary', () => {
    const clock = new FakeClock(10_000);
    const rules = new Rules([window], clock, sequence);
    run(rules, [reading('m1', 'power', 2), reading('m1', 'power', 4), reading('m2', 'power', 10), reading('m1', 'power', null, 'bad')]);
    const out: Out[] = [];
    rules.tick(10_999, collect(out));
    expect(out).toHaveLength(0);
    expect(rules.nextDeadline()).toBe(11_000);
    rules.tick(11_000, collect(out));
    const m1 = Object.fromEntries(out.filter((o) => o.envelope.device === 'm1').map((o) => [o.envelope.point, o.envelope.value]));
    expect(m1).toEqual({ 'power.avg': 3, 'power.min': 2, 'power.max': 4, 'power.count': 2 });
    expect(out.find((o) => o.envelope.device === 'm2' && o.envelope.point === 'power.avg')?.envelope.id).toBe('p1m:m2:power:avg:10000');
    expect(rules.nextDeadline()).toBeUndefined();
  });

  it('reports an all-bad window as bad quality instead of a number', () => {
    const clock = new FakeClock(0);
    const rules = new Rules([{ ...window, aggregates: ['avg', 'count'] }], clock, sequence);
    run(rules, [reading('m1', 'power', null, 'bad')]);
    const out: Out[] = [];
    rules.tick(1000, collect(out));
    expect(out.map((o) => [o.envelope.point, o.envelope.value, o.envelope.quality])).toEqual([
      ['power.avg', null, 'bad'],
      ['power.count', 0, 'good'],
    ]);
  });

  it('restores open windows from saved state after a restart', () => {
    const clock = new FakeClock(5_000);
    const before = new Rules([window], clock, sequence);
    run(before, [reading('m1', 'power', 1), reading('m1', 'power', 3)]);
    const saved = before.takeDirtyState();
    expect(saved).toHaveLength(1);
    const after = new Rules([window], clock, sequence);
    after.restore(saved);
    run(after, [reading('m1', 'power', 5)]);
    const out: Out[] = [];
    after.tick(6_000, collect(out));
    expect(out.find((o) => o.envelope.point === 'power.avg')?.envelope.value).toBe(3);
    expect(out.find((o) => o.envelope.point === 'power.count')?.envelope.value).toBe(3);
    expect(after.takeDirtyState()).toEqual([{ key: saved[0]!.key, state: null }]);
  });
});
