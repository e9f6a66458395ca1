import { z } from 'zod';
import { decodeUplinkPayload, envelopeSchema, errorMessage, uplinkBatchSchema } from '../contracts/index.js';

/** Why a payload was refused: counted per reason in the consumer's figures. */
export type RefusalReason = 'topic' | 'not-decodable' | 'schema' | 'gateway-mismatch' | 'database';

/** One reading as the table stores it (docs/operations.md, "Cloud consumer"). */
export interface IngestReading {
  readonly id: string;
  readonly device: string;
  readonly point: string;
  readonly value: number | boolean | string | null;
  readonly quality: 'good' | 'bad' | 'stale';
  readonly ts: number;
  readonly seq: number;
  readonly rule: string | undefined;
  readonly unit: string | undefined;
}

export type Decoded =
  | { readonly ok: true; readonly gateway: string; readonly readings: readonly IngestReading[]; readonly records: number }
  | { readonly ok: false; readonly reason: RefusalReason; readonly detail: string };

/**
 * The uplink batch (the published contract, runtime/contracts/topics.ts), with what the table
 * needs on top of it: `ts` and `seq` are integers a PostgreSQL `timestamptz` and `bigint` can hold.
 * A batch the contract accepts but the table could not take is refused here, by name, rather than
 * failing in the database where it would be retried for ever.
 */
const MAX_TS = Date.UTC(9999, 11, 31);
const storableBatchSchema = uplinkBatchSchema.extend({
  readings: z.array(
    envelopeSchema.extend({
      ts: z.number().int().min(0).max(MAX_TS),
      seq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
    }),
  ),
});

/** `{prefix}/v1/gw/{gatewayId}/telemetry` → the gateway id, else undefined. */
export function telemetryGateway(prefix: string, topic: string): string | undefined {
  const head = `${prefix}/v1/gw/`;
  if (!topic.startsWith(head) || !topic.endsWith('/telemetry')) return undefined;
  const id = topic.slice(head.length, -'/telemetry'.length);
  return id === '' || id.includes('/') ? undefined : id;
}

/**
 * Decodes one uplink message (any kind of decodeUplinkPayload: its first byte tells them apart) into
 * the readings to store. The gateway's own records (points starting with `$`: twins, inventory,
 * call answers; docs/topics.md) are not readings: they are counted and skipped. A batch whose
 * `gateway` is not the one its topic names is refused: a gateway may only speak for itself.
 */
export function decodeBatch(topicGateway: string, payload: Buffer): Decoded {
  let json: unknown;
  try {
    json = decodeUplinkPayload(payload);
  } catch (err) {
    return { ok: false, reason: 'not-decodable', detail: `not an uplink payload (JSON, columnar; plain, deflate or brotli): ${errorMessage(err)}` };
  }
  const parsed = storableBatchSchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.slice(0, 5).map((i) => `${i.path.length > 0 ? i.path.join('.') : '(batch)'}: ${i.message}`);
    const more = parsed.error.issues.length > 5 ? ` (and ${parsed.error.issues.length - 5} more)` : '';
    return { ok: false, reason: 'schema', detail: `${issues.join('; ')}${more}` };
  }
  const batch = parsed.data;
  if (batch.gateway !== topicGateway) {
    return { ok: false, reason: 'gateway-mismatch', detail: `batch from "${batch.gateway}" on the topic of gateway "${topicGateway}"` };
  }
  const readings: IngestReading[] = [];
  let records = 0;
  for (const r of batch.readings) {
    if (r.point.startsWith('$')) {
      records++;
      continue;
    }
    readings.push({ id: r.id, device: r.device, point: r.point, value: r.value, quality: r.quality, ts: r.ts, seq: r.seq, rule: r.rule, unit: r.unit });
  }
  return { ok: true, gateway: batch.gateway, readings, records };
}
