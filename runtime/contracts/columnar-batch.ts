import type { Envelope } from './envelope.js';

/**
 * The columnar uplink batch (docs/topics.md, "Columnar batches"): the same batch as the JSON one,
 * `{v:1, gateway, sentAt, readings}`, laid out for a metered link. Readings keep their order; each
 * belongs to a stream (device, point, unit, rule), and within a stream timestamps and numeric values
 * are delta-coded, so a column of a site's readings is mostly small, repeating numbers that the
 * compressor behind it (brotli or deflate) shrinks far better than JSON text. Every string (names,
 * units, rules, ids that do not follow a known form, text values) is written once in a table.
 * A reading that does not fit the columns travels as its JSON text, so every batch round-trips.
 *
 * This module is the reference decoder and the format's one definition; the gateway's encoder is
 * cloud-bridge/columnar-encoder.ts.
 */

/*
 * Each reading has a kind byte: bits 0–1 its quality (QUALITY_CODES), 2–4 its value kind
 * (VALUE_KIND), 5–6 its id kind (ID_KIND), bit 7 clear; or RAW_READING: it travels as JSON text.
 */
export const QUALITY_CODES = ['good', 'bad', 'stale'] as const;

export const VALUE_KIND = {
  /** mantissa ÷ 10^scale of its stream, the mantissa delta-coded within the stream. */
  decimal: 0,
  /** IEEE 754 binary64, little-endian. */
  float64: 1,
  false: 2,
  true: 3,
  null: 4,
  /** An index into the string table. */
  string: 5,
} as const;

export const ID_KIND = {
  /** `{gateway}:{seq}`: nothing carried. */
  gatewaySeq: 0,
  /** `{device}:{middle}:{point}`: the middle carried (a child's message id). */
  devicePoint: 1,
  /** Any other id: carried whole. */
  text: 2,
  /**
   * `{device}:{middle}:{point}` where the middle follows the device's previous one in the batch
   * (of its last reading with id kind devicePoint or next): a signed delta is carried, 0 for the
   * same middle, else added to the middle's trailing number (trailingNumber). A child's readings
   * of one message share a middle, and its next message counts up by one.
   */
  next: 3,
} as const;

/**
 * A string's trailing decimal number and what precedes it: the longest run of digits at its end,
 * when it is written as String(n) would write it (no leading zero, at most 15 digits).
 */
export function trailingNumber(s: string): { prefix: string; n: number } | undefined {
  let i = s.length;
  while (i > 0 && s.charCodeAt(i - 1) >= 48 && s.charCodeAt(i - 1) <= 57) i--;
  const digits = s.length - i;
  if (digits === 0 || digits > 15 || (digits > 1 && s.charCodeAt(i) === 48)) return undefined;
  return { prefix: s.slice(0, i), n: Number(s.slice(i)) };
}

/** The kind byte of a reading carried as its JSON text. */
export const RAW_READING = 0xff;

/** The largest scale: 10^22 is the largest power of ten a binary64 holds exactly. */
export const MAX_SCALE = 22;
/** 10^k for k = 0..22, each exact, so that mantissa / 10^scale is one correctly rounded division. */
export const POW10: readonly number[] = Array.from({ length: MAX_SCALE + 1 }, (_, k) => Number(`1e${k}`));

/** A payload that is not a valid uplink batch: truncated, corrupted, or of an unknown kind. */
export class UplinkPayloadError extends Error {
  override readonly name = 'UplinkPayloadError';
}

/** Reads the body front to back; every read checks its bounds and names what it was reading. */
class Reader {
  private pos = 0;
  what = 'header';

  constructor(private readonly buf: Buffer) {}

  get done(): boolean {
    return this.pos === this.buf.length;
  }

  private fail(problem: string): never {
    throw new UplinkPayloadError(`columnar uplink batch: ${problem} at byte ${this.pos} of ${this.buf.length} (${this.what})`);
  }

  byte(): number {
    if (this.pos >= this.buf.length) this.fail('truncated');
    return this.buf[this.pos++]!;
  }

  /** Unsigned LEB128, at most 8 bytes (56 bits), a safe integer. */
  varint(): number {
    let value = 0;
    let factor = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.byte();
      value += (b & 0x7f) * factor;
      if (b < 0x80) {
        if (value > Number.MAX_SAFE_INTEGER) this.fail('integer beyond 2^53');
        return value;
      }
      factor *= 128;
    }
    return this.fail('varint longer than 8 bytes');
  }

  /** A zigzag-coded signed integer: 0, -1, 1, -2, … as 0, 1, 2, 3, … */
  signed(): number {
    const z = this.varint();
    return z % 2 === 0 ? z / 2 : -(z + 1) / 2;
  }

  /** A varint that must be below `limit` (an index into a table of that size). */
  index(limit: number, of: string): number {
    const i = this.varint();
    if (i >= limit) this.fail(`${of} index ${i} out of range (${limit})`);
    return i;
  }

  float64(): number {
    if (this.pos + 8 > this.buf.length) this.fail('truncated');
    const v = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return v;
  }

  utf8(): string {
    const n = this.varint();
    if (this.pos + n > this.buf.length) this.fail('truncated');
    const s = this.buf.toString('utf8', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }

  /** Stops with a clear error when a decoded value breaks the format. */
  invalid(problem: string): never {
    return this.fail(problem);
  }
}

interface Stream {
  readonly device: string;
  readonly point: string;
  readonly unit: string | undefined;
  readonly rule: string | undefined;
  readonly pow: number;
  ts: number;
  mantissa: number;
  seen: boolean;
}

/** A batch as decoded, before the contract (uplinkBatchSchema) has checked its readings. */
export interface DecodedBatch {
  readonly v: 1;
  readonly gateway: string;
  readonly sentAt: number;
  readonly readings: unknown[];
}

/**
 * Decodes the body of a columnar batch (after decompression) into the batch it carries, reading
 * for reading what the JSON batch would hold: `{v:1, gateway, sentAt, readings}`, each reading with
 * its fields in the envelope's order. Throws UplinkPayloadError naming the part that was broken.
 */
export function decodeColumnarBatch(body: Buffer): DecodedBatch {
  // Annotated, so that a call of r.invalid (never) ends a path for the compiler.
  const r: Reader = new Reader(body);
  const n = r.varint();
  if (n > body.length) r.invalid(`${n} readings cannot fit in ${body.length} bytes`);
  const gateway = r.utf8();
  const sentAt = r.varint();

  r.what = 'string table';
  const stringCount = r.varint();
  if (stringCount > body.length) r.invalid(`${stringCount} strings cannot fit`);
  const strings: string[] = [];
  for (let i = 0; i < stringCount; i++) strings.push(r.utf8());
  const str = (of: string): string => strings[r.index(strings.length, of)]!;
  const optional = (of: string): string | undefined => {
    const i = r.index(strings.length + 1, of);
    return i === 0 ? undefined : strings[i - 1];
  };

  r.what = 'stream table';
  const streamCount = r.varint();
  if (streamCount > body.length) r.invalid(`${streamCount} streams cannot fit`);
  const streams: Stream[] = [];
  for (let i = 0; i < streamCount; i++) {
    const device = str('device');
    const point = str('point');
    const unit = optional('unit');
    const rule = optional('rule');
    const scale = r.varint();
    if (scale > MAX_SCALE) r.invalid(`scale ${scale} above ${MAX_SCALE}`);
    streams.push({ device, point, unit, rule, pow: POW10[scale]!, ts: 0, mantissa: 0, seen: false });
  }

  r.what = 'kind column';
  const kinds: number[] = [];
  for (let i = 0; i < n; i++) {
    const k = r.byte();
    if (k !== RAW_READING && ((k & 3) > 2 || ((k >> 2) & 7) > VALUE_KIND.string || k >> 5 > ID_KIND.next)) r.invalid(`kind byte 0x${k.toString(16)} of reading ${i}`);
    kinds.push(k);
  }
  const columnar = kinds.filter((k) => k !== RAW_READING).length;

  r.what = 'stream column';
  const of: Stream[] = [];
  for (let i = 0, at = 0; i < columnar; i++) {
    at += r.signed();
    if (at < 0 || at >= streams.length) r.invalid(`stream index ${at} out of range (${streams.length})`);
    of.push(streams[at]!);
  }

  r.what = 'seq column';
  const seqs: number[] = [];
  let seq = 0;
  for (let i = 0; i < columnar; i++) {
    seq += r.signed();
    if (!Number.isSafeInteger(seq)) r.invalid('seq beyond 2^53');
    seqs.push(seq);
  }

  r.what = 'ts column';
  const tss: number[] = [];
  let last = sentAt;
  for (let i = 0; i < columnar; i++) {
    const s = of[i]!;
    const ts = (s.seen ? s.ts : last) + r.signed();
    if (!Number.isSafeInteger(ts)) r.invalid('ts beyond 2^53');
    s.ts = ts;
    s.seen = true;
    last = ts;
    tss.push(ts);
  }

  r.what = 'value column';
  const values: Envelope['value'][] = [];
  for (let i = 0, c = 0; i < n; i++) {
    const k = kinds[i]!;
    if (k === RAW_READING) continue;
    const s = of[c++]!;
    switch ((k >> 2) & 7) {
      case VALUE_KIND.decimal:
        s.mantissa += r.signed();
        if (!Number.isSafeInteger(s.mantissa)) r.invalid('mantissa beyond 2^53');
        values.push(s.mantissa / s.pow);
        break;
      case VALUE_KIND.float64: {
        const v = r.float64();
        if (!Number.isFinite(v)) r.invalid('a value that is not a finite number');
        values.push(v);
        break;
      }
      case VALUE_KIND.false:
        values.push(false);
        break;
      case VALUE_KIND.true:
        values.push(true);
        break;
      case VALUE_KIND.null:
        values.push(null);
        break;
      default:
        values.push(str('value'));
    }
  }

  r.what = 'id column';
  const readings: unknown[] = [];
  /** Per device, the middle of its last id of kind devicePoint or next. */
  const middles = new Map<string, string>();
  for (let i = 0, c = 0; i < n; i++) {
    const k = kinds[i]!;
    if (k === RAW_READING) {
      const text = str('reading text');
      try {
        readings.push(JSON.parse(text));
      } catch (err) {
        throw new UplinkPayloadError(`columnar uplink batch: reading ${i} carried as text is not JSON`, { cause: err });
      }
      continue;
    }
    const s = of[c]!;
    const seq = seqs[c]!;
    let id: string;
    switch (k >> 5) {
      case ID_KIND.gatewaySeq:
        id = `${gateway}:${seq}`;
        break;
      case ID_KIND.text:
        id = str('id');
        break;
      default: {
        let middle: string;
        if (k >> 5 === ID_KIND.devicePoint) middle = str('id');
        else {
          const previous = middles.get(s.device);
          if (previous === undefined) r.invalid(`reading ${i}: an id following none of device "${s.device}"`);
          const delta = r.signed();
          const t = delta === 0 ? undefined : trailingNumber(previous);
          if (delta !== 0 && (t === undefined || !Number.isSafeInteger(t.n + delta) || t.n + delta < 0)) r.invalid(`reading ${i}: id delta ${delta} after "${previous}"`);
          middle = t ? `${t.prefix}${t.n + delta}` : previous;
        }
        middles.set(s.device, middle);
        id = `${s.device}:${middle}:${s.point}`;
      }
    }
    const reading: Record<string, unknown> = { id, device: s.device, point: s.point, value: values[c], quality: QUALITY_CODES[k & 3], ts: tss[c], seq };
    if (s.rule !== undefined) reading.rule = s.rule;
    if (s.unit !== undefined) reading.unit = s.unit;
    readings.push(reading);
    c++;
  }
  r.what = 'end';
  if (!r.done) r.invalid('bytes after the last column');
  return { v: 1, gateway, sentAt, readings };
}
