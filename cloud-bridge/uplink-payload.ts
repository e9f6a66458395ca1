import { brotliCompressSync, constants, deflateRawSync, deflateSync } from 'node:zlib';
import { UPLINK_PAYLOAD_KIND, type OutboxRow } from '../runtime/contracts/index.js';
import { encodeColumnarBatch } from './columnar-encoder.js';

export type UplinkEncoding = 'columnar' | 'json';
export type UplinkCompression = 'brotli' | 'deflate' | 'none';
export interface UplinkFormat {
  readonly encoding: UplinkEncoding;
  readonly compression: UplinkCompression;
}

/**
 * Brotli quality 5, window 256 KiB. On the demo site's columnar batches (docs/benchmarks.md,
 * uplink-bytes) quality 4 and below give 13 % more bytes or worse; 6, 7 and 9 none fewer; 11 about
 * 3 % fewer for some 10 times the CPU, too much for a 2-core gateway draining a backlog. A batch
 * of the default 500 readings is tens of KiB as columns: a larger window would cost memory only.
 */
const BROTLI = {
  params: {
    [constants.BROTLI_PARAM_QUALITY]: 5,
    [constants.BROTLI_PARAM_LGWIN]: 18,
  },
};

function framed(kind: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(body.length + 1);
  out[0] = kind;
  body.copy(out, 1);
  return out;
}

/**
 * One uplink message (docs/topics.md, "telemetry"), of a kind its first byte names
 * (UPLINK_PAYLOAD_KIND, runtime/contracts/uplink-payload.ts, which decodes them all):
 * - `json`: `{"v":1,"gateway","sentAt","readings":[...]}`. The rows hold their envelopes as JSON
 *   text already: they are joined as they are, never parsed and encoded again. Deflated with the
 *   zlib header (RFC 1950), as before there were other kinds, or brotli behind a kind byte.
 * - `columnar` (runtime/contracts/columnar-batch.ts): the same batch in columns, behind a kind
 *   byte. A batch the columns cannot carry (see encodeColumnarBatch) goes as JSON.
 */
export function encodeBatch(gatewayId: string, sentAt: number, rows: readonly OutboxRow[], format: UplinkFormat): Buffer {
  const columnar = format.encoding === 'columnar' ? encodeColumnarBatch(gatewayId, sentAt, rows) : undefined;
  if (columnar) {
    if (format.compression === 'brotli') return framed(UPLINK_PAYLOAD_KIND.columnarBrotli, brotliCompressSync(columnar, BROTLI));
    if (format.compression === 'deflate') return framed(UPLINK_PAYLOAD_KIND.columnarDeflate, deflateRawSync(columnar));
    return framed(UPLINK_PAYLOAD_KIND.columnar, columnar);
  }
  const json = `{"v":1,"gateway":${JSON.stringify(gatewayId)},"sentAt":${sentAt},"readings":[${rows.map((r) => r.body).join(',')}]}`;
  if (format.compression === 'brotli') return framed(UPLINK_PAYLOAD_KIND.jsonBrotli, brotliCompressSync(json, BROTLI));
  return format.compression === 'deflate' ? deflateSync(json) : Buffer.from(json);
}
