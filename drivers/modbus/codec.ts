import type { ModbusPoint, PointType } from './types.js';

/** Registers (16-bit words) a point occupies; bit tables count one per point. */
export function width(type: PointType): number {
  return type === 'int32' || type === 'uint32' || type === 'float32' ? 2 : 1;
}

const scratch = new DataView(new ArrayBuffer(4));

/**
 * Decodes a point from the words of a read response, big-endian with the high word first (ABCD),
 * the Modbus convention. Returns null when the response is too short for the point.
 */
export function decodeRegisters(words: readonly number[], offset: number, point: ModbusPoint): number | null {
  const hi = words[offset];
  if (hi === undefined) return null;
  let raw: number;
  switch (point.type) {
    case 'uint16':
      raw = hi;
      break;
    case 'int16':
      raw = hi >= 0x8000 ? hi - 0x10000 : hi;
      break;
    case 'int32':
    case 'uint32':
    case 'float32': {
      const lo = words[offset + 1];
      if (lo === undefined) return null;
      scratch.setUint16(0, hi);
      scratch.setUint16(2, lo);
      raw = point.type === 'int32' ? scratch.getInt32(0) : point.type === 'uint32' ? scratch.getUint32(0) : scratch.getFloat32(0);
      break;
    }
    case 'bool':
      raw = hi === 0 ? 0 : 1;
      break;
  }
  if (!Number.isFinite(raw)) return null;
  return point.scale === 1 ? raw : raw * point.scale;
}
