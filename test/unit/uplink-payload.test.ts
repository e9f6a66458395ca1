import { describe, expect, it } from 'vitest';
import { encodeColumnarBatch } from '../../cloud-bridge/columnar-encoder.js';
import { encodeBatch, type UplinkFormat } from '../../cloud-bridge/uplink-payload.js';
import { makeEnvelope, type Envelope, type OutboxRow } from '../../runtime/contracts/index.js';
import { uplinkBatchSchema } from '../../runtime/contracts/topics.js';
import { decodeUplinkPayload, UPLINK_PAYLOAD_KIND, UplinkPayloadError } from '../../runtime/contracts/uplink-payload.js';

const FORMATS: ReadonlyArray<UplinkFormat & { kind: number }> = [
  { encoding: 'columnar', compression: 'brotli', kind: UPLINK_PAYLOAD_KIND.columnarBrotli },
  { encoding: 'columnar', compression: 'deflate', kind: UPLINK_PAYLOAD_KIND.columnarDeflate },
  { encoding: 'columnar', compression: 'none', kind: UPLINK_PAYLOAD_KIND.columnar },
  { encoding: 'json', compression: 'brotli', kind: UPLINK_PAYLOAD_KIND.jsonBrotli },
  { encoding: 'json', compression: 'deflate', kind: UPLINK_PAYLOAD_KIND.jsonZlib },
  { encoding: 'json', compression: 'none', kind: UPLINK_PAYLOAD_KIND.json },
];

const rowsOf = (bodies: readonly string[]): OutboxRow[] => bodies.map((body, i) => ({ rowid: i + 1, stream: 'telemetry', body, bytes: body.length, createdAt: 0 }));
const bodiesOf = (readings: readonly Envelope[]): string[] => readings.map((r) => JSON.stringify(r));

/** What the JSON batch carries: the reference every other kind must give back exactly. */
function reference(gateway: string, sentAt: number, rows: readonly OutboxRow[]): unknown {
  return decodeUplinkPayload(encodeBatch(gateway, sentAt, rows, { encoding: 'json', compression: 'none' }));
}

/** Each kind decodes to the JSON batch: deep equal (0 and -0 apart), and the same JSON text (field order). */
function expectRoundTrip(gateway: string, sentAt: number, rows: readonly OutboxRow[]): void {
  const expected = reference(gateway, sentAt, rows);
  for (const format of FORMATS) {
    const payload = encodeBatch(gateway, sentAt, rows, format);
    expect(payload[0], format.encoding + ' ' + format.compression).toBe(format.kind);
    const decoded = decodeUplinkPayload(payload);
    expect(decoded, `${format.encoding} ${format.compression}`).toStrictEqual(expected);
    expect(JSON.stringify(decoded)).toBe(JSON.stringify(expected));
  }
}

const GW = 'plant-a-gw1';
const SEQ0 = 3 * 2 ** 32 + 1;
const T0 = 1764000000000;

/** Every shape of reading the gateway puts in its outbox, and a few it never does. */
function everyShape(): string[] {
  const r = (i: number, f: Partial<Envelope> & Pick<Envelope, 'device' | 'point' | 'value'>): Envelope =>
    makeEnvelope({ id: `${GW}:${SEQ0 + i}`, quality: 'good', ts: T0 + i * 250, seq: SEQ0 + i, ...f });
  const readings = [
    r(0, { device: 'meter-1', point: 'power', value: 1520.5, unit: 'W' }),
    r(1, { device: 'meter-1', point: 'power', value: 1498.25, unit: 'W' }),
    r(2, { device: 'meter-1', point: 'current', value: 5.932837, unit: 'A' }),
    r(3, { device: 'meter-1', point: 'energy', value: 120014, unit: 'Wh' }),
    r(4, { device: 'meter-1', point: 'temp', value: -12.5, unit: 'degC' }),
    r(5, { device: 'meter-1', point: 'temp', value: -0.001, unit: 'degC' }),
    r(6, { device: 'meter-1', point: 'odd', value: 0.1 + 0.2 }),
    r(7, { device: 'meter-1', point: 'odd', value: 1e300 }),
    r(8, { device: 'meter-1', point: 'odd', value: 5e-324 }),
    r(9, { device: 'meter-1', point: 'odd', value: -Number.MAX_SAFE_INTEGER }),
    r(10, { device: 'meter-1', point: 'odd', value: 2 ** 60 }),
    r(11, { device: 'meter-1', point: 'odd', value: 0 }),
    r(12, { device: 'meter-1', point: 'odd', value: 123456.789012345 }),
    r(13, { device: 'meter-1', point: 'breaker', value: true }),
    r(14, { device: 'meter-1', point: 'breaker', value: false }),
    r(15, { device: 'meter-1', point: 'power', value: null, quality: 'bad', unit: 'W' }),
    r(16, { device: 'meter-1', point: 'power', value: 1520.5, quality: 'stale', unit: 'W' }),
    r(17, { device: 'meter-1', point: 'power', value: null, quality: 'stale', unit: 'W' }),
    r(18, { device: 'meter-1', point: 'mode', value: 'auto' }),
    r(19, { device: 'meter-1', point: 'mode', value: '' }),
    r(20, { device: 'meter-1', point: 'mode', value: 'Grüße, 水, 🚀' }),
    r(21, { device: 'pump-1', point: '$twin/reported', value: JSON.stringify({ speed: { value: 3, version: 7 }, note: 'x'.repeat(64 * 1024 - 40) }) }),
    r(22, { device: 'pump-1', point: '$inventory', value: '{"protocol":"mqtt","online":true}' }),
    // A child's readings: ids from its message id, several points per message, counting up.
    r(23, { id: 'pump-1:5f1c-41:flow', device: 'pump-1', point: 'flow', value: 11.793 }),
    r(24, { id: 'pump-1:5f1c-41:pressure', device: 'pump-1', point: 'pressure', value: 3.183 }),
    r(25, { id: 'pump-2:9a-7:flow', device: 'pump-2', point: 'flow', value: 10.5 }),
    r(26, { id: 'pump-1:5f1c-42:flow', device: 'pump-1', point: 'flow', value: 11.488 }),
    r(27, { id: 'pump-1:5f1c-40:flow', device: 'pump-1', point: 'flow', value: 11.4 }),
    r(28, { id: 'pump-1:5f1c-100:flow', device: 'pump-1', point: 'flow', value: 11.4 }),
    r(29, { id: 'pump-1:other:flow', device: 'pump-1', point: 'flow', value: 11.4 }),
    r(30, { id: 'pump-1:other:flow', device: 'pump-1', point: 'flow', value: 11.4 }),
    r(31, { id: 'pump-1:v007:flow', device: 'pump-1', point: 'flow', value: 11.4 }),
    r(32, { id: 'pump-1:v008:flow', device: 'pump-1', point: 'flow', value: 11.4 }),
    r(33, { id: 'pump-1::flow', device: 'pump-1', point: 'flow', value: 11.4 }),
    r(34, { id: 'pump-1:12:flow', device: 'pump-1', point: 'flow', value: 11.4 }),
    r(35, { id: 'pump-1:9:flow', device: 'pump-1', point: 'flow', value: 11.4 }),
    // A window output: a derived id, a rule, a ts at the window's end.
    r(36, { id: 'power-1min:meter-1:power:avg:1763999940000', device: 'meter-1', point: 'power.avg', value: 1498.2, rule: 'power-1min', unit: 'W', ts: T0 }),
    r(37, { id: 'power-1min:meter-1:power:max:1763999940000', device: 'meter-1', point: 'power.max', value: null, quality: 'bad', rule: 'power-1min' }),
    r(38, { device: 'meter-1', point: 'power.alert', value: 'warning: hot', rule: 'meter-hot' }),
    // Ids that only look like the gateway's: another gateway, a seq of another reading, leading zeros.
    r(39, { id: `other-gw:${SEQ0 + 39}`, device: 'meter-1', point: 'power', value: 1 }),
    r(40, { id: `${GW}:${SEQ0 + 41}`, device: 'meter-1', point: 'power', value: 1 }),
    r(41, { id: `${GW}:0${SEQ0 + 41}`, device: 'meter-1', point: 'power', value: 1 }),
    r(42, { id: GW, device: 'meter-1', point: 'power', value: 1 }),
    r(43, { id: `${GW}:`, device: 'meter-1', point: 'power', value: 1 }),
    // Time and sequence out of order, and far apart.
    r(44, { device: 'meter-1', point: 'power', value: 2, ts: T0 - 86_400_000, seq: SEQ0 - 5 }),
    r(45, { device: 'meter-1', point: 'power', value: 2, ts: 0, seq: 0 }),
    r(46, { device: 'meter-1', point: 'power', value: 2, ts: Number.MAX_SAFE_INTEGER, seq: Number.MAX_SAFE_INTEGER }),
    r(47, { device: 'meter-1', point: 'power', value: 2, ts: -Number.MAX_SAFE_INTEGER, seq: -Number.MAX_SAFE_INTEGER }),
    r(48, { device: 'meter-1', point: 'power', value: 2, ts: T0 + 0.5, seq: 1.5 }),
    // Names that would run together if a stream were named by joining them.
    r(52, { device: 'a\u0000b', point: 'c', value: 1 }),
    r(53, { device: 'a', point: 'b\u0000c', value: 2 }),
    r(54, { device: 'a', point: 'b', value: 3, unit: '-' }),
    r(55, { device: 'a', point: 'b', value: 4, rule: '-' }),
    r(56, { device: 'a', point: 'b', value: 5, unit: '1:x' }),
    r(57, { device: 'a', point: 'b1:x', value: 6 }),
    // Lone surrogates have no UTF-8 form; JSON text escapes them.
    r(49, { device: 'meter-1', point: 'mode', value: 'a\uD800b' }),
    r(50, { id: 'x\uDC00', device: 'meter-1', point: 'mode', value: 'a' }),
    r(51, { device: 'dev\uD800', point: 'mode', value: 'a' }),
  ];
  return [
    ...bodiesOf(readings),
    // Not what makeEnvelope writes, but the JSON batch carries it as it is: so must every kind.
    '{"device":"meter-1","id":"a","point":"p","value":1,"quality":"good","ts":1,"seq":1}',
    '{"id":"a","device":"meter-1","point":"p","value":1,"quality":"good","ts":1,"seq":1,"unit":"W","rule":"r"}',
    '{"id":"a","device":"meter-1","point":"p","value":1,"quality":"good","ts":1,"seq":1,"extra":true}',
    '{"id":"a","device":"meter-1","point":"p","value":-0,"quality":"good","ts":1,"seq":1}',
    '{"id":"a","device":"meter-1","point":"p","value":1e999,"quality":"good","ts":1,"seq":1}',
    '{"id":"a","device":"meter-1","point":"p","value":[1,2],"quality":"good","ts":1,"seq":1}',
    '{"id":7,"device":"meter-1","point":"p","value":1,"quality":"good","ts":1,"seq":1}',
    '{"id":"a","device":"meter-1","point":"p","value":1,"quality":"great","ts":1,"seq":1}',
    '{"id":"a","device":"meter-1","point":"p","value":1,"quality":"good","ts":1,"seq":1,"rule":null}',
    '{"id":"a","device":"meter-1","point":"p","value":1,"quality":"good","ts":1,"seq":"1"}',
    '{"__proto__":{"x":1},"id":"a"}',
    '"just text"',
    'null',
  ];
}

describe('uplink payload', () => {
  it('every kind decodes to the batch the JSON one carries, for every shape of reading', () => {
    expectRoundTrip(GW, T0 + 1000, rowsOf(everyShape()));
    // One at a time too: each shape as the first reading of a batch, and alone.
    for (const body of everyShape()) expectRoundTrip(GW, T0, rowsOf([body]));
  });

  it('an empty batch, a gateway id with quotes and non-ASCII, a sentAt of 0', () => {
    expectRoundTrip(GW, T0, []);
    const bodies = bodiesOf([makeEnvelope({ id: 'gw "ü":5', device: 'd', point: 'p', value: 1, quality: 'good', ts: 5, seq: 5 })]);
    expectRoundTrip('gw "ü"', 0, rowsOf(bodies));
  });

  it('a sentAt that is not a whole number of ms goes as JSON, still brotli', () => {
    const rows = rowsOf(bodiesOf([makeEnvelope({ id: 'a', device: 'd', point: 'p', value: 1, quality: 'good', ts: 5, seq: 5 })]));
    const payload = encodeBatch(GW, 1.5, rows, { encoding: 'columnar', compression: 'brotli' });
    expect(payload[0]).toBe(UPLINK_PAYLOAD_KIND.jsonBrotli);
    expect(decodeUplinkPayload(payload)).toStrictEqual(reference(GW, 1.5, rows));
  });

  it('carries ids of the form gateway:seq and the device:message:point ids of a child without their text', () => {
    const readings: Envelope[] = [];
    for (let i = 0; i < 20; i++) {
      readings.push(makeEnvelope({ id: `${GW}:${SEQ0 + 2 * i}`, device: 'meter-1', point: 'power', value: i, quality: 'good', ts: T0 + i, seq: SEQ0 + 2 * i }));
      readings.push(makeEnvelope({ id: `pump-1:5f1c-${100 + i}:flow`, device: 'pump-1', point: 'flow', value: i, quality: 'good', ts: T0 + i, seq: SEQ0 + 2 * i + 1 }));
    }
    const rows = rowsOf(bodiesOf(readings));
    const body = encodeColumnarBatch(GW, T0, rows)!.toString('latin1');
    expect(body).not.toContain(String(SEQ0));
    // The first message id of the child is in the string table; the next ones count up from it.
    expect(body).toContain('5f1c-100');
    expect(body).not.toContain('5f1c-101');
    expectRoundTrip(GW, T0, rows);
  });

  it('round-trips many random batches', () => {
    const random = mulberry32(19);
    for (let b = 0; b < 300; b++) {
      const rows = rowsOf(randomBatch(random));
      expectRoundTrip(pick(random, [GW, 'g', 'gw:1']), Math.floor(random() * 2 * T0), rows);
    }
  });

  it('refuses a truncated payload with an error that says so, at every length', () => {
    const rows = rowsOf(everyShape().slice(0, 40));
    for (const format of FORMATS.filter((f) => f.encoding === 'columnar')) {
      const payload = encodeBatch(GW, T0, rows, format);
      for (let n = 0; n < payload.length; n++) {
        // The 64 KiB record makes uncompressed payloads long: every byte of the columns, a sample of the rest.
        if (format.compression === 'none' && n > 2000 && n < payload.length - 2000 && n % 997 !== 0) continue;
        expect(() => decodeUplinkPayload(payload.subarray(0, n)), `${format.compression} cut at ${n}`).toThrow(UplinkPayloadError);
      }
    }
  });

  it('a corrupted payload either decodes to some batch or is refused with an UplinkPayloadError, never a crash', () => {
    const random = mulberry32(7);
    const rows = rowsOf(bodiesOf(randomReadings(random, 60)));
    let refused = 0;
    for (const format of FORMATS.filter((f) => f.encoding === 'columnar')) {
      const payload = encodeBatch(GW, T0, rows, format);
      for (let k = 0; k < 400; k++) {
        const bad = Buffer.from(payload);
        const flips = 1 + Math.floor(random() * 3);
        for (let f = 0; f < flips; f++) {
          const at = 1 + Math.floor(random() * (bad.length - 1));
          bad[at] = bad[at]! ^ (1 << Math.floor(random() * 8));
        }
        try {
          decodeUplinkPayload(bad);
        } catch (err) {
          expect(err).toBeInstanceOf(UplinkPayloadError);
          expect((err as Error).message).toMatch(/^(columnar uplink batch|uplink payload): /);
          refused++;
        }
      }
    }
    expect(refused).toBeGreaterThan(0);
  });

  it('names the part that is broken, and refuses kinds it does not know', () => {
    const body = encodeColumnarBatch(GW, T0, rowsOf(everyShape().slice(0, 3)))!;
    const cut = Buffer.concat([Buffer.of(UPLINK_PAYLOAD_KIND.columnar), body.subarray(0, body.length - 1)]);
    expect(() => decodeUplinkPayload(cut)).toThrow(/columnar uplink batch: truncated at byte \d+ of \d+ \(value column\)/);
    const longer = Buffer.concat([Buffer.of(UPLINK_PAYLOAD_KIND.columnar), body, Buffer.of(0)]);
    expect(() => decodeUplinkPayload(longer)).toThrow(/bytes after the last column/);
    expect(() => decodeUplinkPayload(Buffer.of(0x05, 1, 2))).toThrow('uplink payload: unknown kind 0x05');
    expect(() => decodeUplinkPayload(Buffer.of(UPLINK_PAYLOAD_KIND.columnarBrotli, 1, 2, 3))).toThrow(/the brotli stream is corrupt or truncated/);
    expect(() => decodeUplinkPayload(Buffer.alloc(0))).toThrow('uplink payload: empty');
  });

  it('what the consumers check: the decoded batch is the published contract', () => {
    const rows = rowsOf(bodiesOf(randomReadings(mulberry32(3), 50)));
    for (const format of FORMATS) {
      const batch = uplinkBatchSchema.parse(decodeUplinkPayload(encodeBatch(GW, T0, rows, format)));
      expect(batch.readings).toHaveLength(50);
    }
  });
});

/** A small seeded generator, so that a failure is repeatable. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)]!;
}

/** Readings as the contract allows them: a few streams, values of every type, ids of every form. */
function randomReadings(random: () => number, n: number): Envelope[] {
  const devices = ['meter-1', 'meter-2', 'pump-1', 'p', 'ü-7'];
  const points = ['power', 'flow', 'mode', '$twin/reported', 'power.avg', 'a:b'];
  const units = [undefined, undefined, 'W', 'degC', ''];
  const rules = [undefined, undefined, undefined, 'r1', 'power-1min'];
  const nonces = ['5f1c-', 'ab', 'x-0', ''];
  const out: Envelope[] = [];
  let seq = Math.floor(random() * 2 ** 40);
  let ts = T0 + Math.floor(random() * 1e6);
  const counters = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    seq += random() < 0.9 ? 1 : Math.floor((random() - 0.3) * 2 ** (random() * 50));
    if (!Number.isSafeInteger(seq)) seq = Math.floor(random() * 1000);
    ts += random() < 0.8 ? Math.floor(random() * 3) : Math.floor((random() - 0.3) * 2 ** (random() * 45));
    if (!Number.isSafeInteger(ts)) ts = T0;
    const device = pick(random, devices);
    const point = pick(random, points);
    const quality = pick(random, ['good', 'good', 'good', 'bad', 'stale'] as const);
    const value = quality === 'bad' ? null : randomValue(random);
    const c = (counters.get(device) ?? Math.floor(random() * 1000)) + (random() < 0.5 ? 0 : pick(random, [1, 1, 1, 2, -3, 1000]));
    counters.set(device, Math.max(0, c));
    const idForm = random();
    const id =
      idForm < 0.4 ? `${GW}:${seq}` : idForm < 0.8 ? `${device}:${pick(random, nonces)}${Math.max(0, c)}:${point}` : idForm < 0.9 ? `${pick(random, rules) ?? 'w'}:${device}:${point}:avg:${ts}` : `${device}:x:${point}x`;
    out.push(makeEnvelope({ id, device, point, value, quality, ts, seq, unit: pick(random, units), rule: pick(random, rules) }));
  }
  return out;
}

function randomValue(random: () => number): Envelope['value'] {
  const k = random();
  if (k < 0.35) return Math.round((random() - 0.5) * 10 ** Math.floor(random() * 8)) / 10 ** Math.floor(random() * 7);
  if (k < 0.45) return Math.floor((random() - 0.5) * 2 ** (random() * 60));
  if (k < 0.55) return (random() - 0.5) * 10 ** Math.floor((random() - 0.5) * 40);
  if (k < 0.65) return random() < 0.5;
  if (k < 0.7) return null;
  if (k < 0.85) return pick(random, ['on', 'off', '', '{"a":1}', 'ü', '🚀']);
  return JSON.stringify({ n: random(), s: 'x'.repeat(Math.floor(random() * 200)) });
}

function randomBatch(random: () => number): string[] {
  const n = Math.floor(random() * 120);
  const bodies = bodiesOf(randomReadings(random, n));
  // Now and then a reading the columns cannot carry, among the others.
  if (n > 0 && random() < 0.2) bodies.splice(Math.floor(random() * n), 0, '{"id":"a","device":"d","point":"p","value":1,"quality":"good","ts":1.25,"seq":1}');
  return bodies;
}
