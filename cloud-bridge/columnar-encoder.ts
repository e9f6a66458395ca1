import type { OutboxRow } from '../runtime/contracts/index.js';
import { ID_KIND, POW10, QUALITY_CODES, RAW_READING, trailingNumber, VALUE_KIND } from '../runtime/contracts/columnar-batch.js';

/**
 * The gateway's encoder of columnar batches; the format and its reference decoder are in
 * runtime/contracts/columnar-batch.ts (docs/topics.md, "Columnar batches").
 */

/** Scales tried for a number's decimals; beyond them (or beyond MAX_MANTISSA) it goes as float64. */
const MAX_DECIMALS = 15;
/** Mantissas stay below 2^51 so that the difference of two fits a zigzag varint below 2^53. */
const MAX_MANTISSA = 2 ** 51;
/** Seq and ts deltas must zigzag into a safe integer. */
const MAX_DELTA = 2 ** 52;
/** The fields of a reading that fits the columns, in the envelope's order (makeEnvelope). */
const FIELDS = ['id', 'device', 'point', 'value', 'quality', 'ts', 'seq'] as const;
const QUALITY = new Map<unknown, number>(QUALITY_CODES.map((q, i) => [q, i]));
/** A lone surrogate has no UTF-8 form: a string with one would not come back the same. */
const SURROGATE = /[\uD800-\uDFFF]/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const CANONICAL_SEQ = /^(?:0|[1-9][0-9]{0,15})$/;

/** Bytes appended to a growing buffer. */
class ByteWriter {
  private buf: Buffer;
  length = 0;

  constructor(size = 256) {
    this.buf = Buffer.allocUnsafe(size);
  }

  private room(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.length + n));
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }

  byte(b: number): void {
    this.room(1);
    this.buf[this.length++] = b;
  }

  /** Unsigned LEB128 of a safe integer ≥ 0. */
  varint(v: number): void {
    this.room(8);
    const buf = this.buf;
    while (v >= 0x80) {
      buf[this.length++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    buf[this.length++] = v;
  }

  /** Zigzag: 0, -1, 1, -2 … as 0, 1, 2, 3 …; |v| below 2^52. */
  signed(v: number): void {
    this.varint(v >= 0 ? v * 2 : -v * 2 - 1);
  }

  float64(v: number): void {
    this.room(8);
    this.buf.writeDoubleLE(v, this.length);
    this.length += 8;
  }

  utf8(s: string): void {
    const n = Buffer.byteLength(s);
    this.varint(n);
    this.room(n);
    this.length += this.buf.write(s, this.length, 'utf8');
  }

  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

interface Stream {
  readonly index: number;
  /** String indexes of device and point; of unit and rule plus one, 0 for none. */
  readonly names: readonly [number, number, number, number];
  /** Decimals of the stream's decimal values: the largest any of them needs. */
  scale: number;
  ts: number;
  seen: boolean;
  mantissa: number;
}

/** One reading that fits the columns, as pass 1 classified it. */
interface Columnar {
  readonly stream: Stream;
  readonly kind: number;
  readonly seqDelta: number;
  readonly tsDelta: number;
  readonly value: number | string;
  /** What the id column carries: a string index (id kinds devicePoint, text), a delta (next); none for gatewaySeq. */
  readonly id: number;
}

function wellFormed(s: string): boolean {
  return !SURROGATE.test(s) || !LONE_SURROGATE.test(s);
}

/** The delta that makes `middle` from `previous` (ID_KIND.next), if there is one. */
function middleDelta(previous: string, middle: string): number | undefined {
  if (middle === previous) return 0;
  const p = trailingNumber(previous);
  const m = trailingNumber(middle);
  return p && m && p.prefix === m.prefix ? m.n - p.n : undefined;
}

/** Fewest decimals d with v = round(v·10^d) / 10^d exactly; undefined: none up to MAX_DECIMALS. */
function decimals(v: number): number | undefined {
  if (Object.is(v, -0)) return undefined;
  for (let d = 0; d <= MAX_DECIMALS; d++) {
    const m = Math.round(v * POW10[d]!);
    if (Math.abs(m) >= MAX_MANTISSA) return undefined;
    if (m / POW10[d]! === v) return d;
  }
  return undefined;
}

/** The reading as parsed, when it has exactly the envelope's fields, in order, of the right types. */
function envelopeOf(body: string): Record<string, unknown> | undefined {
  let r: unknown;
  try {
    r = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (r === null || typeof r !== 'object' || Array.isArray(r)) return undefined;
  const keys = Object.keys(r);
  if (keys.length < FIELDS.length || keys.length > FIELDS.length + 2) return undefined;
  for (let i = 0; i < FIELDS.length; i++) if (keys[i] !== FIELDS[i]) return undefined;
  const rest = keys.slice(FIELDS.length).join(',');
  if (rest !== '' && rest !== 'rule' && rest !== 'unit' && rest !== 'rule,unit') return undefined;
  const e = r as Record<string, unknown>;
  if (typeof e.id !== 'string' || typeof e.device !== 'string' || typeof e.point !== 'string' || !QUALITY.has(e.quality)) return undefined;
  if (!Number.isSafeInteger(e.ts) || !Number.isSafeInteger(e.seq)) return undefined;
  if ((e.rule !== undefined && typeof e.rule !== 'string') || (e.unit !== undefined && typeof e.unit !== 'string')) return undefined;
  const v = e.value;
  if (v !== null && typeof v !== 'boolean' && !(typeof v === 'number' && Number.isFinite(v)) && !(typeof v === 'string' && wellFormed(v))) return undefined;
  return e;
}

/**
 * The body of a columnar batch of `rows` (their envelope JSON text), before compression; undefined
 * when the batch itself cannot be carried (a `sentAt` that is not a whole number of ms ≥ 0), and
 * must go as JSON.
 */
export function encodeColumnarBatch(gatewayId: string, sentAt: number, rows: readonly OutboxRow[]): Buffer | undefined {
  if (!Number.isSafeInteger(sentAt) || sentAt < 0 || !wellFormed(gatewayId)) return undefined;
  const strings = new Map<string, number>();
  const intern = (s: string): number => {
    let i = strings.get(s);
    if (i === undefined) strings.set(s, (i = strings.size));
    return i;
  };
  const streams = new Map<string, Stream | null>();
  const ordered: Stream[] = [];
  const streamOf = (e: Record<string, unknown>): Stream | undefined => {
    const { device, point, rule, unit } = e as { device: string; point: string; rule?: string; unit?: string };
    // Each name after its length: no two streams share a key, whatever characters their names hold.
    const key = `${device.length}:${device}${point.length}:${point}${unit === undefined ? '-' : `${unit.length}:${unit}`}${rule === undefined ? '-' : `${rule.length}:${rule}`}`;
    let s = streams.get(key);
    if (s === undefined) {
      const ok = wellFormed(device) && wellFormed(point) && (unit === undefined || wellFormed(unit)) && (rule === undefined || wellFormed(rule));
      s = null;
      if (ok) {
        const names = [intern(device), intern(point), unit === undefined ? 0 : intern(unit) + 1, rule === undefined ? 0 : intern(rule) + 1] as const;
        s = { index: ordered.length, names, scale: 0, ts: 0, seen: false, mantissa: 0 };
        ordered.push(s);
      }
      streams.set(key, s);
    }
    return s ?? undefined;
  };

  /** Per device, the middle of its last id of kind devicePoint or next (as the decoder keeps it). */
  const middles = new Map<string, string>();

  // Pass 1: classify each reading, intern its strings, find each stream's scale.
  const kinds = new Uint8Array(rows.length);
  const items: (Columnar | number)[] = [];
  let seq = 0;
  let last = sentAt;
  for (const row of rows) {
    const e = envelopeOf(row.body);
    const s = e && streamOf(e);
    const seqDelta = e ? (e.seq as number) - seq : 0;
    const tsDelta = e && s ? (e.ts as number) - (s.seen ? s.ts : last) : 0;
    const id = e?.id as string;
    const idWellFormed = e !== undefined && wellFormed(id);
    if (!e || !s || !idWellFormed || seqDelta < -MAX_DELTA || seqDelta >= MAX_DELTA || tsDelta < -MAX_DELTA || tsDelta >= MAX_DELTA) {
      kinds[items.length] = RAW_READING;
      items.push(intern(row.body));
      continue;
    }
    seq = e.seq as number;
    last = s.ts = e.ts as number;
    s.seen = true;

    const v = e.value as number | boolean | string | null;
    let valueKind: number;
    let value: number | string = 0;
    if (typeof v === 'number') {
      const d = decimals(v);
      if (d === undefined) valueKind = VALUE_KIND.float64;
      else {
        valueKind = VALUE_KIND.decimal;
        if (d > s.scale) s.scale = d;
      }
      value = v;
    } else if (typeof v === 'string') {
      valueKind = VALUE_KIND.string;
      value = intern(v);
    } else valueKind = v === null ? VALUE_KIND.null : v ? VALUE_KIND.true : VALUE_KIND.false;

    const device = e.device as string;
    const point = e.point as string;
    const prefix = gatewayId.length;
    let idKind: number;
    let idIndex = 0;
    if (id.length > prefix + 1 && id.charCodeAt(prefix) === 58 && id.startsWith(gatewayId) && CANONICAL_SEQ.test(id.slice(prefix + 1)) && Number(id.slice(prefix + 1)) === seq) {
      idKind = ID_KIND.gatewaySeq;
    } else if (id.length >= device.length + point.length + 2 && id.charCodeAt(device.length) === 58 && id.charCodeAt(id.length - point.length - 1) === 58 && id.startsWith(device) && id.endsWith(point)) {
      const middle = id.slice(device.length + 1, id.length - point.length - 1);
      const previous = middles.get(device);
      const delta = previous === undefined ? undefined : middleDelta(previous, middle);
      if (delta === undefined) {
        idKind = ID_KIND.devicePoint;
        idIndex = intern(middle);
      } else {
        idKind = ID_KIND.next;
        idIndex = delta;
      }
      middles.set(device, middle);
    } else {
      idKind = ID_KIND.text;
      idIndex = intern(id);
    }
    const kind = QUALITY.get(e.quality)! | (valueKind << 2) | (idKind << 5);
    kinds[items.length] = kind;
    items.push({ stream: s, kind, seqDelta, tsDelta, value, id: idIndex });
  }

  // Pass 2: the columns, now that each stream's scale is known.
  const streamCol = new ByteWriter(rows.length);
  const seqCol = new ByteWriter(rows.length);
  const tsCol = new ByteWriter(rows.length * 2);
  const valueCol = new ByteWriter(rows.length * 2);
  const idCol = new ByteWriter();
  let streamAt = 0;
  for (let i = 0; i < items.length; i++) {
    const it = items[i]!;
    if (typeof it === 'number') {
      idCol.varint(it);
      continue;
    }
    streamCol.signed(it.stream.index - streamAt);
    streamAt = it.stream.index;
    seqCol.signed(it.seqDelta);
    tsCol.signed(it.tsDelta);
    const valueKind = (it.kind >> 2) & 7;
    if (valueKind === VALUE_KIND.decimal) {
      const s = it.stream;
      const v = it.value as number;
      const m = Math.round(v * POW10[s.scale]!);
      if (Math.abs(m) < MAX_MANTISSA && m / POW10[s.scale]! === v) {
        valueCol.signed(m - s.mantissa);
        s.mantissa = m;
      } else {
        // Exact at its own scale, not at the stream's (too many digits together): as float64.
        kinds[i] = it.kind ^ ((VALUE_KIND.decimal ^ VALUE_KIND.float64) << 2);
        valueCol.float64(v);
      }
    } else if (valueKind === VALUE_KIND.float64) valueCol.float64(it.value as number);
    else if (valueKind === VALUE_KIND.string) valueCol.varint(it.value as number);
    const idKind = it.kind >> 5;
    if (idKind === ID_KIND.next) idCol.signed(it.id);
    else if (idKind !== ID_KIND.gatewaySeq) idCol.varint(it.id);
  }

  const head = new ByteWriter();
  head.varint(rows.length);
  head.utf8(gatewayId);
  head.varint(sentAt);
  head.varint(strings.size);
  for (const s of strings.keys()) head.utf8(s);
  head.varint(ordered.length);
  for (const st of ordered) {
    for (const n of st.names) head.varint(n);
    head.varint(st.scale);
  }
  return Buffer.concat([head.bytes(), kinds, streamCol.bytes(), seqCol.bytes(), tsCol.bytes(), valueCol.bytes(), idCol.bytes()]);
}
