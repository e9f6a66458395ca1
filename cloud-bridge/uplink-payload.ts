import { deflateSync } from 'node:zlib';
import type { OutboxRow } from '../runtime/contracts/index.js';

/**
 * One uplink message (runtime/contracts/topics.ts, uplinkBatchSchema): the readings' JSON texts as
 * stored, joined without parsing them again, zlib-compressed (RFC 1950) when `deflate`.
 */
export function encodeBatch(gatewayId: string, sentAt: number, rows: readonly OutboxRow[], compression: 'deflate' | 'none'): Buffer {
  const json = `{"v":1,"gateway":${JSON.stringify(gatewayId)},"sentAt":${sentAt},"readings":[${rows.map((r) => r.body).join(',')}]}`;
  return compression === 'deflate' ? deflateSync(json) : Buffer.from(json);
}
