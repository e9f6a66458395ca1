import { deflateRawSync, inflateRawSync } from 'node:zlib';

/**
 * The sim's delta format: the new image XOR the old one (zero where they agree), deflated, so a
 * delta is small when few blocks changed. Real sites use bsdiff, zchunk or casync; for the
 * simulation only the size matters and that the device can rebuild the image.
 */
export function makeDelta(from: Buffer, to: Buffer): Buffer {
  const x = Buffer.alloc(to.length);
  for (let i = 0; i < to.length; i++) x[i] = to[i]! ^ (from[i] ?? 0);
  return deflateRawSync(x, { level: 9 });
}

export function applyDelta(from: Buffer, delta: Buffer): Buffer {
  const x = inflateRawSync(delta);
  for (let i = 0; i < x.length; i++) x[i] = x[i]! ^ (from[i] ?? 0);
  return x;
}

/** A new version of `image`: `blocks` blocks of `blockSize` bytes at spread-out places rewritten. */
export function nextVersion(image: Buffer, blocks: number, blockSize: number, random: () => number): Buffer {
  const out = Buffer.from(image);
  for (let b = 0; b < blocks; b++) {
    const at = Math.floor(random() * Math.max(1, out.length - blockSize));
    for (let i = 0; i < blockSize; i++) out[at + i] = Math.floor(random() * 256);
  }
  return out;
}
