import type { ByteOrder, ModbusPoint, PointType } from './types.js';

/** Registers (16-bit words) a point occupies; bit tables count one per point. */
export function width(point: Pick<ModbusPoint, 'type' | 'length'>): number {
  return typeWidth(point.type, point.length);
}

export function typeWidth(type: PointType, length?: number): number {
  switch (type) {
    case 'int32':
    case 'uint32':
    case 'float32':
      return 2;
    case 'int64':
    case 'uint64':
    case 'float64':
      return 4;
    case 'string':
      return length ?? 1;
    default:
      return 1;
  }
}

const wordSwap = (order: ByteOrder): boolean => order === 'CDAB' || order === 'DCBA';
const byteSwap = (order: ByteOrder): boolean => order === 'BADC' || order === 'DCBA';

/**
 * The value's bytes, most significant first, from `n` registers in the point's byte order. The
 * same transformation turns value bytes back into register order (it is its own inverse).
 */
function reorder(words: readonly number[], order: ByteOrder): Buffer {
  const n = words.length;
  const out = Buffer.allocUnsafe(n * 2);
  for (let i = 0; i < n; i++) {
    const w = words[wordSwap(order) && n > 1 ? n - 1 - i : i]! & 0xffff;
    if (byteSwap(order)) out.writeUInt16LE(w, i * 2);
    else out.writeUInt16BE(w, i * 2);
  }
  return out;
}

/** Why a response could not be decoded into a value. */
export class DecodeError extends Error {}

/**
 * Decodes a point from the words of a read response (bits as 0/1 words for coils and discrete
 * inputs), then applies scale and offset. 64-bit integers beyond 2^53 are reported as exact
 * decimal strings when neither scale nor offset applies. Returns a DecodeError when the words do
 * not hold a valid value (short response, NaN or infinite float).
 */
export function decodePoint(words: readonly number[], offset: number, point: ModbusPoint): number | boolean | string | DecodeError {
  const n = width(point);
  if (offset < 0 || offset + n > words.length) return new DecodeError(`response too short for ${point.name}`);
  if (point.table === 'coil' || point.table === 'discrete') return words[offset] !== 0;
  if (point.type === 'bool') return ((words[offset]! >> (point.bit ?? 0)) & 1) === 1;
  if (n === 1 && (point.type === 'uint16' || point.type === 'int16')) {
    // The common case without a buffer: one register, bytes swapped only for BADC/DCBA.
    let w = words[offset]! & 0xffff;
    if (byteSwap(point.order)) w = ((w & 0xff) << 8) | (w >> 8);
    const raw = point.type === 'int16' && w >= 0x8000 ? w - 0x10000 : w;
    return point.scale === 1 && point.offset === 0 ? raw : scaled(raw, point);
  }
  if (point.type === 'string') {
    // Characters stay in register order; BADC/DCBA only swap the two characters of each register.
    const text = reorder(words.slice(offset, offset + n), byteSwap(point.order) ? 'BADC' : 'ABCD');
    // Two characters per register; padding (NUL or space) at the end is not part of the value.
    return text.toString('latin1').replace(/[\0 ]+$/, '');
  }
  const bytes = reorder(words.slice(offset, offset + n), point.order);
  let raw: number | bigint;
  switch (point.type) {
    case 'uint16':
      raw = bytes.readUInt16BE(0);
      break;
    case 'int16':
      raw = bytes.readInt16BE(0);
      break;
    case 'uint32':
      raw = bytes.readUInt32BE(0);
      break;
    case 'int32':
      raw = bytes.readInt32BE(0);
      break;
    case 'float32':
      raw = bytes.readFloatBE(0);
      break;
    case 'float64':
      raw = bytes.readDoubleBE(0);
      break;
    case 'uint64':
      raw = bytes.readBigUInt64BE(0);
      break;
    case 'int64':
      raw = bytes.readBigInt64BE(0);
      break;
  }
  if (typeof raw === 'bigint') {
    const identity = point.scale === 1 && point.offset === 0;
    if (identity && (raw > BigInt(Number.MAX_SAFE_INTEGER) || raw < BigInt(Number.MIN_SAFE_INTEGER))) return raw.toString();
    raw = Number(raw);
  }
  if (!Number.isFinite(raw)) return new DecodeError(`${point.name}: ${point.type} register value is not a finite number`);
  if (point.scale === 1 && point.offset === 0 && point.type !== 'float32') return raw;
  const value = scaled(raw, point);
  return Number.isFinite(value) ? value : new DecodeError(`${point.name}: ${raw} × ${point.scale} + ${point.offset} is not a finite number`);
}

/** Digits after the decimal point of `x` as written (0.1 → 1, 0.025 → 3, 1e-7 → 7). */
function decimalsOf(x: number): number {
  if (Number.isInteger(x)) return 0;
  const [mantissa = '', exp] = x.toExponential().split('e');
  const fraction = mantissa.split('.')[1]?.length ?? 0;
  return Math.max(0, fraction - Number(exp));
}

/** Per point: the power of ten its scaled values are rounded to (computed once). */
const roundingOf = new WeakMap<ModbusPoint, number>();

/**
 * raw × scale + offset without binary noise: 454 × 0.1 is 45.400000000000006 in floating point,
 * but a register scaled by 0.1 holds tenths, so the value is rounded to the decimals of the scale
 * and the offset (docs/config.md). A float register keeps the precision of its type: float32
 * values to 7 significant digits (what a float32 holds), float64 values as they are.
 */
function scaled(raw: number, point: ModbusPoint): number {
  let factor = roundingOf.get(point);
  if (factor === undefined) {
    factor = 10 ** Math.min(15, Math.max(decimalsOf(point.scale), decimalsOf(point.offset)));
    roundingOf.set(point, factor);
  }
  if (point.type === 'float32') {
    const v = Number(raw.toPrecision(7));
    return point.scale === 1 && point.offset === 0 ? v : Number((v * point.scale + point.offset).toPrecision(7));
  }
  if (point.type === 'float64') return raw * point.scale + point.offset;
  return Math.round((raw * point.scale + point.offset) * factor) / factor;
}

/**
 * The registers (or 0/1 bits) to write for an engineering value: the inverse of decodePoint.
 * Throws an Error that names the point when the value does not fit its type.
 */
export function encodePoint(value: number | boolean | string, point: ModbusPoint): number[] {
  if (point.table === 'coil') {
    if (typeof value !== 'boolean' && value !== 0 && value !== 1) throw new Error(`${point.name}: a coil takes true/false, not ${JSON.stringify(value)}`);
    return [value === true || value === 1 ? 1 : 0];
  }
  if (point.table !== 'holding') throw new Error(`${point.name}: ${point.table} points are read-only`);
  if (point.type === 'bool') throw new Error(`${point.name}: a bit of a holding register is written with its register, not alone`);
  const n = width(point);
  const bytes = Buffer.alloc(n * 2);
  if (point.type === 'string') {
    if (typeof value !== 'string') throw new Error(`${point.name}: expects a string`);
    if (Buffer.byteLength(value, 'latin1') > n * 2 || /[^\x20-\x7e]/.test(value)) {
      throw new Error(`${point.name}: string must be printable ASCII of at most ${n * 2} characters`);
    }
    bytes.write(value, 'latin1');
  } else {
    if (typeof value !== 'number' || !Number.isFinite(value)) throw new Error(`${point.name}: expects a finite number, not ${JSON.stringify(value)}`);
    const raw = (value - point.offset) / point.scale;
    if (!Number.isFinite(raw)) throw new Error(`${point.name}: ${value} is out of range for ${point.type}`);
    const float = point.type === 'float32' || point.type === 'float64';
    const int = float ? raw : Math.round(raw);
    if (!float && Math.abs(int - raw) > 1e-9 * Math.max(1, Math.abs(raw))) {
      throw new Error(`${point.name}: ${value} is not a whole number of ${point.scale} steps`);
    }
    const range: Record<string, [number, number]> = {
      int16: [-0x8000, 0x7fff],
      uint16: [0, 0xffff],
      int32: [-0x80000000, 0x7fffffff],
      uint32: [0, 0xffffffff],
      int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
      uint64: [0, Number.MAX_SAFE_INTEGER],
    };
    const r = range[point.type];
    if (r && (int < r[0] || int > r[1])) throw new Error(`${point.name}: ${value} is out of range for ${point.type}`);
    switch (point.type) {
      case 'int16':
        bytes.writeInt16BE(int, 0);
        break;
      case 'uint16':
        bytes.writeUInt16BE(int, 0);
        break;
      case 'int32':
        bytes.writeInt32BE(int, 0);
        break;
      case 'uint32':
        bytes.writeUInt32BE(int, 0);
        break;
      case 'float32':
        if (Math.abs(int) > 3.4028234663852886e38) throw new Error(`${point.name}: ${value} is out of range for float32`);
        bytes.writeFloatBE(int, 0);
        break;
      case 'float64':
        bytes.writeDoubleBE(int, 0);
        break;
      case 'int64':
        bytes.writeBigInt64BE(BigInt(int), 0);
        break;
      case 'uint64':
        bytes.writeBigUInt64BE(BigInt(int), 0);
        break;
    }
  }
  const words: number[] = [];
  for (let i = 0; i < n; i++) words.push(bytes.readUInt16BE(i * 2));
  // Value bytes → register order: the same reordering as on the way in (strings: the byte swap only).
  const out = reorder(words, point.type === 'string' ? (byteSwap(point.order) ? 'BADC' : 'ABCD') : point.order);
  return Array.from({ length: n }, (_, i) => out.readUInt16BE(i * 2));
}
