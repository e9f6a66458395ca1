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
 * Immutable once built: its arrays are private and never handed out; a run's arrays that the
 * builder took without a copy are never changed by the one that gave them (see addRun).
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
 * The columns of a batch: per reading its point's index in the table and its value; quality and
 * time per reading, or one for every reading (a poll request's readings share both, so a request
 * hands over its values without a store per reading into four columns).
 */
interface Columns {
  readonly points: readonly number[];
  readonly values: readonly Value[];
  /** Per reading; undefined: every reading has `quality`. */
  readonly qualities: readonly Quality[] | undefined;
  readonly quality: Quality;
  /** Per reading; undefined: every reading has `ts`. */
  readonly times: readonly number[] | undefined;
  readonly ts: number;
}

/** Collects the readings of one poll, then numbers them as one batch. */
export class ReadingBatchBuilder {
  private points: number[] = [];
  private values: Value[] = [];
  private qualities: Quality[] | undefined;
  private quality: Quality = 'good';
  private times: number[] | undefined;
  private ts = 0;
  /** `points` and `values` are the arrays of a run taken as they were: copied before they grow. */
  private shared = false;

  constructor(readonly table: PointTable) {}

  get length(): number {
    return this.values.length;
  }

  /** Adds a reading of the table's point `index`. */
  add(index: number, value: Value, quality: Quality, ts: number): void {
    this.extend(1, quality, ts);
    this.points.push(index);
    this.values.push(value);
  }

  /**
   * Adds readings of the table's points `points[j]` with values `values[j]`, all of one quality
   * and time. The first run of a batch is taken as it is, without a copy: `points` must not change
   * afterwards, and `values` is handed over (the caller keeps no reference to change it through).
   */
  addRun(points: readonly number[], values: Value[], quality: Quality, ts: number): void {
    const m = values.length;
    if (m === 0) return;
    if (this.values.length === 0) {
      this.points = points as number[];
      this.values = values;
      this.quality = quality;
      this.ts = ts;
      this.shared = true;
      return;
    }
    this.extend(m, quality, ts);
    for (let j = 0; j < m; j++) {
      this.points.push(points[j]!);
      this.values.push(values[j]!);
    }
  }

  /** Makes room for `m` more readings of `quality` and `ts` in the quality and time columns. */
  private extend(m: number, quality: Quality, ts: number): void {
    if (this.shared) {
      this.points = this.points.slice();
      this.values = this.values.slice();
      this.shared = false;
    }
    const n = this.values.length;
    if (n === 0) {
      this.quality = quality;
      this.ts = ts;
      return;
    }
    if (this.qualities === undefined && quality !== this.quality) this.qualities = new Array<Quality>(n).fill(this.quality);
    if (this.qualities !== undefined) for (let j = 0; j < m; j++) this.qualities.push(quality);
    if (this.times === undefined && ts !== this.ts) this.times = new Array<number>(n).fill(this.ts);
    if (this.times !== undefined) for (let j = 0; j < m; j++) this.times.push(ts);
  }

  /** The batch so far, numbered from `sequence`; the builder starts empty again. */
  build(sequence: { reserve(n: number): { seq0: number; idPrefix: string } }): ReadingBatch {
    const { seq0, idPrefix } = sequence.reserve(this.values.length);
    const cols: Columns = { points: this.points, values: this.values, qualities: this.qualities, quality: this.quality, times: this.times, ts: this.ts };
    this.points = [];
    this.values = [];
    this.qualities = undefined;
    this.times = undefined;
    this.shared = false;
    return new ReadingBatch(this.table, idPrefix, seq0, cols, undefined);
  }
}

const QUALITY_JSON: Record<Quality, string> = { good: ',"quality":"good","ts":', bad: ',"quality":"bad","ts":', stale: ',"quality":"stale","ts":' };

export class ReadingBatch implements Iterable<Envelope> {
  /** The id prefix as it appears inside a JSON string (escaped once). */
  private readonly idJson: string;
  private readonly points: readonly number[];
  private readonly values: readonly Value[];
  private readonly qualities: readonly Quality[] | undefined;
  private readonly quality0: Quality;
  private readonly times: readonly number[] | undefined;
  private readonly ts0: number;
  private tsKey = NaN;
  private tsText = '';

  /** Use ReadingBatchBuilder. `rows`: the base readings this batch selects, in order; undefined: all. */
  constructor(
    readonly table: PointTable,
    private readonly idPrefix: string,
    private readonly seq0: number,
    private readonly cols: Columns,
    private readonly rows: readonly number[] | undefined,
  ) {
    this.idJson = idJsonOf(idPrefix);
    this.points = cols.points;
    this.values = cols.values;
    this.qualities = cols.qualities;
    this.quality0 = cols.quality;
    this.times = cols.times;
    this.ts0 = cols.ts;
  }

  get device(): string {
    return this.table.device;
  }

  get length(): number {
    return this.rows ? this.rows.length : this.values.length;
  }

  /** Base reading (row of the columns) of the k-th reading. */
  private row(k: number): number {
    return this.rows ? this.rows[k]! : k;
  }

  /** Index in `table` of the k-th reading's point. */
  pointIndex(k: number): number {
    return this.points[this.row(k)]!;
  }

  point(k: number): string {
    return this.table.names[this.pointIndex(k)]!;
  }

  value(k: number): Value {
    return this.values[this.row(k)]!;
  }

  quality(k: number): Quality {
    return this.qualities === undefined ? this.quality0 : this.qualities[this.row(k)]!;
  }

  ts(k: number): number {
    return this.times === undefined ? this.ts0 : this.times[this.row(k)]!;
  }

  seq(k: number): number {
    return this.seq0 + this.row(k);
  }

  /** The k-th reading as an Envelope (a new frozen object). */
  at(k: number): Envelope {
    const r = this.row(k);
    const seq = this.seq0 + r;
    const p = this.points[r]!;
    return makeEnvelope({
      id: this.idPrefix + decimal(seq),
      device: this.table.device,
      point: this.table.names[p]!,
      value: this.values[r]!,
      quality: this.qualities === undefined ? this.quality0 : this.qualities[r]!,
      ts: this.times === undefined ? this.ts0 : this.times[r]!,
      seq,
      unit: this.table.units[p],
    });
  }

  /** JSON text of the k-th reading: the same as JSON.stringify(this.at(k)). */
  json(k: number): string {
    const r = this.row(k);
    const p = this.points[r]!;
    const seq = decimal(this.seq0 + r);
    const ts = this.times === undefined ? this.ts0 : this.times[r]!;
    if (ts !== this.tsKey) {
      this.tsKey = ts;
      this.tsText = JSON.stringify(ts);
    }
    return (
      this.idJson +
      seq +
      this.table.heads[p]! +
      valueJson(this.values[r]!) +
      QUALITY_JSON[this.qualities === undefined ? this.quality0 : this.qualities[r]!] +
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
