import { describe, expect, it } from 'vitest';
import { ago, buildPatch, CliFailure, parseValue, showValue } from '../../runtime/devices-cli.js';
import { plainTable } from '../../runtime/plain-table.js';

describe('outpost twin set arguments', () => {
  it('build a merge patch: values are JSON when they parse, else text; null removes', () => {
    expect(buildPatch(['maxSpeed=12', 'alarm.high=80', 'alarm.low=-5', 'mode=auto', 'label="12"', 'on=true', 'old=null', 'note=a=b', 'empty='])).toEqual({
      maxSpeed: 12,
      alarm: { high: 80, low: -5 },
      mode: 'auto',
      label: '12',
      on: true,
      old: null,
      note: 'a=b',
      empty: '',
    });
  });

  it('refuse a pair without a path, an empty segment, or a path given twice as a usage error', () => {
    for (const [args, message] of [
      [['maxSpeed'], /"maxSpeed": expected PATH=VALUE/],
      [['=3'], /"=3": expected PATH=VALUE/],
      [['a..b=1'], /"a\.\.b=1": expected PATH=VALUE/],
      [['a=1', 'a=2'], /"a=2": a is given twice/],
      [['a=1', 'a.b=2'], /"a\.b=2": a is given a value of its own/],
      [['a.b=2', 'a=1'], /"a=1": a is given twice/],
    ] as const) {
      let thrown: unknown;
      try {
        buildPatch(args);
      } catch (err) {
        thrown = err;
      }
      expect(thrown, args.join(' ')).toBeInstanceOf(CliFailure);
      expect((thrown as CliFailure).exitCode).toBe(2);
      expect((thrown as CliFailure).message).toMatch(message);
    }
  });

  it('keep "__proto__" a plain key, for the gateway to refuse by name', () => {
    const patch = buildPatch(['__proto__.x=1']);
    expect(Object.keys(patch)).toEqual(['__proto__']);
    expect(JSON.stringify(patch)).toBe('{"__proto__":{"x":1}}');
  });
});

describe('outpost devices tables', () => {
  it('show values as twin set reads them back', () => {
    for (const v of [12, true, null, 'auto', '12', 'true', '', ' padded', '-', 'a b']) {
      const shown = showValue(v);
      expect(parseValue(shown), shown).toEqual(v);
    }
    expect(showValue(undefined)).toBe('-');
    expect(showValue('auto')).toBe('auto');
  });

  it('say how long ago in seconds, minutes, hours and days; never for 0; no future', () => {
    const now = 1_000_000_000;
    expect([0, now, now - 59_999, now - 60_000, now - 3_599_999, now - 3_600_000, now - 48 * 3_600_000, now + 5000].map((t) => ago(t, now))).toEqual([
      'never',
      '0 s ago',
      '59 s ago',
      '1 min ago',
      '59 min ago',
      '1 h ago',
      '2 d ago',
      '0 s ago',
    ]);
  });

  it('print a plain table: columns by display width, two spaces apart, no borders, colours or trailing spaces', () => {
    const text = plainTable(['ID', 'N', 'NOTE'], [['pump-1', '3', 'ok'], ['泵-2', '12', '']], { right: [1] });
    expect(text).toBe(['ID       N  NOTE', 'pump-1   3  ok', '泵-2    12', ''].join('\n'));
    expect(plainTable([], [['KEY', 'value']])).toBe('KEY  value\n');
  });
});
