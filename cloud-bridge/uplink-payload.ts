import { deflateSync } from 'node:zlib';
import type { OutboxRow } from '../runtime/contracts/index.js';

/**
 * One uplink message: `{"v":1,"gateway","sentAt","readings":[...]}` (uplinkBatchSchema in
 * runtime/contracts/topics.ts, docs/topics.md), JSON or the same JSON deflated with the zlib header
 * (RFC 1950), which decodeUplinkPayload tells apart by its first byte. The rows hold their
 * envelopes as JSON text already: they are joined as they are, never parsed and encoded again.
 */
export function encodeBatch(gatewayId: string, sentAt: number, rows: readonly OutboxRow[], compression: 'deflate' | 'none'): Buffer {
  const json = `{"v":1,"gateway":${JSON.stringify(gatewayId)},"sentAt":${sentAt},"readings":[${rows.map((r) => r.body).join(',')}]}`;
  return compression === 'deflate' ? deflateSync(json) : Buffer.from(json);
}
