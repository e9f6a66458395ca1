import { describe, expect, it } from 'vitest';
import { decodePoint, DecodeError, encodePoint, RequestDecoder } from '../../drivers/modbus/codec.js';
import { planReads } from '../../drivers/modbus/planner.js';
import type { ByteOrder, ModbusPoint, PointType, Table } from '../../drivers/modbus/types.js';

const pt = (type: PointType, extra: Partial<ModbusPoint> = {}): ModbusPoint => ({
  name: 'p',
  table: 'holding',
  address: 0,
  type,
  order: 'ABCD',
  scale: 1,
  offset: 0,
  writable: true,
  ...extra,
});

const ORDERS: readonly ByteOrder[] = ['ABCD', 'CDAB', 'BADC', 'DCBA'];

describe('register decoding', () => {
  it('places the bytes of a float32 as each byte order says', () => {
    // 1.5 = 0x3FC00000: A=3F B=C0 C=00 D=00.
    const layouts: Record<ByteOrder, number[]> = { ABCD: [0x3fc0, 0x0000], CDAB: [0x0000, 0x3fc0], BADC: [0xc03f, 0x0000], DCBA: [0x0000, 0xc03f] };
    for (const order of ORDERS) {
      expect(decodePoint(layouts[order], 0, pt('float32', { order }))).toBe(1.5);
      expect(encodePoint(1.5, pt('float32', { order }))).toEqual(layouts[order]);
    }
  });

  it('decodes 64-bit words in all four orders, and exact strings beyond 2^53', () => {
    // 0x0102030405060708 as ABCD words.
    const abcd = [0x0102, 0x0304, 0x0506, 0x0708];
    expect(decodePoint(abcd, 0, pt('uint64'))).toBe('72623859790382856');
    expect(decodePoint([0x0708, 0x0506, 0x0304, 0x0102], 0, pt('uint64', { order: 'CDAB' }))).toBe('72623859790382856');
    expect(decodePoint([0x0201, 0x0403, 0x0605, 0x0807], 0, pt('uint64', { order: 'BADC' }))).toBe('72623859790382856');
    expect(decodePoint([0x0807, 0x0605, 0x0403, 0x0201], 0, pt('uint64', { order: 'DCBA' }))).toBe('72623859790382856');
    expect(decodePoint([0xffff, 0xffff, 0xffff, 0xfffe], 0, pt('int64'))).toBe(-2);
    expect(decodePoint([0, 0, 0, 42], 0, pt('uint64', { scale: 0.5 }))).toBe(21);
  });

  it('round-trips every numeric type in every byte order, with scale and offset', () => {
    const cases: [PointType, number][] = [
      ['int16', -1234],
      ['uint16', 65000],
      ['int32', -123456789],
      ['uint32', 4000000000],
      ['int64', -9007199254740991],
      ['uint64', 9007199254740991],
      ['float32', 230.5],
      ['float64', -0.1],
    ];
    for (const [type, value] of cases) {
      for (const order of ORDERS) {
        const p = pt(type, { order });
        expect(decodePoint(encodePoint(value, p), 0, p), `${type} ${order}`).toBe(value);
      }
    }
    const scaled = pt('int16', { scale: 0.1, offset: -40 });
    expect(encodePoint(21.5, scaled)).toEqual([615]);
    expect(decodePoint([615], 0, scaled)).toBeCloseTo(21.5, 10);
  });

  it('rounds scaled values to the decimals of scale and offset, float32 values to the 7 digits a float32 holds', () => {
    // Without it: 454 × 0.1 = 45.400000000000006, 1808 × 0.001 = 1.8080000000000001.
    expect(decodePoint([454], 0, pt('uint16', { scale: 0.1 }))).toBe(45.4);
    expect(decodePoint([1808], 0, pt('uint16', { scale: 0.001 }))).toBe(1.808);
    expect(decodePoint([0xff85], 0, pt('int16', { scale: 0.01 }))).toBe(-1.23);
    expect(decodePoint([0, 615], 0, pt('uint32', { scale: 0.1, offset: -40.05 }))).toBe(21.45);
    expect(decodePoint([0, 3], 0, pt('int32', { scale: 0.025 }))).toBe(0.075);
    // 230.1 as float32 is 230.10000610351562 in a double.
    const f = pt('float32');
    expect(decodePoint(encodePoint(230.1, f), 0, f)).toBe(230.1);
    expect(decodePoint(encodePoint(230.1, pt('float32', { scale: 0.1 })), 0, pt('float32', { scale: 0.1 }))).toBe(230.1);
    // float64 keeps its full precision.
    expect(decodePoint(encodePoint(0.1 + 0.2, pt('float64')), 0, pt('float64'))).toBe(0.1 + 0.2);
  });

  it('reads bits of a register, coils, and fixed-length strings', () => {
    expect(decodePoint([0b1000_0000_0000_0100], 0, pt('bool', { bit: 2 }))).toBe(true);
    expect(decodePoint([0b1000_0000_0000_0100], 0, pt('bool', { bit: 15 }))).toBe(true);
    expect(decodePoint([0b1000_0000_0000_0100], 0, pt('bool', { bit: 3 }))).toBe(false);
    expect(decodePoint([0, 1], 1, pt('bool', { table: 'coil' }))).toBe(true);
    const s = pt('string', { length: 4 });
    expect(encodePoint('PM-55', s)).toEqual([0x504d, 0x2d35, 0x3500, 0]);
    expect(decodePoint([0x504d, 0x2d35, 0x3500, 0], 0, s)).toBe('PM-55');
    expect(decodePoint([0x4d50, 0x352d, 0x0035, 0], 0, pt('string', { length: 4, order: 'BADC' }))).toBe('PM-55');
    // Word order does not apply to text: CDAB reads like ABCD, DCBA like BADC.
    expect(decodePoint([0x504d, 0x2d35, 0x3500, 0], 0, pt('string', { length: 4, order: 'CDAB' }))).toBe('PM-55');
    expect(decodePoint([0x4d50, 0x352d, 0x0035, 0], 0, pt('string', { length: 4, order: 'DCBA' }))).toBe('PM-55');
    expect(encodePoint('PM-55', pt('string', { length: 4, order: 'DCBA' }))).toEqual([0x4d50, 0x352d, 0x0035, 0]);
  });

  it('names what is wrong: short response, NaN float, values that do not fit', () => {
    expect(decodePoint([1], 0, pt('uint32'))).toBeInstanceOf(DecodeError);
    expect(decodePoint([0x7fc0, 0], 0, pt('float32'))).toBeInstanceOf(DecodeError);
    expect(() => encodePoint(70000, pt('uint16'))).toThrow(/out of range for uint16/);
    expect(() => encodePoint(1.05, pt('int16', { scale: 0.1 }))).toThrow(/whole number of 0.1 steps/);
    expect(() => encodePoint('x', pt('uint16'))).toThrow(/expects a finite number/);
    expect(() => encodePoint(1, pt('uint16', { table: 'input' }))).toThrow(/read-only/);
    expect(() => encodePoint('too long!', pt('string', { length: 2 }))).toThrow(/at most 4 characters/);
    // Scaling that overflows is not a good value, either way.
    const f = Buffer.alloc(8);
    f.writeDoubleBE(1e308);
    const words = [0, 2, 4, 6].map((i) => f.readUInt16BE(i));
    expect(decodePoint(words, 0, pt('float64', { scale: 10 }))).toBeInstanceOf(DecodeError);
    expect(() => encodePoint(1e308, pt('float64', { scale: 1e-10 }))).toThrow(/out of range/);
  });
});

/** A deterministic generator, so a failure can be replayed. */
function rng(seed: number): (n: number) => number {
  let s = seed;
  return (n) => (s = (s * 16807) % 2147483647) % n;
}

describe('decoding a request', () => {
  it('decodes 32-bit values as a Buffer reads their bytes in each byte order', () => {
    const r = rng(5);
    for (let k = 0; k < 2000; k++) {
      // Words that hit the edges: sign bits, NaN and infinity patterns, zero.
      const word = (): number => [0, 0xffff, 0x8000, 0x7fff, 0x7f80, 0xff80, r(0x10000)][r(7)]!;
      const words = [word(), word()];
      for (const order of ORDERS) {
        const bytes = Buffer.alloc(4);
        const [a, b] = order === 'CDAB' || order === 'DCBA' ? [words[1]!, words[0]!] : [words[0]!, words[1]!];
        const swap = order === 'BADC' || order === 'DCBA';
        bytes[swap ? 1 : 0] = a >> 8;
        bytes[swap ? 0 : 1] = a & 0xff;
        bytes[swap ? 3 : 2] = b >> 8;
        bytes[swap ? 2 : 3] = b & 0xff;
        expect(decodePoint(words, 0, pt('uint32', { order })), `uint32 ${order} ${words.join(',')}`).toBe(bytes.readUInt32BE(0));
        expect(decodePoint(words, 0, pt('int32', { order })), `int32 ${order} ${words.join(',')}`).toBe(bytes.readInt32BE(0));
        const f = bytes.readFloatBE(0);
        const v = decodePoint(words, 0, pt('float32', { order }));
        if (Number.isFinite(f)) expect(v, `float32 ${order} ${words.join(',')}`).toBe(Number(f.toPrecision(7)));
        else expect(v).toBeInstanceOf(DecodeError);
      }
    }
  });

  it('gives, point for point, what decodePoint gives: every type, order, scale and table, short answers too', () => {
    const types: PointType[] = ['int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64', 'float32', 'float64', 'bool', 'string'];
    const tables: Table[] = ['holding', 'input', 'coil', 'discrete'];
    for (let seed = 1; seed <= 200; seed++) {
      const r = rng(seed);
      const table = tables[r(tables.length)]!;
      const bits = table === 'coil' || table === 'discrete';
      // Some requests of one kind only (the decoder's shortcuts), the others mixed.
      const only = r(3) === 0 ? (bits ? 'bool' : (['uint16', 'int16'] as const)[r(2)]!) : undefined;
      const points: ModbusPoint[] = [];
      for (let a = r(5), i = 0; i < 1 + r(40); i++) {
        const type = bits ? 'bool' : (only ?? types[r(types.length)]!);
        const identity = only !== undefined || r(2) === 0;
        const p = pt(type, {
          name: `p${i}`,
          table,
          address: a,
          order: only !== undefined ? (['ABCD', 'CDAB'] as const)[r(2)]! : ORDERS[r(4)]!,
          scale: identity ? 1 : [0.1, 0.01, 2, 0.025][r(4)]!,
          offset: identity ? 0 : [0, -40, 1.5][r(3)]!,
          ...(type === 'bool' && !bits ? { bit: r(16) } : {}),
          ...(type === 'string' ? { length: 1 + r(4) } : {}),
        });
        points.push(p);
        a += (p.type === 'string' ? p.length! : ['int32', 'uint32', 'float32'].includes(type) ? 2 : ['int64', 'uint64', 'float64'].includes(type) ? 4 : 1) + r(3);
      }
      const request = planReads(points, 2)[0]!;
      const decoder = new RequestDecoder(request.address, request.points);
      const full = Array.from({ length: request.length }, () => (bits ? r(2) : r(0x10000)));
      for (const words of [full, full.slice(0, r(request.length))]) {
        const { values, errors } = decoder.decode(words);
        const expected = request.points.map((p) => decodePoint(words, p.address - request.address, p));
        expect(values.map((v) => (v instanceof DecodeError ? `error: ${v.message}` : v))).toEqual(expected.map((v) => (v instanceof DecodeError ? `error: ${v.message}` : v)));
        expect(errors).toBe(expected.filter((v) => v instanceof DecodeError).length);
      }
    }
  });
});

describe('request planning', () => {
  it('merges near-contiguous registers, counts 64-bit and string widths, splits tables', () => {
    const reqs = planReads(
      [
        pt('uint16', { name: 'a', address: 0 }),
        pt('float64', { name: 'b', address: 1 }),
        pt('string', { name: 's', address: 8, length: 6 }),
        pt('uint16', { name: 'd', address: 40 }),
        pt('bool', { name: 'e', table: 'coil', address: 0 }),
      ],
      10,
    );
    expect(reqs.map((r) => [r.table, r.address, r.length, r.points.length])).toEqual([
      ['holding', 0, 14, 3],
      ['holding', 40, 1, 1],
      ['coil', 0, 1, 1],
    ]);
  });

  it('never exceeds 125 registers per read', () => {
    const points = Array.from({ length: 300 }, (_, i) => pt('uint16', { name: `p${i}`, address: i }));
    const reqs = planReads(points, 0);
    expect(reqs).toHaveLength(3);
    expect(Math.max(...reqs.map((r) => r.length))).toBeLessThanOrEqual(125);
    expect(reqs.flatMap((r) => r.points)).toHaveLength(300);
  });
});
