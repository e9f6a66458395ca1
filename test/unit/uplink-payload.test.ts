import { describe, expect, it } from 'vitest';
import { encodeBatch } from '../../cloud-bridge/uplink-payload.js';
import { makeEnvelope, type OutboxRow } from '../../runtime/contracts/index.js';
import { decodeUplinkPayload, uplinkBatchSchema } from '../../runtime/contracts/topics.js';

const rows: OutboxRow[] = [1, 2, 3].map((i) => {
  const body = JSON.stringify(makeEnvelope({ id: `r${i}`, device: 'pump-1', point: 'flow', value: i * 1.5, quality: 'good', ts: 1000 + i, seq: i, unit: 'm3/h' }));
  return { rowid: i, stream: 'telemetry', body, bytes: body.length, createdAt: 0 };
});

describe('uplink payload', () => {
  it('is the published batch format, with the readings as they were stored', () => {
    const payload = encodeBatch('gw "1"', 1234, rows, 'none');
    expect(payload[0]).toBe(0x7b);
    const batch = uplinkBatchSchema.parse(decodeUplinkPayload(payload));
    expect(batch).toEqual({ v: 1, gateway: 'gw "1"', sentAt: 1234, readings: rows.map((r) => JSON.parse(r.body) as unknown) });
  });

  it('deflated (zlib header) decodes to the same batch, smaller', () => {
    const many = Array.from({ length: 50 }, (_, i) => ({ ...rows[i % 3]!, rowid: i + 1 }));
    const plain = encodeBatch('gw-1', 1, many, 'none');
    const deflated = encodeBatch('gw-1', 1, many, 'deflate');
    expect(deflated[0]).toBe(0x78);
    expect(deflated.length).toBeLessThan(plain.length);
    expect(decodeUplinkPayload(deflated)).toEqual(decodeUplinkPayload(plain));
  });
});
