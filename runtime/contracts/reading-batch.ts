import { makeEnvelope, type Envelope, type Quality, type Value } from './envelope.js';

/**
 * Readings of one device carried as columns, for drivers that take many readings at once (a Modbus
 * poll yields up to 125 per request). An Envelope per reading costs an object, a frozen copy and
 * an id string; on the polling path that is more than the request itself. A batch holds the
 * values in arrays and numbers its readings from one reserved run of sequence numbers; it is what
 * an Envelope array would be, reading for reading: `at(k)` gives the k-th as an Envelope and
 * `json(k)` its JSON text, exactly `JSON.stringify(at(k))`, without building the object. Rules
 * select from a batch without copying it, and the outbox stores its JSON text directly.
 *
 * Immutable once built: its arrays are private and never handed out.
 */

/** The static side of a device's batches: its points in a fixed order, with JSON pieces made once. */
export class PointTable {
  readonly names: readonly string[];
  readonly units: readonly (string | undefined)[];
  /** `","device":…,"point":…,"value":` per point: everything between the id and the value. */
  readonly heads: readonly string[];
  /** `,"unit":…}` or `}` per point. */
  readonly tails: readonly string[];

  constructor(
    readonly device: string,
    points: readonly { readonly name: string; readonly unit?: string | undefined }[],
  ) {
    this.names = points.map((p) => p.name);
    this.units = points.map((p) => p.unit);
    this.heads = points.map((p) => `","device":${JSON.stringify(device)},"point":${JSON.stringify(p.name)},"value":`);
    this.tails = points.map((p) => (p.unit === undefined ? '}' : `,"unit":${JSON.stringify(p.unit)}}`));
  }
}

/**
 * The columns of a batch, interleaved in one array: point index, value, quality, time per reading.
 * One allocation per poll instead of one per column.
 */
type Cols = (number | Value)[];
const STRIDE = 4;

/** Collects the readings of one poll, then numbers them as one batch. */
export class ReadingBatchBuilder {
  private cols: Cols = [];
  private n = 0;
  private capacity = 0;

  /** `expected`: readings expected, allocated at the first (more are taken all the same). */
  constructor(
    readonly table: PointTable,
    private expected = 16,
  ) {}

  get length(): number {
    return this.n;
  }

  /** Adds a reading of the table's point `index`. */
  add(index: number, value: Value, quality: Quality, ts: number): void {
    if (this.n === 0 && this.expected > this.capacity) {
      this.capacity = this.expected;
      this.cols = new Array<number | Value>(this.capacity * STRIDE);
    }
    const n = this.n++;
    const cols = this.cols;
    if (n < this.capacity) {
      const o = n * STRIDE;
      cols[o] = index;
      cols[o + 1] = value;
      cols[o + 2] = quality;
      cols[o + 3] = ts;
    } else cols.push(index, value, quality, ts);
  }

  /** The batch so far, numbered from `sequence`; the builder starts empty again. */
  build(sequence: { reserve(n: number): { seq0: number; idPrefix: string } }): ReadingBatch {
    const n = this.n;
    if (n < this.capacity) this.cols.length = n * STRIDE;
    const { seq0, idPrefix } = sequence.reserve(n);
    const batch = new ReadingBatch(this.table, idPrefix, seq0, this.cols, undefined);
    // Usually the last use of this builder: start over with no room allocated.
    this.cols = [];
    this.n = 0;
    this.capacity = 0;
    this.expected = 0;
    return batch;
  }
}

const QUALITY_JSON: Record<Quality, string> = { good: ',"quality":"good","ts":', bad: ',"quality":"bad","ts":', stale: ',"quality":"stale","ts":' };

export class ReadingBatch implements Iterable<Envelope> {
  /** The id prefix as it appears inside a JSON string (escaped once). */
  private readonly idJson: string;
  private tsKey = NaN;
  private tsText = '';

  /** Use ReadingBatchBuilder. `rows`: the base readings this batch selects, in order; undefined: all. */
  constructor(
    readonly table: PointTable,
    private readonly idPrefix: string,
    private readonly seq0: number,
    private readonly cols: Readonly<Cols>,
    private readonly rows: readonly number[] | undefined,
  ) {
    this.idJson = idJsonOf(idPrefix);
  }

  get device(): string {
    return this.table.device;
  }

  get length(): number {
    return this.rows ? this.rows.length : this.cols.length / STRIDE;
  }

  /** Offset in `cols` of the k-th reading. */
  private base(k: number): number {
    return (this.rows ? this.rows[k]! : k) * STRIDE;
  }

  /** Index in `table` of the k-th reading's point. */
  pointIndex(k: number): number {
    return this.cols[this.base(k)] as number;
  }

  point(k: number): string {
    return this.table.names[this.pointIndex(k)]!;
  }

  value(k: number): Value {
    return this.cols[this.base(k) + 1] as Value;
  }

  quality(k: number): Quality {
    return this.cols[this.base(k) + 2] as Quality;
  }

  ts(k: number): number {
    return this.cols[this.base(k) + 3] as number;
  }

  seq(k: number): number {
    return this.seq0 + this.base(k) / STRIDE;
  }

  /** The k-th reading as an Envelope (a new frozen object). */
  at(k: number): Envelope {
    const o = this.base(k);
    const seq = this.seq0 + o / STRIDE;
    const p = this.cols[o] as number;
    return makeEnvelope({
      id: this.idPrefix + decimal(seq),
      device: this.table.device,
      point: this.table.names[p]!,
      value: this.cols[o + 1] as Value,
      quality: this.cols[o + 2] as Quality,
      ts: this.cols[o + 3] as number,
      seq,
      unit: this.table.units[p],
    });
  }

  /** JSON text of the k-th reading: the same as JSON.stringify(this.at(k)). */
  json(k: number): string {
    const o = this.base(k);
    const p = this.cols[o] as number;
    const seq = decimal(this.seq0 + o / STRIDE);
    const ts = this.cols[o + 3] as number;
    if (ts !== this.tsKey) {
      this.tsKey = ts;
      this.tsText = JSON.stringify(ts);
    }
    return (
      this.idJson +
      seq +
      this.table.heads[p]! +
      valueJson(this.cols[o + 1] as Value) +
      QUALITY_JSON[this.cols[o + 2] as Quality] +
      this.tsText +
      ',"seq":' +
      seq +
      this.table.tails[p]!
    );
  }

  /** The readings at positions `ks` (ascending) of this batch, sharing its storage. */
  select(ks: readonly number[]): ReadingBatch {
    if (ks.length === this.length) return this;
    const rows = this.rows ? ks.map((k) => this.rows![k]!) : ks;
    return new ReadingBatch(this.table, this.idPrefix, this.seq0, this.cols, rows);
  }

  *[Symbol.iterator](): Iterator<Envelope> {
    for (let k = 0; k < this.length; k++) yield this.at(k);
  }
}

/** What a driver hands to the ingest path: Envelopes, or one batch. */
export type Readings = readonly Envelope[] | ReadingBatch;

export const isBatch = (r: Readings): r is ReadingBatch => r instanceof ReadingBatch;

let idKey: string | undefined;
let idText = '';
/** `{"id":"<prefix>` with the prefix escaped for JSON; every batch of a gateway has the same prefix. */
function idJsonOf(prefix: string): string {
  if (prefix !== idKey) {
    idKey = prefix;
    idText = `{"id":${JSON.stringify(prefix).slice(0, -1)}`;
  }
  return idText;
}

function valueJson(v: Value): string {
  if (typeof v === 'number') return Number.isFinite(v) ? '' + v : 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  return v === null ? 'null' : JSON.stringify(v);
}

const SMALL = Array.from({ length: 1000 }, (_, i) => String(i));
const PAD3 = SMALL.map((s) => s.padStart(3, '0'));
let hiKey = -1;
let hiText = '';

/**
 * Decimal text of a non-negative safe integer. Sequence numbers are above 2^32, where String(n)
 * goes through the slow double-to-text path; consecutive numbers share all but their last three
 * digits, so those are converted once per thousand.
 */
export function decimal(n: number): string {
  if (n < 1000 || !Number.isSafeInteger(n)) return SMALL[n] ?? String(n);
  const hi = Math.floor(n / 1000);
  if (hi !== hiKey) {
    hiKey = hi;
    hiText = String(hi);
  }
  return hiText + PAD3[n - hi * 1000]!;
}
