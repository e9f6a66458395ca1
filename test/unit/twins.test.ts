import { describe, expect, it } from 'vitest';
import { ManualClock, resolveLeaf, type Counter, type Metrics } from '../../runtime/contracts/index.js';
import { CallError, Calls } from '../../runtime/devices/calls.js';
import { byPrecedence, compileConfiguration, effectiveDesired, type DeviceFacts } from '../../runtime/devices/configurations.js';
import { applyPatch, checkDoc, diffDocs, MAX_DOC_BYTES, type TwinDoc } from '../../runtime/devices/twin-doc.js';

const counter: Counter = { inc: () => undefined, bind: () => ({ inc: () => undefined }) };
const metrics: Metrics = { counter: () => counter, gauge: () => ({ set: () => undefined }) };

describe('twin documents', () => {
  it('are bounded and refused by name: depth, leaves, size, arrays, keys, strings', () => {
    const deep = { a: { b: { c: { d: { e: { f: 1 } } } } } };
    expect(() => checkDoc(deep, 'desired')).toThrow('desired.a.b.c.d.e: nested deeper than 5 levels');
    expect(() => checkDoc(Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`k${i}`, i])), 'desired')).toThrow('desired: more than 256 properties');
    expect(() => checkDoc({ a: 'x'.repeat(1000), ...Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`s${i}`, 'y'.repeat(1000)])) }, 'desired')).toThrow(`bytes of JSON, at most ${MAX_DOC_BYTES}`);
    expect(() => checkDoc({ 'a.b': 1, $x: 2, list: [1], s: 'z'.repeat(1025) }, 'desired')).toThrow(
      'desired.a.b: keys use letters, digits, "_" and "-" (1 to 64); desired.$x: keys use letters, digits, "_" and "-" (1 to 64); desired.list: arrays are not allowed in twin documents (use an object keyed by position); desired.s: a string of at most 1024 characters',
    );
    expect(() => checkDoc('text', 'reported')).toThrow('reported: expected an object');
    expect(checkDoc({ motor: { maxSpeed: 20, on: true, name: null } }, 'desired')).toEqual({ motor: { maxSpeed: 20, on: true, name: null } });
  });

  it('merge patches: applied as RFC 7396 says, and a diff that turns one document into the other', () => {
    const a = { motor: { maxSpeed: 20, mode: 'auto' }, lamp: 'on' };
    const b = { motor: { maxSpeed: 25, mode: 'auto' }, alarm: { high: 80 } };
    const patch = diffDocs(a, b)!;
    expect(patch).toEqual({ motor: { maxSpeed: 25 }, lamp: null, alarm: { high: 80 } });
    expect(applyPatch(a, patch)).toEqual(b);
    expect(diffDocs(b, b)).toBeUndefined();
  });
});

describe('effective desired state', () => {
  const device = (over: Partial<DeviceFacts> = {}): DeviceFacts => ({ id: 'pump-1', protocol: 'mqtt', online: true, attributes: { model: 'P-3.1' }, labels: { line: '2' }, tags: {}, ...over });
  const configs = (
    [
      { id: 'b-line', target: 'labels.line = "2"', desired: { maxSpeed: 15, alarm: { high: 80 } }, priority: 5 },
      { id: 'a-model', target: 'model = "P-3.1"', desired: { maxSpeed: 20, mode: 'auto' }, priority: 10 },
      { id: 'a-same', target: 'true', desired: { mode: 'manual', alarm: 3 }, priority: 5 },
    ] as Array<{ id: string; target: string; desired: TwinDoc; priority: number }>
  ).map((c) => compileConfiguration({ ...c, origin: 'site', version: 1, labels: {} }));

  it('takes direct edits first, then configurations by priority then id, whatever order they come in', () => {
    const direct = new Map([['lamp', { value: 'off', version: 2 }], ['speed', { value: null, version: 3 }]]);
    for (const order of [configs, [...configs].reverse(), [configs[1]!, configs[2]!, configs[0]!]]) {
      const e = effectiveDesired(device(), direct, [...order].sort(byPrecedence));
      expect(e.doc).toEqual({ lamp: 'off', maxSpeed: 20, mode: 'auto', alarm: 3 });
      expect(Object.fromEntries(e.sources)).toEqual({ lamp: 'direct', maxSpeed: 'configuration:a-model', mode: 'configuration:a-model', alarm: 'configuration:a-same' });
      // `a-same` and `b-line` have the same priority: the lower id wins `alarm` (a leaf) over `alarm.high`.
      expect(e.shadowed.get('alarm')).toEqual([{ source: 'configuration:b-line', value: 80 }]);
      expect(e.shadowed.get('maxSpeed')).toEqual([{ source: 'configuration:b-line', value: 15 }]);
      expect(e.targeting).toEqual(['a-model', 'a-same', 'b-line']);
    }
  });

  it('follows the device: another model or label changes what targets it', () => {
    const e = effectiveDesired(device({ attributes: { model: 'V-2' }, labels: {} }), new Map(), [...configs].sort(byPrecedence));
    expect(e.doc).toEqual({ mode: 'manual', alarm: 3 });
  });
});

describe('the conflict rule', () => {
  it('takes the higher version, and the edge on a tie', () => {
    expect(resolveLeaf({ value: 1, version: 3 }, { value: 2, version: 4 })).toEqual({ leaf: { value: 2, version: 4 }, from: 'cloud' });
    expect(resolveLeaf({ value: 1, version: 4 }, { value: 2, version: 3 })).toEqual({ leaf: { value: 1, version: 4 }, from: 'edge' });
    expect(resolveLeaf({ value: 1, version: 4 }, { value: 2, version: 4 })).toEqual({ leaf: { value: 1, version: 4 }, from: 'edge' });
    expect(resolveLeaf(undefined, { value: 2, version: 1 })?.from).toBe('cloud');
  });
});

describe('calls', () => {
  function setup(online = new Set(['d1', 'd2'])): { calls: Calls; clock: ManualClock; sent: Array<[string, string]> } {
    const clock = new ManualClock(1000);
    const sent: Array<[string, string]> = [];
    const calls = new Calls({
      clock,
      metrics,
      limits: { perDevice: 2, perSite: 3, payloadBytes: 200 },
      check: (d) => {
        if (d === 'nope') throw new CallError('unknown-device', 'no device "nope"');
      },
      online: (d) => online.has(d),
      publish: (topic, payload) => {
        sent.push([topic, payload]);
        return Promise.resolve();
      },
    });
    return { calls, clock, sent };
  }
  const kind = async (p: Promise<unknown>): Promise<string> => p.then(() => 'answered', (e: unknown) => (e instanceof CallError ? e.kind : String(e)));

  it('are answered by id, and bounded per device, per site and in payload size', async () => {
    const { calls, sent } = setup();
    const a = calls.call({ device: 'd1', method: 'm', payload: { x: 1 }, timeoutMs: 1000, wait: false, id: 'c1' });
    const b = calls.call({ device: 'd1', method: 'm', timeoutMs: 1000, wait: false, id: 'c2' });
    expect(await kind(calls.call({ device: 'd1', method: 'm', timeoutMs: 1000, wait: false }))).toBe('busy');
    const c = calls.call({ device: 'd2', method: 'm', timeoutMs: 1000, wait: false, id: 'c3' });
    expect(await kind(calls.call({ device: 'd2', method: 'm', timeoutMs: 1000, wait: false }))).toBe('busy');
    expect(await kind(calls.call({ device: 'd2', method: 'm', payload: 'x'.repeat(300), timeoutMs: 1000, wait: false }))).toBe('too-large');
    expect(await kind(calls.call({ device: 'nope', method: 'm', timeoutMs: 1000, wait: false }))).toBe('unknown-device');
    expect(sent.map(([t]) => t)).toEqual(['outpost/v1/dev/d1/cmd/m', 'outpost/v1/dev/d1/cmd/m', 'outpost/v1/dev/d2/cmd/m']);
    expect(JSON.parse(sent[0]![1])).toEqual({ id: 'c1', deadline: 2000, payload: { x: 1 } });
    expect(calls.answer('d2', 'c1', 200, {})).toBe(false); // another device cannot answer d1's call
    expect(calls.answer('d1', 'c1', 200, { ok: true })).toBe(true);
    expect(await a).toMatchObject({ id: 'c1', status: 200, payload: { ok: true } });
    calls.answer('d1', 'c2', 500, undefined);
    calls.answer('d2', 'c3', 200, undefined);
    expect((await b).status).toBe(500);
    await c;
    expect(calls.inFlight).toBe(0);
  });

  it('fail at once for an offline device, or wait for it until the deadline', async () => {
    const online = new Set<string>();
    const { calls, clock, sent } = setup(online);
    expect(await kind(calls.call({ device: 'd1', method: 'm', timeoutMs: 1000, wait: false }))).toBe('offline');
    const waiting = calls.call({ device: 'd1', method: 'm', timeoutMs: 1000, wait: true, id: 'w1' });
    const lost = kind(calls.call({ device: 'd2', method: 'm', timeoutMs: 1000, wait: true, id: 'w2' }));
    await clock.advance(500);
    expect(sent).toEqual([]);
    online.add('d1');
    calls.deviceOnline('d1');
    expect(sent.map(([t]) => t)).toEqual(['outpost/v1/dev/d1/cmd/m']);
    calls.answer('d1', 'w1', 200, 'done');
    expect((await waiting).payload).toBe('done');
    await clock.advance(600);
    expect(await lost).toBe('timeout');
    expect(clock.pending()).toBe(0);
  });
});
