import { describe, expect, it } from 'vitest';
import { Backoff } from '../../runtime/contracts/backoff.js';

/** A random source that returns the given values in turn, then repeats the last one. */
function scripted(...values: number[]): () => number {
  let i = 0;
  return () => values[Math.min(i++, values.length - 1)]!;
}

/** Just below 1: the largest value Math.random() can return. */
const ALMOST_ONE = 1 - Number.EPSILON;

describe('Backoff (full jitter, capped)', () => {
  it('doubles the ceiling on each attempt: the largest delays are just under initial * 2^n', () => {
    const b = new Backoff(100, 1_000_000, () => ALMOST_ONE);
    expect([b.next(), b.next(), b.next(), b.next(), b.next()]).toEqual([99, 199, 399, 799, 1599]);
  });

  it('waits no time at all when the random draw is 0 (the lower end of full jitter)', () => {
    const b = new Backoff(100, 10_000, () => 0);
    for (let i = 0; i < 10; i++) expect(b.next()).toBe(0);
  });

  it('scales the delay linearly within the ceiling', () => {
    const b = new Backoff(100, 10_000, scripted(0.5, 0.5, 0.25));
    expect([b.next(), b.next(), b.next()]).toEqual([50, 100, 100]);
  });

  it('stays within [0, min(cap, initial * 2^n)) for every attempt and every draw', () => {
    const draws = [0, 1e-9, 0.1, 0.5, 0.9, ALMOST_ONE];
    for (const draw of draws) {
      const b = new Backoff(250, 30_000, () => draw);
      for (let n = 0; n < 40; n++) {
        const ceiling = Math.min(30_000, 250 * 2 ** n);
        const d = b.next();
        expect(Number.isInteger(d)).toBe(true);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThan(ceiling);
      }
    }
  });

  it('never exceeds the cap, even after very many attempts', () => {
    const b = new Backoff(500, 30_000, () => ALMOST_ONE);
    const delays = Array.from({ length: 100 }, () => b.next());
    expect(Math.max(...delays)).toBe(29_999);
    expect(delays.slice(6)).toEqual(Array.from({ length: 94 }, () => 29_999));
    expect(delays.every((d) => Number.isFinite(d))).toBe(true);
  });

  it('counts attempts and starts over from the initial ceiling after reset()', () => {
    const b = new Backoff(100, 10_000, () => ALMOST_ONE);
    b.next();
    b.next();
    b.next();
    expect(b.attempts).toBe(3);
    b.reset();
    expect(b.attempts).toBe(0);
    expect([b.next(), b.next()]).toEqual([99, 199]);
  });

  it('spreads delays of the same attempt according to the random draw (no lock-step reconnects)', () => {
    const delays = [0.05, 0.35, 0.65, 0.95].map((r) => new Backoff(1000, 60_000, () => r).next());
    expect(new Set(delays).size).toBe(4);
    expect(delays).toEqual([50, 350, 650, 950]);
  });
});
