import { describe, expect, it } from 'vitest';
import { makeEnvelope, ManualClock, type Envelope, type RuleOutput } from '../../runtime/contracts/index.js';
import { Rules } from '../../rules/engine.js';
import { FilterRule } from '../../rules/filter.js';
import { WindowRule } from '../../rules/window.js';
import type { RuleSpec } from '../../rules/types.js';
import { CountingSequence } from '../../runtime/sequence.js';
import { PromMetrics } from '../../runtime/metrics.js';


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
    // Local routes are listed under their target: the topic, or device/point.
    const stream = o.route === 'cloud' ? o.stream : o.route === 'mqtt' ? o.topic : o.route === 'call' ? `${o.device}/${o.method}` : `${o.device}/${o.point}`;
    if (o.batch) for (const envelope of o.batch) out.push({ route: o.route, stream, envelope });
    else out.push({ route: o.route, stream, envelope: o.envelope });
  };

function run(rules: Rules, readings: Envelope[]): Out[] {
  const out: Out[] = [];
  for (const r of readings) rules.process(r, collect(out));
  return out;
}

describe('filter rule', () => {
  it('passes values in range on matching devices, and bad quality always', () => {
    const rules = new Rules([filter], new ManualClock(), sequence);
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
    const rules = new Rules([filter, { ...filter, id: 'all', min: undefined, max: undefined }], new ManualClock(), sequence);
    expect(run(rules, [reading('meter-1', 'temp', 20)])).toHaveLength(1);
  });

  it('emits a reading once per stream when filters route it to two streams', () => {
    const rules = new Rules([filter, { ...filter, id: 'alarm', stream: 'alarms' }], new ManualClock(), sequence);
    expect(run(rules, [reading('meter-1', 'temp', 20)]).map((o) => o.stream)).toEqual(['telemetry', 'alarms']);
  });
});

describe('tumbling window', () => {
  it('aggregates per device and point and closes on the boundary', () => {
    const clock = new ManualClock(10_000);
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

  it('rounds aggregates to the rule\'s precision (6 decimals by default), without binary noise', () => {
    const values = [1.804, 1.812, 1.808, 1.81, 1.806];
    const noisy = values.reduce((a, b) => a + b, 0) / values.length;
    expect(noisy).not.toBe(1.808); // 1.8079999999999998 in floating point
    for (const [rule, want] of [
      [window, 1.808],
      [{ ...window, precision: 2 }, 1.81],
    ] as const) {
      const clock = new ManualClock(10_000);
      const rules = new Rules([{ ...rule, aggregates: ['avg', 'sum'] }], clock, sequence);
      run(rules, values.map((v) => reading('m1', 'power', v)));
      const out: Out[] = [];
      rules.tick(11_000, collect(out));
      const got = Object.fromEntries(out.map((o) => [o.envelope.point, o.envelope.value]));
      expect(got['power.avg']).toBe(want);
      expect(got['power.sum']).toBe(rule === window ? 9.04 : 9.04);
    }
  });

  it('reports an all-bad window as bad quality instead of a number', () => {
    const clock = new ManualClock(0);
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
    const clock = new ManualClock(5_000);
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

describe('filter rules with expressions and operators', () => {
  const base = { id: 'r', type: 'filter', match: { device: '*', point: '*' }, route: 'cloud', stream: 'telemetry' } as const;
  const at = (device: string, point: string, value: Envelope['value'], ts = 0, quality: Envelope['quality'] = 'good'): Envelope =>
    makeEnvelope({ id: `gw:${++n}`, device, point, value, quality, ts, seq: n, unit: 'degC' });
  const values = (out: Out[]): Envelope['value'][] => out.map((o) => o.envelope.value);

  it('passes what `where` is true for; bad readings pass untouched unless told otherwise', () => {
    const rules = new Rules([{ ...base, where: 'value > 50 and device = "m1"' }], new ManualClock(), sequence);
    const out = run(rules, [at('m1', 't', 60), at('m1', 't', 40), at('m2', 't', 60), at('m1', 't', null, 0, 'bad')]);
    expect(out.map((o) => [o.envelope.device, o.envelope.value, o.envelope.quality])).toEqual([
      ['m1', 60, 'good'],
      ['m1', null, 'bad'],
    ]);
    const drop = new Rules([{ ...base, where: 'value > 50', bad: 'drop' }], new ManualClock(), sequence);
    expect(run(drop, [at('m1', 't', null, 0, 'bad'), at('m1', 't', 51)])).toHaveLength(1);
    // An alert on failures: `where` sees bad readings too.
    const alert = new Rules([{ ...base, where: 'quality != "good"', bad: 'filter' }], new ManualClock(), sequence);
    expect(run(alert, [at('m1', 't', 5), at('m1', 't', null, 0, 'stale')]).map((o) => o.envelope.quality)).toEqual(['stale']);
  });

  it('matches by MQTT topic filter over device/point', () => {
    const rules = new Rules([{ ...base, match: { device: '*', point: '*', topic: '+/temp' } }], new ManualClock(), sequence);
    expect(run(rules, [at('m1', 'temp', 1), at('m1', 'flow', 2), at('m2', 'temp', 3)]).map((o) => o.envelope.device)).toEqual(['m1', 'm2']);
  });

  it('transforms value, point and unit into a new reading with a derived id', () => {
    const rules = new Rules([{ ...base, set: { value: '$round(value * 1.8 + 32, 1)', point: 'point & "_f"', unit: '"degF"' } }], new ManualClock(), sequence);
    const r = at('m1', 'temp', 21.5);
    const [o] = run(rules, [r]);
    expect(o!.envelope).toMatchObject({ id: `${r.id}/r`, device: 'm1', point: 'temp_f', value: 70.7, unit: 'degF', rule: 'r', ts: r.ts });
    expect(o!.envelope.seq).not.toBe(r.seq);
    // A reading that several rules transform to the same stream is emitted once per rule.
    const two = new Rules([base, { ...base, id: 'f', set: { value: 'value * 2' } }], new ManualClock(), sequence);
    expect(values(run(two, [at('m1', 't', 2)]))).toEqual([2, 4]);
  });

  it('drops and counts a reading its expression fails on, and goes on', async () => {
    const metrics = new PromMetrics();
    const rules = new Rules([{ ...base, where: 'value > 5' }, { ...base, id: 's', stream: 'other', set: { value: 'value * 2' } }], new ManualClock(), sequence, metrics);
    const out = run(rules, [at('m1', 't', 'text'), at('m1', 't', 6)]);
    expect(out.map((o) => [o.stream, o.envelope.value])).toEqual([
      ['telemetry', 6],
      ['other', 12],
    ]);
    expect(rules.errors()).toEqual([
      { rule: 'r', errors: 1, lastError: expect.stringMatching(/^where: both sides of ">" must be of the same type, not "text" and 5/) as unknown },
      { rule: 's', errors: 1, lastError: expect.stringMatching(/^set: the left side of "\*" must be a number, not "text"/) as unknown },
    ]);
    expect(await metrics.total('outpost_rule_errors_total')).toBe(2);
  });

  it('deadband (absolute and percent) and change of value per device and point', () => {
    const abs = new Rules([{ ...base, deadband: { absolute: 1 } }], new ManualClock(), sequence);
    expect(values(run(abs, [at('m1', 't', 10), at('m1', 't', 10.5), at('m1', 't', 11.2), at('m2', 't', 10.5), at('m1', 't', 10.1)]))).toEqual([10, 11.2, 10.5, 10.1]);
    const pct = new Rules([{ ...base, deadband: { percent: 10 } }], new ManualClock(), sequence);
    expect(values(run(pct, [at('m1', 't', 100), at('m1', 't', 109), at('m1', 't', 111), at('m1', 't', 121)]))).toEqual([100, 111]);
    const cov = new Rules([{ ...base, changeOfValue: true }], new ManualClock(), sequence);
    expect(values(run(cov, [at('m1', 't', 'on'), at('m1', 't', 'on'), at('m1', 't', 'off'), at('m1', 't', null, 0, 'bad'), at('m1', 't', 'off')]))).toEqual(['on', 'off', null]);
  });

  it('rate limit: at most `count` per group and window of processing time', () => {
    const clock = new ManualClock(0);
    const rules = new Rules([{ ...base, rateLimit: { count: 2, perMs: 1000 }, groupBy: ['device'] }], clock, sequence);
    const got: Envelope['value'][] = [];
    for (let t = 0; t < 3000; t += 100) {
      clock.t = t;
      got.push(...values(run(rules, [at('m1', 'a', t), at('m1', 'b', t)])));
    }
    // Two readings per device in each of the three seconds, whatever their point.
    expect(got).toEqual([0, 0, 1000, 1000, 2000, 2000]);
  });

  it('alerts on transitions by default: raised once while the condition holds, cleared once, with hysteresis and a hold time', () => {
    const hot = { ...base, id: 'hot', where: 'value > 80', route: 'alert', stream: 'alarms', alert: { severity: 'critical', message: '"too hot: " & $string(value)' } } as const;
    const alerts = (spec: RuleSpec, readings: Array<[number, number | null, number?]>, clock = new ManualClock()): Array<[unknown, number]> => {
      const rules = new Rules([spec], clock, sequence);
      const outs: RuleOutput[] = [];
      for (const [value, t, q] of readings.map(([v, tt, q]) => [v, tt ?? 0, q] as const)) {
        clock.t = t ?? 0;
        rules.process(at('m1', 't', value, t ?? 0, q === 1 ? 'bad' : 'good'), (o) => outs.push(o));
      }
      return outs.map((o) => [o.envelope?.value, o.envelope?.ts ?? -1]);
    };
    // Five readings over 80 in five seconds: one alert, then one clear (an issue report: 5 alerts in 5 s).
    expect(alerts(hot, [[50, 0], [85, 1000], [90, 2000], [95, 3000], [88, 4000], [86, 5000], [70, 6000], [60, 7000]])).toEqual([
      ['critical: too hot: 85', 1000],
      ['cleared: too hot: 70', 6000],
    ]);
    // A bad reading neither raises nor clears.
    expect(alerts(hot, [[85, 0], [0, 1000, 1], [90, 2000]])).toEqual([['critical: too hot: 85', 0]]);
    // Hysteresis: cleared only below 75, so 79 (not above 80 any more) keeps it raised.
    expect(alerts({ ...hot, alert: { ...hot.alert, clearWhere: 'value < 75' } }, [[85, 0], [79, 1000], [82, 2000], [74, 3000], [81, 4000]])).toEqual([
      ['critical: too hot: 85', 0],
      ['cleared: too hot: 74', 3000],
      ['critical: too hot: 81', 4000],
    ]);
    // Hold time: raised only once the condition held 2 s; a short spike raises nothing.
    expect(alerts({ ...hot, alert: { ...hot.alert, holdMs: 2000 } }, [[85, 0], [60, 500], [85, 1000], [86, 2000], [87, 3000], [88, 4000]])).toEqual([['critical: too hot: 87', 3000]]);
    // mode every: the former behaviour, an alert per reading.
    expect(alerts({ ...hot, alert: { ...hot.alert, mode: 'every' } }, [[85, 0], [90, 1000]]).length).toBe(2);
  });

  it('routes: an alert reading, a local topic with names made safe, a write only for good readings', () => {
    const rules = new Rules(
      [
        { ...base, id: 'hot', where: 'value > 80', route: 'alert', stream: 'alarms', alert: { severity: 'critical', message: '"too hot: " & $string(value) & " " & unit' } },
        { ...base, id: 'loc', route: 'mqtt', mqtt: { topic: 'site/{device}/{point}', qos: 1, retain: true } },
        { ...base, id: 'act', route: 'write', write: { device: 'plc', point: 'sp', minIntervalMs: 100, sources: ['*'] } },
      ],
      new ManualClock(),
      sequence,
    );
    const hot = at('m/1', 't#1', 90);
    const outs: RuleOutput[] = [];
    rules.process(hot, (o) => outs.push(o));
    rules.process(at('m1', 't', null, 0, 'bad'), (o) => outs.push(o));
    const alert = outs.find((o) => o.route === 'cloud')!;
    expect(alert).toMatchObject({ stream: 'alarms', envelope: { id: `${hot.id}/hot`, device: 'm/1', point: 't#1.alert', value: 'critical: too hot: 90 degC', rule: 'hot' } });
    expect(outs.filter((o) => o.route === 'mqtt').map((o) => o.route === 'mqtt' && [o.topic, o.qos, o.retain])).toEqual([
      ['site/m_1/t_1', 1, true],
      ['site/m1/t', 1, true],
    ]);
    expect(outs.filter((o) => o.route === 'write').map((o) => o.envelope.value)).toEqual([90]);
  });

  it('operator memory survives a restart: no reading passed twice, none lost', () => {
    const spec = { ...base, deadband: { absolute: 1 } };
    const before = new Rules([spec], new ManualClock(), sequence);
    expect(values(run(before, [at('m1', 't', 10), at('m1', 't', 10.5)]))).toEqual([10]);
    const saved = before.takeDirtyState();
    expect(saved).toHaveLength(1);
    const after = new Rules([spec], new ManualClock(), sequence);
    after.restore(saved);
    expect(values(run(after, [at('m1', 't', 10.9), at('m1', 't', 11.5)]))).toEqual([11.5]);
  });
});

describe('windows', () => {
  const w = { id: 'w', type: 'window', match: { device: '*', point: '*' }, route: 'cloud', stream: 'telemetry' } as const;
  const at = (value: Envelope['value'], ts = 0, device = 'm1', quality: Envelope['quality'] = 'good'): Envelope =>
    makeEnvelope({ id: `gw:${++n}`, device, point: 'p', value, quality, ts, seq: n, unit: 'kW' });
  /** Feeds [processing time, reading] pairs, ticking the clock before each; returns what was emitted, by point. */
  function feed(rules: Rules, clock: ManualClock, steps: Array<[number, Envelope]>, endAt?: number): Out[] {
    const out: Out[] = [];
    for (const [t, r] of steps) {
      clock.t = t;
      rules.tick(t, collect(out));
      rules.process(r, collect(out));
    }
    if (endAt !== undefined) rules.tick(endAt, collect(out));
    return out;
  }
  const pick = (out: Out[], point: string): Array<Envelope['value']> => out.filter((o) => o.envelope.point === point).map((o) => o.envelope.value);

  it('tumbling: every aggregate, bad readings skipped, units kept', () => {
    const clock = new ManualClock();
    const rules = new Rules([{ ...w, windowMs: 1000, aggregates: ['avg', 'min', 'max', 'sum', 'count', 'first', 'last', 'stddev', 'p50', 'p95', 'p99'] }], clock, sequence);
    const vals = [4, 8, 6, 2, 10];
    const out = feed(rules, clock, [...vals.map((v, i): [number, Envelope] => [100 + i, at(v)]), [110, at(null, 0, 'm1', 'bad')]], 1000);
    const got = Object.fromEntries(out.map((o) => [o.envelope.point, o.envelope.value]));
    expect(got).toEqual({ 'p.avg': 6, 'p.min': 2, 'p.max': 10, 'p.sum': 30, 'p.count': 5, 'p.first': 4, 'p.last': 10, 'p.stddev': 2.828427 /* √8 to the default 6 decimals */, 'p.p50': 6, 'p.p95': 9.6, 'p.p99': 9.92 });
    expect(out.every((o) => o.envelope.ts === 1000)).toBe(true);
    expect(out.find((o) => o.envelope.point === 'p.avg')!.envelope.unit).toBe('kW');
    expect(out.find((o) => o.envelope.point === 'p.count')!.envelope.unit).toBeUndefined();
  });

  it('hopping: a reading counts in every window that covers it', () => {
    const clock = new ManualClock();
    const rules = new Rules([{ ...w, kind: 'hopping', windowMs: 1000, hopMs: 500, aggregates: ['sum'] }], clock, sequence);
    const out = feed(rules, clock, [[100, at(1)], [600, at(2)], [1100, at(4)], [1600, at(8)]], 2500);
    // Windows [-500,500) [0,1000) [500,1500) [1000,2000) [1500,2500), closed in order of their end.
    expect(out.map((o) => [o.envelope.id.split(':').pop(), o.envelope.value])).toEqual([
      ['-500', 1],
      ['0', 3],
      ['500', 6],
      ['1000', 12],
      ['1500', 8],
    ]);
  });

  it('sliding: on every reading, the aggregate of the last windowMs', () => {
    const clock = new ManualClock();
    const rules = new Rules([{ ...w, kind: 'sliding', windowMs: 1000, aggregates: ['count', 'max'] }], clock, sequence);
    const out = feed(rules, clock, [[0, at(5)], [400, at(3)], [900, at(1)], [1300, at(2)], [2500, at(7)]]);
    // At 1300 the window is (300, 1300]: the readings of 400, 900 and 1300.
    expect(pick(out, 'p.count')).toEqual([1, 2, 3, 3, 1]);
    expect(pick(out, 'p.max')).toEqual([5, 5, 5, 3, 7]);
  });

  it('session: closed after gapMs of silence, per device', () => {
    const clock = new ManualClock();
    const rules = new Rules([{ ...w, kind: 'session', gapMs: 1000, aggregates: ['count'] }], clock, sequence);
    const out = feed(rules, clock, [[0, at(1)], [500, at(1)], [900, at(1, 0, 'm2')], [1400, at(1)], [3000, at(1)], [3100, at(1)]], 5000);
    // Both first sessions are over by the tick at 3000; ts is the session's last reading.
    expect(out.map((o) => [o.envelope.device, o.envelope.value, o.envelope.ts])).toEqual([
      ['m1', 3, 1400],
      ['m2', 1, 900],
      ['m1', 2, 3100],
    ]);
  });

  it('count: every N readings of the group', () => {
    const clock = new ManualClock();
    const rules = new Rules([{ ...w, kind: 'count', count: 3, aggregates: ['avg'] }], clock, sequence);
    const out = feed(rules, clock, [1, 2, 3, 4, 5, 6, 7].map((v, i): [number, Envelope] => [i, at(v)]), 100_000);
    expect(pick(out, 'p.avg')).toEqual([2, 5]);
  });

  it('event time: out-of-order readings within the lateness land in their window; later ones are counted as late', async () => {
    const clock = new ManualClock();
    const metrics = new PromMetrics();
    const rules = new Rules([{ ...w, windowMs: 1000, time: 'event', allowedLatenessMs: 500, aggregates: ['sum'] }], clock, sequence, metrics);
    const out = feed(rules, clock, [
      [10, at(1, 100)],
      [20, at(2, 1200)], // window [1000,2000) opens; [0,1000) still takes readings until 1500
      [30, at(4, 900)], // late but within the lateness: counts in [0,1000)
      [40, at(8, 1600)], // event time passes 1500: [0,1000) closes
      [50, at(16, 950)], // too late
    ]);
    expect(out.map((o) => [o.envelope.ts, o.envelope.value])).toEqual([[1000, 5]]);
    expect(await metrics.total('outpost_rule_errors_total')).toBe(1);
    // A silent group's window closes after windowMs + lateness of processing time.
    const rest: Out[] = [];
    rules.tick(40 + 1500, collect(rest));
    expect(rest.map((o) => [o.envelope.ts, o.envelope.value])).toEqual([[2000, 10]]);
  });

  it('every kind: a restart in the middle neither loses nor double-counts', () => {
    const kinds = [
      { kind: 'tumbling', windowMs: 1000 },
      { kind: 'hopping', windowMs: 1000, hopMs: 500 },
      { kind: 'session', gapMs: 700 },
      { kind: 'count', count: 4 },
      { kind: 'tumbling', windowMs: 1000, time: 'event', allowedLatenessMs: 200 },
    ] as const;
    for (const k of kinds) {
      const spec = { ...w, ...k, aggregates: ['sum', 'count', 'p50'] } as RuleSpec;
      const steps: Array<[number, Envelope]> = [0, 150, 300, 450, 900, 1050, 1200, 1900, 2100, 2600].map((t, i) => [t, at(i + 1, t)]);
      const clockA = new ManualClock();
      const straight = feed(new Rules([spec], clockA, sequence), clockA, steps, 10_000);
      // The same readings, with a restart (state saved, engine rebuilt, state restored) after the fifth.
      const clockB = new ManualClock();
      const first = new Rules([spec], clockB, sequence);
      const before = feed(first, clockB, steps.slice(0, 5));
      const second = new Rules([spec], clockB, sequence);
      second.restore(first.takeDirtyState());
      const after = feed(second, clockB, steps.slice(5), 10_000);
      const ids = (o: Out[]): Array<[string, Envelope['value']]> => o.map((x) => [x.envelope.id, x.envelope.value]);
      expect(ids([...before, ...after]), k.kind).toEqual(ids(straight));
      expect(straight.length, k.kind).toBeGreaterThan(0);
    }
  });

  it('skips saved state it cannot read (counted) instead of failing to start', async () => {
    const metrics = new PromMetrics();
    const clock = new ManualClock(0);
    const rules = new Rules([{ ...w, windowMs: 1000, aggregates: ['count'] }, { ...w, id: 'f', type: 'filter', deadband: { absolute: 1 } }], clock, sequence, metrics);
    rules.restore([
      { key: 'w\u0000m1\u0000p', state: '{not json' },
      { key: 'w\u0000m2\u0000p', state: '{"device":"m2","point":"p","open":[{"start":"x"}],"closedUntil":null}' },
      { key: 'f\u0000m1\u0000p', state: '42' },
    ]);
    expect(await metrics.total('outpost_rule_errors_total')).toBe(3);
    const out = feed(rules, clock, [[100, at(5)], [200, at(5, 0, 'm2')]], 1000);
    expect(out.filter((o) => o.envelope.point === 'p.count').map((o) => o.envelope.value)).toEqual([1, 1]);
  });

  it('refuses an event time far ahead of the clock, so one broken device clock cannot close its windows for years', async () => {
    const metrics = new PromMetrics();
    const clock = new ManualClock(1_000_000);
    const rules = new Rules([{ ...w, windowMs: 1000, time: 'event', aggregates: ['count'] }], clock, sequence, metrics);
    const out = feed(rules, clock, [[1_000_000, at(1, 1_000_100)], [1_000_000, at(1, Number.MAX_SAFE_INTEGER)], [1_001_500, at(1, 1_001_500)]], 1_010_000);
    expect(out.map((o) => [o.envelope.ts, o.envelope.value])).toEqual([
      [1_001_000, 1],
      [1_002_000, 1],
    ]);
    expect(await metrics.total('outpost_rule_errors_total')).toBe(1);
  });

  it('output ids keep device, point and unit apart, also with ":" in names', () => {
    const clock = new ManualClock();
    const byUnit = new Rules([{ ...w, windowMs: 1000, groupBy: ['unit'], aggregates: ['count'] }], clock, sequence);
    const c = makeEnvelope({ id: 'c', device: 'm1', point: 'p', value: 1, quality: 'good', ts: 0, seq: 1, unit: 'degC' });
    const f = makeEnvelope({ id: 'f', device: 'm1', point: 'p', value: 1, quality: 'good', ts: 0, seq: 2, unit: 'degF' });
    const ids = feed(byUnit, clock, [[10, c], [20, f]], 1000).map((o) => o.envelope.id);
    expect(new Set(ids).size).toBe(2);
    const colons = new Rules([{ ...w, windowMs: 1000, aggregates: ['count'] }], clock, sequence);
    const a = makeEnvelope({ id: 'a', device: 'a:b', point: 'c', value: 1, quality: 'good', ts: 0, seq: 3 });
    const b = makeEnvelope({ id: 'b', device: 'a', point: 'b:c', value: 1, quality: 'good', ts: 0, seq: 4 });
    clock.t = 0;
    const ids2 = feed(colons, clock, [[1010, a], [1020, b]], 2000).map((o) => o.envelope.id);
    expect(ids2).toEqual(['w:a%3Ab:c:count:1000', 'w:a:b%3Ac:count:1000']);
  });

  it('processing time: a clock stepped back closes what is open and starts again from the new time', () => {
    const clock = new ManualClock();
    const rules = new Rules([{ ...w, windowMs: 1000, aggregates: ['count'] }], clock, sequence);
    const out = feed(rules, clock, [[3_600_500, at(1)], [3_601_500, at(1)], [500, at(1)], [700, at(1)]], 1000);
    expect(out.map((o) => [o.envelope.ts, o.envelope.value])).toEqual([
      [3_601_000, 1],
      [3_602_000, 1],
      [1000, 2],
    ]);
  });

  it('reset: after a failed commit the rules go back to the saved state, so a retried reading counts once', () => {
    const clock = new ManualClock();
    const spec = { ...w, id: 'd', type: 'filter', deadband: { absolute: 1 } } as const;
    const rules = new Rules([spec], clock, sequence);
    expect(run(rules, [at(10)])).toHaveLength(1);
    rules.reset([]);
    expect(run(rules, [at(10)])).toHaveLength(1);
  });

  it('keeps at most maxGroups groups per rule: windows of the oldest close early, operator memory of the least recently used goes', async () => {
    const saved = [WindowRule.maxGroups, FilterRule.maxGroups];
    WindowRule.maxGroups = 3;
    FilterRule.maxGroups = 3;
    try {
      const metrics = new PromMetrics();
      const clock = new ManualClock();
      const rules = new Rules([{ ...w, windowMs: 1000, aggregates: ['count'] }, { ...w, id: 'f', type: 'filter', stream: 'other', changeOfValue: true }], clock, sequence, metrics);
      const out = feed(rules, clock, ['a', 'b', 'c', 'd', 'a'].map((d, i): [number, Envelope] => [10 + i, at(1, 0, d)]));
      // Window group "a" was closed early to make room for "d"; a's second reading made room by closing "b".
      expect(out.filter((o) => o.stream === 'telemetry').map((o) => [o.envelope.device, o.envelope.value])).toEqual([
        ['a', 1],
        ['b', 1],
      ]);
      // change of value: "a" was forgotten, so its unchanged value passes again.
      expect(out.filter((o) => o.stream === 'other').map((o) => o.envelope.device)).toEqual(['a', 'b', 'c', 'd', 'a']);
      expect(await metrics.total('outpost_rule_errors_total')).toBe(4);
      // Forgotten groups' saved rows are deleted.
      expect(rules.takeDirtyState().filter((r) => r.state === null).map((r) => r.key.split('\u0000')[1])).toEqual(expect.arrayContaining(['b']));
    } finally {
      [WindowRule.maxGroups, FilterRule.maxGroups] = saved as [number, number];
    }
  });

  it('restores the state the first tumbling windows saved', () => {
    const clock = new ManualClock(1500);
    const rules = new Rules([{ ...w, windowMs: 1000, aggregates: ['avg', 'count'] }], clock, sequence);
    rules.restore([{ key: 'w\u0000m1\u0000p', state: JSON.stringify({ device: 'm1', point: 'p', start: 1000, count: 2, sum: 10, min: 4, max: 6, skipped: 0 }) }]);
    const out = feed(rules, clock, [[1500, at(8)]], 2000);
    expect(Object.fromEntries(out.map((o) => [o.envelope.point, o.envelope.value]))).toEqual({ 'p.avg': 6, 'p.count': 3 });
  });
});
