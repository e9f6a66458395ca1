import { describe, expect, it } from 'vitest';
import { compileGlob } from '../../runtime/contracts/index.js';

const matches = (pattern: string, name: string): boolean => compileGlob(pattern)(name);

describe('glob patterns for device and point names', () => {
  it('matches a literal pattern only against the identical name', () => {
    expect(matches('meter-1', 'meter-1')).toBe(true);
    expect(matches('meter-1', 'meter-10')).toBe(false);
    expect(matches('meter-1', 'xmeter-1')).toBe(false);
    expect(matches('meter-1', 'Meter-1')).toBe(false);
    expect(matches('meter-1', '')).toBe(false);
  });

  it('lets a lone * match every name, including the empty one', () => {
    for (const name of ['', 'a', 'meter-1', 'a.b/c', '*']) expect(matches('*', name)).toBe(true);
  });

  it('lets * match any run of characters, including none, anywhere in the pattern', () => {
    expect(matches('meter-*', 'meter-')).toBe(true);
    expect(matches('meter-*', 'meter-12')).toBe(true);
    expect(matches('meter-*', 'pump-1')).toBe(false);
    expect(matches('*-temp', 'boiler-temp')).toBe(true);
    expect(matches('*-temp', 'boiler-temp2')).toBe(false);
    expect(matches('a*b*c', 'abc')).toBe(true);
    expect(matches('a*b*c', 'a-x-b-y-c')).toBe(true);
    expect(matches('a*b*c', 'a-x-c')).toBe(false);
  });

  it('lets ? match exactly one character', () => {
    expect(matches('pump-?', 'pump-1')).toBe(true);
    expect(matches('pump-?', 'pump-')).toBe(false);
    expect(matches('pump-?', 'pump-12')).toBe(false);
    expect(matches('??', 'ab')).toBe(true);
    expect(matches('??', 'a')).toBe(false);
  });

  it('anchors the whole name: a pattern never matches a substring', () => {
    expect(matches('temp?', 'flow-temp1')).toBe(false);
    expect(matches('temp?', 'temp12')).toBe(false);
  });

  it('takes regex metacharacters literally', () => {
    const cases: [pattern: string, literal: string, notMatched: string][] = [
      ['a.b*', 'a.b1', 'axb1'],
      ['a+b?', 'a+bc', 'aabc'],
      ['(x)*', '(x)yz', 'x'],
      ['[ab]?', '[ab]1', 'a1'],
      ['{2}*', '{2}x', '{22}x'],
      ['^p$?', '^p$1', 'p1'],
      ['a|b*', 'a|bc', 'a'],
      ['back\\slash?', 'back\\slash1', 'backslash1'],
      ['power.avg*', 'power.avg.x', 'powerXavg'],
    ];
    for (const [pattern, literal, notMatched] of cases) {
      expect(matches(pattern, literal), `${pattern} vs ${literal}`).toBe(true);
      expect(matches(pattern, notMatched), `${pattern} vs ${notMatched}`).toBe(false);
    }
  });

  it('takes regex metacharacters literally in patterns without wildcards', () => {
    expect(matches('power.avg', 'power.avg')).toBe(true);
    expect(matches('power.avg', 'powerXavg')).toBe(false);
    expect(matches('a+', 'aa')).toBe(false);
  });
});

describe('glob over any UTF-8 device name', () => {
  it('? matches one whole character and * spans line breaks', () => {
    expect(compileGlob('dev-?')('dev-😀')).toBe(true);
    expect(compileGlob('dev-*')('dev-a\nb')).toBe(true);
  });
});
