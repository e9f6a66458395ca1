import { brotliDecompressSync, inflateRawSync, inflateSync } from 'node:zlib';
import { decodeColumnarBatch, UplinkPayloadError } from './columnar-batch.js';

export { UplinkPayloadError };

/**
 * What an uplink payload is, told by its first byte (docs/topics.md, "Payload encoding"), so that a
 * consumer decodes every gateway's batches without knowing how each was configured:
 *
 * | first byte | payload |
 * |---|---|
 * | `{` (0x7b) | the batch as JSON text (`cloud.encoding: json`, `cloud.compression: none`) |
 * | 0x78 | the JSON text compressed with zlib, RFC 1950 (`json`, `deflate`) |
 * | 0x01 | a columnar batch, not compressed (`columnar`, `none`) |
 * | 0x02 | a columnar batch compressed with raw deflate, RFC 1951 (`columnar`, `deflate`) |
 * | 0x03 | a columnar batch compressed with brotli, RFC 7932 (`columnar`, `brotli`) |
 * | 0x04 | the JSON text compressed with brotli (`json`, `brotli`) |
 *
 * The bytes after a first byte of 0x01 to 0x04 are the body; a zlib stream keeps its own first byte.
 * The other bytes below 0x20 but JSON whitespace are kept for kinds to come, and refused.
 */
export const UPLINK_PAYLOAD_KIND = {
  json: 0x7b,
  jsonZlib: 0x78,
  columnar: 0x01,
  columnarDeflate: 0x02,
  columnarBrotli: 0x03,
  jsonBrotli: 0x04,
} as const;

/** Tab, line feed, carriage return: JSON text may start with them (RFC 8259, section 2). */
const JSON_WHITESPACE = new Set([0x09, 0x0a, 0x0d]);

/** Decompressed bodies above this are refused (a batch of 10,000 readings of 64 KiB records is less). */
const MAX_BODY = 64 * 1024 * 1024;

function inflate(what: string, fn: () => Buffer): Buffer {
  try {
    return fn();
  } catch (err) {
    throw new UplinkPayloadError(`uplink payload: the ${what} stream is corrupt or truncated`, { cause: err });
  }
}

/**
 * Decodes an uplink payload of any kind (UPLINK_PAYLOAD_KIND) into the batch it carries,
 * `{v:1, gateway, sentAt, readings}`, to be checked against uplinkBatchSchema. Every kind gives the
 * same object for the same readings. Throws UplinkPayloadError, or JSON's SyntaxError for JSON
 * text that does not parse.
 */
export function decodeUplinkPayload(payload: Buffer): unknown {
  if (payload.length === 0) throw new UplinkPayloadError('uplink payload: empty');
  const body = payload.subarray(1);
  switch (payload[0]) {
    case UPLINK_PAYLOAD_KIND.jsonZlib:
      return JSON.parse(inflate('zlib', () => inflateSync(payload, { maxOutputLength: MAX_BODY })).toString('utf8'));
    case UPLINK_PAYLOAD_KIND.jsonBrotli:
      return JSON.parse(inflate('brotli', () => brotliDecompressSync(body, { maxOutputLength: MAX_BODY })).toString('utf8'));
    case UPLINK_PAYLOAD_KIND.columnar:
      return decodeColumnarBatch(body);
    case UPLINK_PAYLOAD_KIND.columnarDeflate:
      return decodeColumnarBatch(inflate('deflate', () => inflateRawSync(body, { maxOutputLength: MAX_BODY })));
    case UPLINK_PAYLOAD_KIND.columnarBrotli:
      return decodeColumnarBatch(inflate('brotli', () => brotliDecompressSync(body, { maxOutputLength: MAX_BODY })));
    default:
      // Control bytes other than JSON whitespace are kept for kinds to come.
      if (payload[0]! < 0x20 && !JSON_WHITESPACE.has(payload[0]!)) throw new UplinkPayloadError(`uplink payload: unknown kind 0x${payload[0]!.toString(16).padStart(2, '0')}`);
      // JSON text: `{`, or (from other producers) JSON whitespace before it.
      return JSON.parse(payload.toString('utf8'));
  }
}
