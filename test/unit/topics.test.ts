import { describe, expect, it } from 'vitest';
import { childTelemetrySchema, localTopics, parseStatusTopic, parseTelemetryTopic } from '../../runtime/contracts/topics.js';

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
