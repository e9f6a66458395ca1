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

const swapBytes = (w: number): number => ((w & 0xff) << 8) | (w >> 8);
/** Where two words become a float32 (decoding is synchronous: one is enough). */
const scratch = new DataView(new ArrayBuffer(4));

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
    if (byteSwap(point.order)) w = swapBytes(w);
    const raw = point.type === 'int16' && w >= 0x8000 ? w - 0x10000 : w;
    return point.scale === 1 && point.offset === 0 ? raw : scaled(raw, point);
  }
  if (point.type === 'string') {
    // Characters stay in register order; BADC/DCBA only swap the two characters of each register.
    const text = reorder(words.slice(offset, offset + n), byteSwap(point.order) ? 'BADC' : 'ABCD');
    // Two characters per register; padding (NUL or space) at the end is not part of the value.
    return text.toString('latin1').replace(/[\0 ]+$/, '');
  }
  let raw: number | bigint;
  if (n === 2) {
    // int32, uint32, float32: the two words put in value order with arithmetic, not a Buffer.
    const swap = wordSwap(point.order);
    let hi = words[offset + (swap ? 1 : 0)]! & 0xffff;
    let lo = words[offset + (swap ? 0 : 1)]! & 0xffff;
    if (byteSwap(point.order)) {
      hi = swapBytes(hi);
      lo = swapBytes(lo);
    }
    if (point.type === 'uint32') raw = hi * 0x10000 + lo;
    else if (point.type === 'int32') raw = (hi << 16) | lo;
    else {
      scratch.setUint16(0, hi);
      scratch.setUint16(2, lo);
      raw = scratch.getFloat32(0);
    }
    return finish(raw, point);
  }
  const bytes = reorder(words.slice(offset, offset + n), point.order);
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
  return finish(raw, point);
}

/** A numeric register value, scaled; a DecodeError when it or its scaled value is not finite. */
function finish(raw: number, point: ModbusPoint): number | DecodeError {
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
  if (point.type === 'float32') {
    const v = Number(raw.toPrecision(7));
    return point.scale === 1 && point.offset === 0 ? v : Number((v * point.scale + point.offset).toPrecision(7));
  }
  if (point.type === 'float64') return raw * point.scale + point.offset;
  return scaledInteger(raw, point, roundingFactor(point));
}

function roundingFactor(point: ModbusPoint): number {
  let factor = roundingOf.get(point);
  if (factor === undefined) {
    factor = 10 ** Math.min(15, Math.max(decimalsOf(point.scale), decimalsOf(point.offset)));
    roundingOf.set(point, factor);
  }
  return factor;
}

/** An integer register value × scale + offset, rounded to `factor` (roundingFactor of the point). */
function scaledInteger(raw: number, point: ModbusPoint, factor: number): number {
  return Math.round((raw * point.scale + point.offset) * factor) / factor;
}

/**
 * How a point of a request is decoded, worked out once (RequestDecoder): one small integer per
 * point, its kind in the low two bits, then flags, then the bit number of a register bit.
 */
const BIT = 0; // a coil or discrete input: 0 or 1
const REGISTER_BIT = 1; // type bool in a holding or input register
const WORD = 2; // uint16 or int16
const OTHER = 3; // anything else: decodePoint
const KIND = 3;
const SWAP = 4; // bytes swapped (BADC, DCBA)
const SIGNED = 8; // int16
const SCALED = 16; // scale or offset other than 1 and 0
const BIT_SHIFT = 5;

function codeOf(p: ModbusPoint): number {
  if (p.table === 'coil' || p.table === 'discrete') return BIT;
  if (p.type === 'bool') return REGISTER_BIT | ((p.bit ?? 0) << BIT_SHIFT);
  if (p.type !== 'uint16' && p.type !== 'int16') return OTHER;
  return WORD | (byteSwap(p.order) ? SWAP : 0) | (p.type === 'int16' ? SIGNED : 0) | (p.scale === 1 && p.offset === 0 ? 0 : SCALED);
}

/** The values of a request's points, in request order; `errors` of them are DecodeErrors. */
export interface Decoded {
  readonly values: (number | boolean | string | DecodeError)[];
  readonly errors: number;
}

/**
 * Decodes every point of one read request, each the way decodePoint does, with what can be worked
 * out per point (its offset, its kind, swap, sign, scaling) worked out once per request rather than
 * once per point and poll. One-register numbers and bits, most of a register map, are decoded
 * inline; the others go through decodePoint.
 */
export class RequestDecoder {
  /** Of each point's first register (or bit) from the request's start. */
  private readonly offsets: readonly number[];
  private readonly codes: readonly number[];
  /** Per point: the power of ten a scaled 16-bit value is rounded to (see scaled); empty when none is scaled. */
  private readonly factors: readonly number[];
  /** Words an answer must hold for every point to be in it. */
  private readonly span: number;
  /**
   * Every point is an unscaled 16-bit integer without a byte swap ('words'), or a coil or
   * discrete input ('bits'): decoded by offset and sign alone. 'mixed': by each point's code.
   */
  private readonly shape: 'words' | 'bits' | 'mixed';

  /** `address`: where the request starts; `points`: the request's points. */
  constructor(
    address: number,
    private readonly points: readonly ModbusPoint[],
  ) {
    this.offsets = points.map((p) => p.address - address);
    this.codes = points.map(codeOf);
    const anyScaled = this.codes.some((c) => (c & KIND) === WORD && (c & SCALED) !== 0);
    this.factors = anyScaled ? points.map((p, j) => ((this.codes[j]! & SCALED) !== 0 ? roundingFactor(p) : 1)) : [];
    this.span = points.reduce((n, p) => Math.max(n, p.address - address + width(p)), 0);
    const codes = this.codes;
    this.shape =
      codes.length > 0 && codes.every((c) => (c & ~SIGNED) === WORD) ? 'words' : codes.length > 0 && codes.every((c) => c === BIT) ? 'bits' : 'mixed';
  }

  decode(words: readonly number[]): Decoded {
    const n = this.points.length;
    // A short answer: decodePoint says which points it lacks.
    if (words.length < this.span) return this.decodeEach(words);
    const offsets = this.offsets;
    const codes = this.codes;
    if (this.shape === 'words') {
      const values = new Array<number>(n);
      for (let j = 0; j < n; j++) {
        const w = words[offsets[j]!]! & 0xffff;
        values[j] = (codes[j]! & SIGNED) === 0 || w < 0x8000 ? w : w - 0x10000;
      }
      return { values, errors: 0 };
    }
    if (this.shape === 'bits') {
      const values = new Array<boolean>(n);
      for (let j = 0; j < n; j++) values[j] = words[offsets[j]!] !== 0;
      return { values, errors: 0 };
    }
    const values = new Array<number | boolean | string | DecodeError>(n);
    let errors = 0;
    for (let j = 0; j < n; j++) {
      const c = codes[j]!;
      const o = offsets[j]!;
      const kind = c & KIND;
      if (kind === WORD) {
        let w = words[o]! & 0xffff;
        if ((c & SWAP) !== 0) w = swapBytes(w);
        const raw = (c & SIGNED) !== 0 && w >= 0x8000 ? w - 0x10000 : w;
        values[j] = (c & SCALED) === 0 ? raw : scaledInteger(raw, this.points[j]!, this.factors[j]!);
      } else if (kind === BIT) values[j] = words[o] !== 0;
      else if (kind === REGISTER_BIT) values[j] = ((words[o]! >> (c >> BIT_SHIFT)) & 1) === 1;
      else {
        const v = decodePoint(words, o, this.points[j]!);
        if (v instanceof DecodeError) errors++;
        values[j] = v;
      }
    }
    return { values, errors };
  }

  /** Point by point with decodePoint. */
  private decodeEach(words: readonly number[]): Decoded {
    let errors = 0;
    const values = this.points.map((p, j) => {
      const v = decodePoint(words, this.offsets[j]!, p);
      if (v instanceof DecodeError) errors++;
      return v;
    });
    return { values, errors };
  }
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
