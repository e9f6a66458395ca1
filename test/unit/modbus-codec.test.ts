import { describe, expect, it } from 'vitest';
import { decodeRegisters } from '../../drivers/modbus/codec.js';
import { planReads } from '../../drivers/modbus/planner.js';
import type { ModbusPoint, PointType, Table } from '../../drivers/modbus/types.js';

const pt = (name: string, address: number, type: PointType = 'uint16', table: Table = 'holding', scale = 1): ModbusPoint => ({
  name,
  table,
  address,
  type,
  scale,
});

function words(bytes: number[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < bytes.length; i += 2) out.push((bytes[i]! << 8) | bytes[i + 1]!);
  return out;
}

describe('register decoding (ABCD, high word first)', () => {
  it('decodes signed and unsigned 16-bit values with scale', () => {
    expect(decodeRegisters([0xfff6], 0, pt('a', 0, 'int16', 'holding', 0.1))).toBeCloseTo(-1);
    expect(decodeRegisters([0xfff6], 0, pt('a', 0, 'uint16'))).toBe(65526);
  });

  it('decodes 32-bit integers and floats across two registers', () => {
    expect(decodeRegisters(words([0xff, 0xff, 0xff, 0xfe]), 0, pt('a', 0, 'int32'))).toBe(-2);
    expect(decodeRegisters(words([0x00, 0x01, 0x00, 0x00]), 0, pt('a', 0, 'uint32'))).toBe(65536);
    const f = Buffer.alloc(4);
    f.writeFloatBE(230.5);
    expect(decodeRegisters([0, ...words([...f])], 1, pt('a', 0, 'float32'))).toBeCloseTo(230.5);
  });

  it('returns null when the response is too short or the float is not finite', () => {
    expect(decodeRegisters([1], 0, pt('a', 0, 'uint32'))).toBeNull();
    expect(decodeRegisters(words([0x7f, 0xc0, 0, 0]), 0, pt('a', 0, 'float32'))).toBeNull();
  });
});

describe('request planning', () => {
  it('merges near-contiguous registers and splits tables', () => {
    const reqs = planReads([pt('a', 0), pt('b', 1, 'float32'), pt('c', 10), pt('d', 40), pt('e', 0, 'bool', 'coil')], 10);
    expect(reqs.map((r) => [r.table, r.address, r.length, r.points.length])).toEqual([
      ['holding', 0, 11, 3],
      ['holding', 40, 1, 1],
      ['coil', 0, 1, 1],
    ]);
  });

  it('never exceeds 125 registers per read', () => {
    const points = Array.from({ length: 300 }, (_, i) => pt(`p${i}`, i));
    const reqs = planReads(points, 0);
    expect(reqs).toHaveLength(3);
    expect(Math.max(...reqs.map((r) => r.length))).toBeLessThanOrEqual(125);
    expect(reqs.flatMap((r) => r.points)).toHaveLength(300);
  });
});
