import { describe, expect, it } from 'vitest';
import { childTelemetrySchema, fastChildTelemetry, localTopics, parseStatusTopic, parseTelemetryTopic } from '../../runtime/contracts/topics.js';

describe('parseTelemetryTopic', () => {
  it('returns the device id of a local telemetry topic', () => {
    expect(parseTelemetryTopic('outpost/v1/dev/pump-1/telemetry')).toBe('pump-1');
    expect(parseTelemetryTopic(localTopics.telemetry('meter.7'))).toBe('meter.7');
  });

  it('refuses topics that are not exactly outpost/v1/dev/{device}/telemetry', () => {
    for (const topic of [
      'outpost/v1/dev//telemetry',
      'outpost/v1/dev/pump-1',
      'outpost/v1/dev/pump-1/telemetry/extra',
      'outpost/v1/dev/a/b/telemetry',
      'outpost/v2/dev/pump-1/telemetry',
      'other/v1/dev/pump-1/telemetry',
      'outpost/v1/gw/pump-1/telemetry',
      'outpost/v1/dev/pump-1/status',
      '/outpost/v1/dev/pump-1/telemetry',
      'outpost/v1/dev/pump-1/Telemetry',
      'outpost/v1/dev/pump-1xtelemetry',
      'outpost/v1/devx/pump-1/telemetry',
      'outpost/v1/dev/telemetry',
      '',
    ]) {
      expect(parseTelemetryTopic(topic), topic).toBeUndefined();
    }
  });
});

describe('parseStatusTopic', () => {
  it('returns the device id of a child status topic', () => {
    expect(parseStatusTopic('outpost/v1/dev/pump-1/status')).toBe('pump-1');
    expect(parseStatusTopic(localTopics.status('meter.7'))).toBe('meter.7');
  });

  it('refuses topics that are not exactly outpost/v1/dev/{device}/status', () => {
    for (const topic of [
      'outpost/v1/dev//status',
      'outpost/v1/dev/status',
      'outpost/v1/dev/pump-1/status/extra',
      'outpost/v1/dev/a/b/status',
      'outpost/v1/dev/pump-1/telemetry',
      'outpost/v1/dev/pump-1xstatus',
      'outpost/v1/gw/pump-1/status',
      'outpost/v1/devx/pump-1/status',
      '/outpost/v1/dev/pump-1/status',
      '',
    ]) {
      expect(parseStatusTopic(topic), topic).toBeUndefined();
    }
  });
});

describe('childTelemetrySchema', () => {
  const ok = (payload: unknown): boolean => childTelemetrySchema.safeParse(payload).success;
  const messages = (payload: unknown): string[] => {
    const r = childTelemetrySchema.safeParse(payload);
    return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  };

  it('accepts the documented example and fills quality "good" where it is omitted', () => {
    const r = childTelemetrySchema.parse({
      id: 'boot7-1042',
      ts: 1764000000000,
      points: { temperature: 21.5, running: true, mode: 'auto', pressure: { value: null, quality: 'bad' }, flow: { value: 3 } },
    });
    expect(r.points).toEqual({
      temperature: 21.5,
      running: true,
      mode: 'auto',
      pressure: { value: null, quality: 'bad' },
      flow: { value: 3, quality: 'good' },
    });
  });

  it('accepts a message id that is a string of the allowed characters or a non-negative integer', () => {
    for (const id of ['a', 'boot_7.1042:x-y', 0, 42]) expect(ok({ id, points: { a: 1 } }), String(id)).toBe(true);
    for (const id of ['', 'has space', 'slash/no', 'x'.repeat(65), -1, 1.5]) expect(ok({ id, points: { a: 1 } }), String(id)).toBe(false);
  });

  it('accepts 1000 points and refuses 1001', () => {
    const many = (n: number): Record<string, number> => Object.fromEntries(Array.from({ length: n }, (_, i) => [`p${i}`, i]));
    expect(ok({ points: many(1000) })).toBe(true);
    expect(messages({ points: many(1001) })).toEqual(['points: at most 1000 points per message']);
  });

  it('refuses a message without points, or with none', () => {
    expect(ok({})).toBe(false);
    expect(messages({ points: {} })).toEqual(['points: at least one point is required']);
  });

  it('refuses point names with characters outside letters, digits, "_", ".", ":" and "-", or too long', () => {
    for (const name of ['temp', 'a.b:c_d-e', 'x'.repeat(128)]) expect(ok({ points: { [name]: 1 } }), name).toBe(true);
    for (const name of ['', 'has space', 'a/b', 'a+b', 'a#', 'ä', 'x'.repeat(129)]) {
      expect(ok({ points: { [name]: 1 } }), name).toBe(false);
    }
  });

  it('refuses a quality other than good, bad or stale', () => {
    for (const quality of ['good', 'bad', 'stale']) expect(ok({ points: { a: { value: 1, quality } } })).toBe(true);
    for (const quality of ['uncertain', 'GOOD', '', 1]) expect(ok({ points: { a: { value: 1, quality } } }), String(quality)).toBe(false);
  });

  it('refuses non-finite numbers, including the Infinity that JSON.parse makes of 1e999', () => {
    expect(ok(JSON.parse('{"points":{"a":1e999}}'))).toBe(false);
    expect(ok(JSON.parse('{"points":{"a":{"value":-1e999}}}'))).toBe(false);
    expect(ok({ points: { a: Number.NaN } })).toBe(false);
    expect(ok({ points: { a: Number.POSITIVE_INFINITY } })).toBe(false);
  });

  it('refuses values that are not scalars, and strings over 1024 characters', () => {
    expect(ok({ points: { a: 'x'.repeat(1024) } })).toBe(true);
    expect(ok({ points: { a: 'x'.repeat(1025) } })).toBe(false);
    expect(ok({ points: { a: [1, 2] } })).toBe(false);
    expect(ok({ points: { a: { nested: 1 } } })).toBe(false);
    expect(ok({ points: { a: { value: 1, quality: 'good', extra: true } } })).toBe(false);
  });

  it('refuses unknown top-level fields and a timestamp that is not a positive integer', () => {
    expect(ok({ points: { a: 1 }, device: 'x' })).toBe(false);
    expect(ok({ points: { a: 1 }, ts: 0 })).toBe(false);
    expect(ok({ points: { a: 1 }, ts: 1.5 })).toBe(false);
    expect(ok({ points: { a: 1 }, ts: '1764000000000' })).toBe(false);
  });
});

describe('reserved point names', () => {
  it('refuses a point named __proto__ with a named reason instead of dropping it', () => {
    const r = childTelemetrySchema.safeParse(JSON.parse('{"points":{"__proto__":{"value":5},"a":2}}'));
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toContain('__proto__');
  });
});

describe('fastChildTelemetry, the intake fast path', () => {
  /** What the schema makes of a payload, normalized as the intake uses it; undefined when refused. */
  function viaSchema(payload: unknown): unknown {
    const r = childTelemetrySchema.safeParse(payload);
    if (!r.success) return undefined;
    const { id, ts, points } = r.data;
    return {
      ...(id !== undefined ? { id } : {}),
      ...(ts !== undefined ? { ts } : {}),
      points: Object.entries(points).map(([point, v]) => (v !== null && typeof v === 'object' ? { point, value: v.value, quality: v.quality } : { point, value: v, quality: 'good' })),
    };
  }

  it('takes the common shapes as the schema does', () => {
    for (const text of [
      '{"id":7,"ts":1764000000000,"points":{"flow_rate_m3h":{"value":12.5,"quality":"good"}}}',
      '{"points":{"a":1,"b":true,"c":"on","d":null}}',
      '{"id":"m-1","points":{"t":{"value":null,"quality":"stale"},"u":{"value":3}}}',
      '{"points":{"2":1,"1":2,"b":3}}',
    ]) {
      const json: unknown = JSON.parse(text);
      expect(fastChildTelemetry(json), text).toEqual(viaSchema(json));
    }
  });

  it('leaves to the schema whatever is not plainly valid, so every refusal names its reason', () => {
    for (const text of [
      '{"points":{}}',
      '{"points":{"a":1},"extra":1}',
      '{"id":-1,"points":{"a":1}}',
      '{"id":1.5,"points":{"a":1}}',
      '{"id":"","points":{"a":1}}',
      '{"id":"a b","points":{"a":1}}',
      '{"ts":0,"points":{"a":1}}',
      '{"points":{"a b":1}}',
      '{"points":{"__proto__":{"value":5},"a":2}}',
      '{"points":{"a":{"value":1,"quality":"ok"}}}',
      '{"points":{"a":{"quality":"good"}}}',
      '{"points":{"a":{"value":1,"extra":2}}}',
      '{"points":{"a":[1]}}',
      '{"points":{"a":{"value":{"x":1}}}}',
      '{"points":{"a":1e400}}',
      '[1]',
      'null',
      `{"points":{"a":"${'x'.repeat(1025)}"}}`,
      `{"points":{"${'p'.repeat(129)}":1}}`,
      `{"points":{${Array.from({ length: 1001 }, (_, i) => `"p${i}":1`).join(',')}}}`,
    ]) {
      const json: unknown = JSON.parse(text);
      expect(fastChildTelemetry(json), text.slice(0, 80)).toBeUndefined();
    }
  });

  it('never accepts what the schema refuses, and agrees with it on what both accept (generated payloads)', () => {
    let seed = 42;
    const rand = (n: number): number => (seed = (seed * 16807) % 2147483647) % n;
    // Mostly from the first (valid) entries, sometimes from all: most payloads stay plainly valid.
    const pick = <T,>(xs: readonly T[], valid = xs.length): T => xs[rand(4) === 0 ? rand(xs.length) : rand(valid)]!;
    const scalars: unknown[] = [0, -1.5, 1e300, 7, true, false, null, '', 'on', 'x'.repeat(1024), 'x'.repeat(1025), { a: 1 }, [1], 'NaN'];
    const names = ['a', 'flow_rate', 'p.1', 'x:y', 'a-b', '1', '', 'a b', 'é', 'p'.repeat(128), 'p'.repeat(129), '__proto__', 'value'];
    const qualities: unknown[] = ['good', 'bad', 'stale', 'ok', undefined, null];
    const ids: unknown[] = [undefined, 0, 5, -1, 1.5, 2 ** 53, 'm-1', '', 'a b', 'x'.repeat(64), 'x'.repeat(65), null, true];
    const tss: unknown[] = [undefined, 1, 1764000000000, 0, -5, 1.5, '1', null];
    let accepted = 0;
    for (let i = 0; i < 5000; i++) {
      const points: string[] = [];
      for (let k = rand(4); k >= 0; k--) {
        const name = JSON.stringify(pick(names, 6));
        const v = pick(scalars, 10);
        const form = rand(7) === 0 ? 2 : rand(2);
        const q = pick(qualities, 4);
        const value = form === 0 ? JSON.stringify(v) : form === 1 ? JSON.stringify({ value: v, ...(q !== undefined ? { quality: q } : {}) }) : JSON.stringify({ quality: q ?? 'good' });
        points.push(`${name}:${value}`);
      }
      const fields: string[] = [`"points":{${points.join(',')}}`];
      const id = pick(ids, 3);
      const ts = pick(tss, 3);
      if (id !== undefined) fields.push(`"id":${JSON.stringify(id)}`);
      if (ts !== undefined) fields.push(`"ts":${JSON.stringify(ts)}`);
      if (rand(20) === 0) fields.push('"extra":1');
      const text = `{${fields.sort(() => rand(2) - 0.5).join(',')}}`;
      const json: unknown = JSON.parse(text);
      const fast = fastChildTelemetry(json);
      if (fast === undefined) continue;
      accepted++;
      expect(fast, text.slice(0, 200)).toEqual(viaSchema(json));
    }
    // The generator exercises the fast path, not only its refusals.
    expect(accepted).toBeGreaterThan(1000);
  });
});
