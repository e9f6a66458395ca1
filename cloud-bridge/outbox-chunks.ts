/**
 * How the outbox stores readings: chunks of up to CHUNK_ROWS consecutive readings of one stream,
 * one SQLite row each, as the JSON array text of their envelopes. One insert per chunk instead of
 * per reading is what makes the durable append cheap.
 */

/** Readings per chunk row at most, and bytes per chunk row at most (a single larger reading gets its own). */
export const CHUNK_ROWS = 64;
export const CHUNK_BYTES = 64 * 1024;

/**
 * The elements of a chunk's JSON array text, as text. Chunks are written by JSON.stringify, so
 * the only commas at depth 0 outside strings separate elements; strings are skipped with indexOf.
 */
export function splitChunk(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 1;
  const end = text.length - 1;
  for (let i = 1; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // To the closing quote: one not preceded by an odd number of backslashes.
      for (;;) {
        i = text.indexOf('"', i + 1);
        if (i < 0) throw new Error('outbox chunk is not valid JSON: unterminated string');
        let k = i - 1;
        while (text.charCodeAt(k) === 0x5c) k--;
        if ((i - 1 - k) % 2 === 0) break;
      }
    } else if (c === 0x7b || c === 0x5b) depth++;
    else if (c === 0x7d || c === 0x5d) depth--;
    else if (c === 0x2c && depth === 0) {
      out.push(text.slice(start, i));
      start = i + 1;
    }
  }
  if (end > start || out.length > 0) out.push(text.slice(start, end));
  return out;
}

/** Bytes of the readings in a chunk's text: without the brackets and the commas between them. */
export const readingBytes = (text: string, rows: number): number => Buffer.byteLength(text) - rows - 1;
