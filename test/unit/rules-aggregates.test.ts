import { describe, expect, it } from 'vitest';
import { makeEnvelope, type Envelope, type RuleOutput, type RuleStateRow } from '../../runtime/contracts/index.js';
import { aggregateRegistry, AGGREGATES, BUILT_IN_AGGREGATES, type Aggregate } from '../../rules/aggregates.js';
import { windowRuleSchema } from '../../rules/config.js';
import { Rules } from '../../rules/engine.js';
import type { WindowRuleSpec } from '../../rules/types.js';
import { WindowRule } from '../../rules/window.js';
import { CountingSequence } from '../../runtime/sequence.js';
import { ManualClock } from '../helpers/fakes.js';

/** Not shipped: registered here only, to show that an aggregate is one registry entry. */
const median: Aggregate = {
  name: 'median',
  needsValues: true,
  compute: (_totals, sorted) => {
    if (sorted.length === 0) return null;
    const mid = sorted.length >> 1;
    return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  },
};
/** Starts with `p` like the percentiles, but needs no values: the old name guess would have kept them. */
const peak: Aggregate = { name: 'peak', needsValues: false, compute: (t) => t.max };
const withMedian = aggregateRegistry([...BUILT_IN_AGGREGATES.values(), median, peak]);

const spec = (aggregates: string[], over: Partial<WindowRuleSpec> = {}): WindowRuleSpec => ({
  id: 'w',
  type: 'window',
  match: { device: '*', point: '*' },
  windowMs: 1000,
  aggregates,
  route: 'cloud',
  stream: 'telemetry',
  ...over,
});

let n = 0;
const at = (value: number, device = 'm1'): Envelope => makeEnvelope({ id: `gw:${++n}`, device, point: 'p', value, quality: 'good', ts: 0, seq: n, unit: 'kW' });

/** Feeds each device its values in the window [0, 1000) and closes it; the outputs by device and point. */
function windowOf(rules: Rules, clock: ManualClock, values: Record<string, number[]>): Record<string, Envelope> {
  const out: Record<string, Envelope> = {};
  const emit = (o: RuleOutput): void => {
    if (o.envelope) out[`${o.envelope.device}/${o.envelope.point}`] = o.envelope;
  };
  clock.t = 0;
  for (const [device, vs] of Object.entries(values)) for (const v of vs) rules.process(at(v, device), emit);
  clock.t = 1000;
  rules.tick(1000, emit);
  return out;
}

/** The values each open window of the saved groups kept (undefined: kept none). */
const keptValues = (rows: readonly RuleStateRow[]): Array<number[] | undefined> =>
  rows.flatMap((r) => (JSON.parse(r.state!) as { open: Array<{ values?: number[] }> }).open.map((a) => a.values));

describe('aggregate registry', () => {
  it('a median registered in a test registry gives the middle value of an odd count and the mean of the middle two of an even one', () => {
    const clock = new ManualClock();
    const rules = new Rules([spec(['median', 'count'])], clock, new CountingSequence('gw:'), undefined, { aggregates: withMedian });
    const out = windowOf(rules, clock, { odd: [7, 1, 5, 3, 9], even: [8, 2, 6, 4], one: [42] });
    expect(out['odd/p.median']?.value).toBe(5);
    expect(out['even/p.median']?.value).toBe(5);
    expect(out['one/p.median']?.value).toBe(42);
    expect(out['odd/p.count']?.value).toBe(5);
    // A measure keeps the readings' unit and gets its own output id, like the built-in ones.
    expect(out['odd/p.median']).toMatchObject({ unit: 'kW', quality: 'good', id: 'w:odd:p:median:0' });
  });

  it('a window with no good reading gives a null (bad quality) median', () => {
    const clock = new ManualClock();
    const rule = new WindowRule(spec(['median']), new CountingSequence('gw:'), undefined, withMedian);
    const out: Envelope[] = [];
    rule.process(makeEnvelope({ id: 'gw:bad', device: 'm1', point: 'p', value: null, quality: 'bad', ts: 0, seq: 1 }), clock.t, (o) => void out.push(o.envelope!));
    rule.tick(1000, (o) => void out.push(o.envelope!));
    expect(out.map((e) => [e.point, e.value, e.quality])).toEqual([['p.median', null, 'bad']]);
  });

  it('a window keeps its values exactly when one of its aggregates needs them, whatever their names', () => {
    const clock = new ManualClock();
    const saved = (aggregates: string[]): Array<number[] | undefined> => {
      const rules = new Rules([spec(aggregates)], clock, new CountingSequence('gw:'), undefined, { aggregates: withMedian });
      for (const v of [3, 1, 2]) rules.process(at(v), () => {});
      return keptValues(rules.takeDirtyState());
    };
    expect(saved(['median'])).toEqual([[3, 1, 2]]);
    expect(saved(['avg', 'p50'])).toEqual([[3, 1, 2]]);
    expect(saved(['peak', 'avg', 'max'])).toEqual([undefined]);
    expect(saved(['peak', 'median'])).toEqual([[3, 1, 2]]);
  });

  it('an aggregate that needs no values is given none, so it cannot depend on them by accident', () => {
    const clock = new ManualClock();
    const seen: number[][] = [];
    const spy: Aggregate = { name: 'spy', needsValues: false, compute: (_t, sorted) => (seen.push([...sorted]), 0) };
    const rules = new Rules([spec(['spy'])], clock, new CountingSequence('gw:'), undefined, { aggregates: aggregateRegistry([spy]) });
    windowOf(rules, clock, { m1: [3, 1, 2] });
    expect(seen).toEqual([[]]);
  });

  it('refuses, when the rule is built, an aggregate its registry does not have; median is not shipped', () => {
    expect(() => new WindowRule(spec(['avg', 'median']), new CountingSequence('gw:'))).toThrow(/unknown aggregate "median"/);
    expect(AGGREGATES).toEqual([...BUILT_IN_AGGREGATES.keys()]);
    expect(AGGREGATES).not.toContain('median');
    const parsed = windowRuleSchema.safeParse({ id: 'w', type: 'window', windowMs: 1000, aggregates: ['median'] });
    expect(parsed.success).toBe(false);
    expect(parsed.error?.issues[0]?.path).toEqual(['aggregates', 0]);
  });

  it('refuses a name registered twice, and names that would run into the parts of an output id', () => {
    expect(() => aggregateRegistry([median, median])).toThrow(/registered twice/);
    for (const name of ['a:b', 'a.b', '', 'a b']) expect(() => aggregateRegistry([{ ...median, name }]), name).toThrow(/may only have/);
  });

  it('restores a window saved before the registry (values included) and goes on with it', () => {
    // A state row as 473fe8f saved it: tumbling [0, 1000) with avg, count and p50 after 5, 1, 4, 2.
    const row: RuleStateRow = {
      key: 'pct\u0000m1\u0000p',
      state:
        '{"device":"m1","point":"p","open":[{"start":0,"end":1000,"key":"0","n":4,"sum":12,"min":1,"max":5,"first":5,"last":2,"mean":3,"m2":10,"values":[5,1,4,2],"skipped":0,"touched":0,"unit":"kW"}],"closedUntil":null,"key":"pct\\u0000m1\\u0000p"}',
    };
    const clock = new ManualClock();
    const rules = new Rules([spec(['avg', 'count', 'p50'], { id: 'pct' })], clock, new CountingSequence('gw:'));
    rules.restore([row]);
    const out = windowOf(rules, clock, { m1: [10] });
    expect(Object.fromEntries(Object.entries(out).map(([k, e]) => [k, [e.value, e.id]]))).toEqual({
      'm1/p.avg': [4.4, 'pct:m1:p:avg:0'],
      'm1/p.count': [5, 'pct:m1:p:count:0'],
      'm1/p.p50': [4, 'pct:m1:p:p50:0'],
    });
  });
});
