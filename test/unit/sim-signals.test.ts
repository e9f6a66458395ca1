import { describe, expect, it } from 'vitest';
import { createSignal } from '../../sim/signals.js';

describe('simulated signals', () => {
  it('sine: offset at phase 0, peak and trough at a quarter and three quarters of the period, repeating', () => {
    const s = createSignal({ kind: 'sine', amplitude: 4, periodMs: 20_000, offset: 230 });
    expect(s.value(0)).toBeCloseTo(230, 9);
    expect(s.value(5_000)).toBeCloseTo(234, 9);
    expect(s.value(10_000)).toBeCloseTo(230, 9);
    expect(s.value(15_000)).toBeCloseTo(226, 9);
    expect(s.value(1_764_000_005_000)).toBeCloseTo(s.value(5_000), 9);
  });

  it('sine: offset defaults to 0', () => {
    const s = createSignal({ kind: 'sine', amplitude: 2, periodMs: 1000 });
    expect(s.value(250)).toBeCloseTo(2, 9);
    expect(s.value(750)).toBeCloseTo(-2, 9);
  });

  it('walk: moves by at most one step per call, driven by the random source', () => {
    const draws = [1, 0, 0.75, 0.5];
    let i = 0;
    const s = createSignal({ kind: 'walk', start: 10, step: 2, min: 0, max: 100 }, () => draws[i++]!);
    // random r moves the value by (2r - 1) * step.
    expect(s.value(0)).toBeCloseTo(12, 9);
    expect(s.value(0)).toBeCloseTo(10, 9);
    expect(s.value(0)).toBeCloseTo(11, 9);
    expect(s.value(0)).toBeCloseTo(11, 9);
  });

  it('walk: stays within [min, max] however the draws fall', () => {
    const up = createSignal({ kind: 'walk', start: 9, step: 5, min: 0, max: 10 }, () => 1);
    const down = createSignal({ kind: 'walk', start: 1, step: 5, min: 0, max: 10 }, () => 0);
    for (let k = 0; k < 5; k++) {
      expect(up.value(k)).toBe(10);
      expect(down.value(k)).toBe(0);
    }
  });

  it('counter: starts at start and advances by step on each call', () => {
    const s = createSignal({ kind: 'counter', start: 100, step: 5 });
    expect([s.value(0), s.value(0), s.value(0)]).toEqual([100, 105, 110]);
    const plain = createSignal({ kind: 'counter' });
    expect([plain.value(0), plain.value(0), plain.value(0)]).toEqual([0, 1, 2]);
  });

  it('counter: wraps to 0 on reaching wrap', () => {
    const s = createSignal({ kind: 'counter', start: 8, step: 1, wrap: 10 });
    expect(Array.from({ length: 5 }, () => s.value(0))).toEqual([8, 9, 0, 1, 2]);
  });

  it('constant: always the same value', () => {
    const s = createSignal({ kind: 'constant', value: 7.5 });
    expect([s.value(0), s.value(1e12)]).toEqual([7.5, 7.5]);
  });

  it('toggle: 0 for the first period, 1 for the next, and so on', () => {
    const s = createSignal({ kind: 'toggle', periodMs: 1000 });
    expect([0, 999, 1000, 1999, 2000, 3500].map((t) => s.value(t))).toEqual([0, 0, 1, 1, 0, 1]);
  });
});
