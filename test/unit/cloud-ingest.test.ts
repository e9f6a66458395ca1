import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { encodeBatch } from '../../cloud-bridge/uplink-payload.js';
import { figuresLine } from '../../runtime/cloud-ingest/cli.js';
import { connectionHint } from '../../runtime/cloud-ingest/consumer.js';
import { decodeBatch, telemetryGateway } from '../../runtime/cloud-ingest/decode.js';
import { IngestOptionsError, resolveIngestOptions } from '../../runtime/cloud-ingest/options.js';

const reading = (id: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  id,
  device: 'meter-1',
  point: 'power',
  value: 1.5,
  quality: 'good',
  ts: 1764000000000,
  seq: 17179869185,
  ...extra,
});
const batch = (readings: unknown[], gateway = 'gw-1'): Buffer => Buffer.from(JSON.stringify({ v: 1, gateway, sentAt: 1764000000123, readings }));

describe('cloud-ingest decoding', () => {
  it('takes the batches the gateway encodes, in every encoding and compression, and keeps every field the table stores', () => {
    const body = JSON.stringify(reading('gw-1:1', { unit: 'kW' }));
    const rule = JSON.stringify(reading('w:meter-1:power:avg:1', { point: 'power.avg', rule: 'w', value: null, quality: 'bad' }));
    const formats = [
      { encoding: 'columnar', compression: 'brotli', kind: 0x03 },
      { encoding: 'columnar', compression: 'deflate', kind: 0x02 },
      { encoding: 'columnar', compression: 'none', kind: 0x01 },
      { encoding: 'json', compression: 'brotli', kind: 0x04 },
      { encoding: 'json', compression: 'deflate', kind: 0x78 },
      { encoding: 'json', compression: 'none', kind: 0x7b },
    ] as const;
    for (const format of formats) {
      const payload = encodeBatch('gw-1', 1, [{ body } as never, { body: rule } as never], format);
      expect(payload[0]).toBe(format.kind);
      const d = decodeBatch('gw-1', payload);
      expect(d).toEqual({
        ok: true,
        gateway: 'gw-1',
        records: 0,
        readings: [
          { id: 'gw-1:1', device: 'meter-1', point: 'power', value: 1.5, quality: 'good', ts: 1764000000000, seq: 17179869185, rule: undefined, unit: 'kW' },
          { id: 'w:meter-1:power:avg:1', device: 'meter-1', point: 'power.avg', value: null, quality: 'bad', ts: 1764000000000, seq: 17179869185, rule: 'w', unit: undefined },
        ],
      });
    }
  });

  it("skips the gateway's own $ records and counts them", () => {
    const d = decodeBatch('gw-1', batch([reading('a'), reading('b', { point: '$twin/reported', value: '{"x":1}' })]));
    expect(d.ok && d.readings.map((r) => r.id)).toEqual(['a']);
    expect(d.ok && d.records).toBe(1);
  });

  it('refuses what is not an uplink payload, naming why', () => {
    for (const payload of [Buffer.from('not json'), Buffer.from([0x78, 0x9c, 1, 2, 3]), Buffer.alloc(0), Buffer.from([0x03, 1, 2, 3]), Buffer.from([0x01, 5]), Buffer.from([0x1f])]) {
      const d = decodeBatch('gw-1', payload);
      expect(d.ok).toBe(false);
      expect(!d.ok && d.reason).toBe('not-decodable');
    }
  });

  it('refuses a batch that breaks the schema, naming the path of each problem', () => {
    const d = decodeBatch('gw-1', batch([reading('a'), reading('b', { quality: 'great' })]));
    expect(d).toMatchObject({ ok: false, reason: 'schema' });
    expect(!d.ok && d.detail).toContain('readings.1.quality');
    const v2 = decodeBatch('gw-1', Buffer.from(deflateSync(JSON.stringify({ v: 2, gateway: 'gw-1', sentAt: 1, readings: [] }))));
    expect(!v2.ok && v2.detail).toContain('v:');
  });

  it('refuses readings the table cannot hold (a fractional seq, a ts outside timestamptz) by name', () => {
    const d = decodeBatch('gw-1', batch([reading('a', { seq: 1.5 })]));
    expect(!d.ok && d.detail).toContain('readings.0.seq');
    const t = decodeBatch('gw-1', batch([reading('a', { ts: 1e20 })]));
    expect(!t.ok && t.detail).toContain('readings.0.ts');
  });

  it('refuses a batch whose gateway is not the one its topic names', () => {
    const d = decodeBatch('gw-2', batch([reading('a')], 'gw-1'));
    expect(d).toMatchObject({ ok: false, reason: 'gateway-mismatch' });
  });

  it('finds the gateway id in telemetry topics only', () => {
    expect(telemetryGateway('outpost', 'outpost/v1/gw/plant-a/telemetry')).toBe('plant-a');
    expect(telemetryGateway('acme/site', 'acme/site/v1/gw/g1/telemetry')).toBe('g1');
    expect(telemetryGateway('outpost', 'outpost/v1/gw/plant-a/status')).toBeUndefined();
    expect(telemetryGateway('outpost', 'outpost/v1/gw/a/b/telemetry')).toBeUndefined();
    expect(telemetryGateway('outpost', 'outpost/v1/gw//telemetry')).toBeUndefined();
  });
});

describe('cloud-ingest options', () => {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-ingest-opts-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const db = 'postgres://u:secret@db/x';

  it('takes flags first, then the environment, and fills the defaults', () => {
    const o = resolveIngestOptions({ broker: ['mqtt://a:1883', 'mqtt://b:1883'], database: db }, { OUTPOST_INGEST_SHARE_GROUP: 'g', OUTPOST_INGEST_CONCURRENCY: '3' });
    expect(o).toMatchObject({ brokers: ['mqtt://a:1883', 'mqtt://b:1883'], database: db, shareGroup: 'g', concurrency: 3, prefix: 'outpost', table: 'outpost_readings', statsEverySeconds: 10 });
    expect(o.clientId).toMatch(/^outpost-ingest-/);
    const e = resolveIngestOptions({}, { OUTPOST_INGEST_BROKERS: 'mqtt://x:1, mqtts://y:8883', DATABASE_URL: db, OUTPOST_INGEST_PASSWORD: 'pw' });
    expect(e.brokers).toEqual(['mqtt://x:1', 'mqtts://y:8883']);
    expect(e.password).toBe('pw');
  });

  it('reads the password and the CA from files', () => {
    writeFileSync(join(dir, 'pw'), 'from-file\n');
    writeFileSync(join(dir, 'ca.pem'), '-----BEGIN CERTIFICATE-----\n');
    const o = resolveIngestOptions({ broker: ['mqtts://a:8883'], database: db, 'password-file': join(dir, 'pw'), ca: join(dir, 'ca.pem') }, {});
    expect(o.password).toBe('from-file');
    expect(o.caText).toContain('BEGIN CERTIFICATE');
  });

  it('names every problem by its flag, and never echoes a database password', () => {
    let err: unknown;
    try {
      resolveIngestOptions({ broker: ['http://a'], database: 'mysql://u:secret@h/d', concurrency: '2', table: 'Bad-Name', 'password-file': join(dir, 'missing') }, {});
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(IngestOptionsError);
    const problems = (err as IngestOptionsError).problems.join('\n');
    expect(problems).toContain('--password-file: cannot read');
    expect(problems).toContain('--broker[0]: expected an mqtt://');
    expect(problems).toContain('--database: expected a postgres://');
    expect(problems).toContain('--concurrency: above 1 needs --share-group');
    expect(problems).toContain('--table: lower-case letters');
    expect(problems).not.toContain('secret');
  });

  it('asks for a broker and a database when neither is given', () => {
    expect(() => resolveIngestOptions({}, {})).toThrow(/--broker: give at least one broker[\s\S]*--database: give the database/);
  });
});

describe('cloud-ingest figures and hints', () => {
  const f = { batches: 30, readings: 300, rows: 290, records: 2, refused: { topic: 0, 'not-decodable': 1, schema: 2, 'gateway-mismatch': 0, database: 0 }, retries: 4, connected: 2, connects: 3, brokers: ['mqtt://a:1883', 'mqtt://a:1883'] };

  it('prints totals, rates since the line before and refusals by reason', () => {
    const prev = { ...f, batches: 10, readings: 100 };
    expect(figuresLine(f, prev, 10, false)).toBe(
      'cloud-ingest: 30 batches (2/s), 300 readings (20/s), 290 new rows, 10 duplicates, 3 refused (not-decodable 1, schema 2), 4 database retries, 2 sessions connected (mqtt://a:1883)',
    );
    expect(JSON.parse(figuresLine(f, undefined, 10, true, true))).toMatchObject({ final: true, rows: 290, duplicates: 10, batchesPerS: 3, readingsPerS: 30 });
  });

  it('tells the operator what to do about a refused connection', () => {
    expect(connectionHint(Object.assign(new Error('Connection refused: Not authorized'), { code: 5 }))).toContain('--password-file');
    expect(connectionHint(Object.assign(new Error('self-signed certificate in certificate chain'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' }))).toContain('--ca');
    expect(connectionHint(Object.assign(new Error('Identifier rejected'), { code: 2 }))).toContain('--client-id');
    expect(connectionHint(new Error('connect ECONNREFUSED'))).toBe('broker connection error');
  });
});
