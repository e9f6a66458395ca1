import { describe, expect, it } from 'vitest';
import { MAX_BITS, MAX_REGISTERS, planReads, type ReadRequest } from '../../drivers/modbus/planner.js';
import type { ModbusPoint, PointType, Table } from '../../drivers/modbus/types.js';

let n = 0;
function point(table: Table, address: number, type: PointType = table === 'coil' || table === 'discrete' ? 'bool' : 'uint16'): ModbusPoint {
  return { name: `p${++n}`, table, address, type, order: 'ABCD', scale: 1, offset: 0, writable: false };
}
const regs = (table: Table, ...addresses: number[]): ModbusPoint[] => addresses.map((a) => point(table, a));

/** [table, first address, length] of each request, for compact expectations. */
const spans = (requests: readonly ReadRequest[]): [Table, number, number][] => requests.map((r) => [r.table, r.address, r.length]);

/** Every point is inside exactly one request of its own table, and each request is within the protocol limit. */
function expectValidCover(points: readonly ModbusPoint[], requests: readonly ReadRequest[]): void {
  const width = (t: PointType): number => (t === 'int32' || t === 'uint32' || t === 'float32' ? 2 : 1);
  const members = requests.flatMap((r) => r.points);
  expect(members).toHaveLength(points.length);
  expect(new Set(members)).toEqual(new Set(points));
  for (const r of requests) {
    expect(r.length).toBeLessThanOrEqual(r.table === 'coil' || r.table === 'discrete' ? MAX_BITS : MAX_REGISTERS);
    for (const p of r.points) {
      expect(p.table).toBe(r.table);
      expect(p.address).toBeGreaterThanOrEqual(r.address);
      expect(p.address + width(p.type)).toBeLessThanOrEqual(r.address + r.length);
    }
  }
}

/**
 * The fewest register reads that cover `points` (one table), by dynamic programming over every way
 * to cut the address-sorted points into runs that respect the gap and the 125-register limit.
 */
function minimalRequests(points: readonly ModbusPoint[], maxGap: number): number {
  const sorted = [...points].sort((a, b) => a.address - b.address);
  const end = (p: ModbusPoint): number => p.address + (p.type === 'uint16' || p.type === 'int16' ? 1 : 2);
  const best = new Array<number>(sorted.length + 1).fill(Infinity);
  best[0] = 0;
  for (let i = 0; i < sorted.length; i++) {
    let runEnd = -Infinity;
    for (let j = i; j < sorted.length; j++) {
      const p = sorted[j]!;
      if (j > i && p.address - runEnd > maxGap) break;
      runEnd = Math.max(runEnd, end(p));
      if (runEnd - sorted[i]!.address > MAX_REGISTERS) break;
      best[j + 1] = Math.min(best[j + 1]!, best[i]! + 1);
    }
  }
  return best[sorted.length]!;
}

describe('Modbus read planner', () => {
  it('reads contiguous registers in one request', () => {
    const pts = regs('holding', 0, 1, 2, 3, 4);
    const plan = planReads(pts, 0);
    expect(spans(plan)).toEqual([['holding', 0, 5]]);
    expectValidCover(pts, plan);
  });

  it('merges points whose gap of unread registers is at most maxGap, and splits beyond it', () => {
    // 0 and 4 leave 3 unread registers (1..3) between them; 4 and 9 leave 4 (5..8).
    expect(spans(planReads(regs('holding', 0, 4, 9), 3))).toEqual([
      ['holding', 0, 5],
      ['holding', 9, 1],
    ]);
    expect(spans(planReads(regs('holding', 0, 4, 9), 4))).toEqual([['holding', 0, 10]]);
    expect(spans(planReads(regs('holding', 0, 4, 9), 2))).toEqual([
      ['holding', 0, 1],
      ['holding', 4, 1],
      ['holding', 9, 1],
    ]);
  });

  it('plans the same whatever order the points are listed in', () => {
    const pts = regs('input', 40, 2, 0, 41, 1);
    const plan = planReads(pts, 0);
    expect(spans(plan)).toEqual([
      ['input', 0, 3],
      ['input', 40, 2],
    ]);
    expectValidCover(pts, plan);
  });

  it('counts both registers of a 32-bit point, for the length and for the gap to the next point', () => {
    const pts = [point('holding', 0, 'float32'), point('holding', 2, 'int32'), point('holding', 5, 'uint32')];
    // float32 at 0 covers 0..1, int32 at 2 covers 2..3: contiguous; uint32 at 5 leaves one register (4) unread.
    expect(spans(planReads(pts, 0))).toEqual([
      ['holding', 0, 4],
      ['holding', 5, 2],
    ]);
    expect(spans(planReads(pts, 1))).toEqual([['holding', 0, 7]]);
  });

  it('never merges points of different tables, even at the same addresses', () => {
    const pts = [point('holding', 0), point('input', 1), point('coil', 2), point('discrete', 3), point('holding', 1), point('input', 0)];
    const plan = planReads(pts, 100);
    expect(spans(plan).sort()).toEqual(
      [
        ['coil', 2, 1],
        ['discrete', 3, 1],
        ['holding', 0, 2],
        ['input', 0, 2],
      ].sort(),
    );
    expectValidCover(pts, plan);
  });

  it('splits register reads at 125 registers', () => {
    const pts = regs('holding', ...Array.from({ length: 300 }, (_, i) => i));
    const plan = planReads(pts, 0);
    expect(spans(plan)).toEqual([
      ['holding', 0, 125],
      ['holding', 125, 125],
      ['holding', 250, 50],
    ]);
    expectValidCover(pts, plan);
  });

  it('starts a new register read rather than split a 32-bit point across the 125 limit', () => {
    const pts = [...regs('input', ...Array.from({ length: 124 }, (_, i) => i)), point('input', 124, 'float32')];
    const plan = planReads(pts, 0);
    expect(spans(plan)).toEqual([
      ['input', 0, 124],
      ['input', 124, 2],
    ]);
    expectValidCover(pts, plan);
  });

  it('splits bit reads at 2000 bits, for coils and discrete inputs', () => {
    for (const table of ['coil', 'discrete'] as const) {
      const pts = regs(table, ...Array.from({ length: 4500 }, (_, i) => i));
      const plan = planReads(pts, 0);
      expect(spans(plan)).toEqual([
        [table, 0, 2000],
        [table, 2000, 2000],
        [table, 4000, 500],
      ]);
      expectValidCover(pts, plan);
    }
  });

  it('reads 2000 coils in one request where 125 registers would be the limit', () => {
    const plan = planReads(regs('coil', 0, 1999), 2000);
    expect(spans(plan)).toEqual([['coil', 0, 2000]]);
  });

  it('issues the minimal number of requests for sample address maps', () => {
    const cases: { name: string; points: ModbusPoint[]; maxGap: number; minimal: number }[] = [
      // An energy meter: float32 at 0, 2, int32 at 4, uint32 at 6, int16 holding at 0, one coil.
      {
        name: 'energy meter',
        points: [
          point('input', 0, 'float32'),
          point('input', 2, 'float32'),
          point('input', 4, 'int32'),
          point('input', 6, 'uint32'),
          point('holding', 0, 'int16'),
          point('coil', 0),
        ],
        maxGap: 10,
        minimal: 3,
      },
      // Two clusters far apart in one table.
      { name: 'two clusters', points: regs('holding', 0, 1, 2, 1000, 1001, 1005), maxGap: 10, minimal: 2 },
      // Every register 0..249 with gaps allowed: 250 registers need at least ceil(250 / 125) reads.
      { name: 'dense 250', points: regs('holding', ...Array.from({ length: 250 }, (_, i) => i)), maxGap: 10, minimal: 2 },
      // Points every 20 registers with maxGap 10: no two may share a request.
      { name: 'sparse', points: regs('input', ...Array.from({ length: 8 }, (_, i) => i * 20)), maxGap: 10, minimal: 8 },
      // Points every 10 registers, gap 9 allowed: each run of 13 points spans 121 registers; 30 points need 3.
      { name: 'strided', points: regs('holding', ...Array.from({ length: 30 }, (_, i) => i * 10)), maxGap: 9, minimal: 3 },
    ];
    for (const c of cases) {
      const plan = planReads(c.points, c.maxGap);
      expect(plan, c.name).toHaveLength(c.minimal);
      expectValidCover(c.points, plan);
    }
  });

  it('issues no more requests than an exhaustive search finds, on random register maps', () => {
    // Seeded generator so that a failure reproduces.
    let state = 12345;
    const rand = (k: number): number => {
      state = (state * 1103515245 + 12345) % 2 ** 31;
      return state % k;
    };
    const types: PointType[] = ['uint16', 'int16', 'float32', 'uint32'];
    for (let trial = 0; trial < 200; trial++) {
      const maxGap = rand(12);
      const pts = Array.from({ length: 1 + rand(25) }, () => point('holding', rand(400), types[rand(4)]));
      expect(planReads(pts, maxGap).length, `trial ${trial}`).toBe(minimalRequests(pts, maxGap));
    }
  });

  it('plans nothing for no points', () => {
    expect(planReads([], 10)).toEqual([]);
  });
});
