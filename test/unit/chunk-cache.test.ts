import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ChunkCache, type ChunkReader } from '../../ota/chunk-cache.js';

const CHUNK = 4096;

/** A reader over an in-memory file that counts its reads and can be held back. */
function memoryReader(file: Buffer): { reader: ChunkReader; reads: Array<[number, number]>; release: () => void; hold: () => void } {
  const reads: Array<[number, number]> = [];
  let gate: Promise<void> | undefined;
  let open: (() => void) | undefined;
  return {
    reads,
    hold: () => {
      gate = new Promise((r) => (open = r));
    },
    release: () => {
      open?.();
      gate = undefined;
    },
    reader: async (_fd, length, position) => {
      reads.push([position, length]);
      if (gate) await gate;
      return Buffer.from(file.subarray(position, position + length));
    },
  };
}

/** Bytes from..to through the cache, as a transfer reads them. */
async function transfer(cache: ChunkCache, name: string, size: number, from: number, to: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let pos = from; pos <= to; ) {
    const b = await cache.slice(name, 0, size, pos, to);
    expect(b.length).toBeGreaterThan(0);
    parts.push(b);
    pos += b.length;
  }
  return Buffer.concat(parts);
}

describe('chunk cache (update server)', () => {
  it('gives the exact bytes of any range, also unaligned and at the end of the file', async () => {
    const file = randomBytes(CHUNK * 5 + 123);
    const m = memoryReader(file);
    const cache = new ChunkCache(CHUNK * 16, CHUNK, m.reader);
    for (const [from, to] of [
      [0, file.length - 1],
      [1, 1],
      [CHUNK - 1, CHUNK],
      [CHUNK * 2 + 17, CHUNK * 4 + 5],
      [file.length - 10, file.length - 1],
      [CHUNK * 5, file.length - 1],
    ] as const) {
      expect((await transfer(cache, 'a', file.length, from, to)).equals(file.subarray(from, to + 1)), `${from}-${to}`).toBe(true);
    }
    // Each of the 6 chunks was read once.
    expect(m.reads.map(([p]) => p).sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 4, 5].map((i) => i * CHUNK));
  });

  it('shares one read of a chunk between concurrent transfers', async () => {
    const file = randomBytes(CHUNK * 3);
    const m = memoryReader(file);
    const cache = new ChunkCache(CHUNK * 16, CHUNK, m.reader);
    m.hold();
    const all = Array.from({ length: 50 }, () => transfer(cache, 'a', file.length, 0, file.length - 1));
    await new Promise((r) => setTimeout(r, 5));
    m.release();
    for (const b of await Promise.all(all)) expect(b.equals(file)).toBe(true);
    expect(m.reads).toHaveLength(3);
    expect(cache.misses).toBe(3);
    expect(cache.hits).toBe(147);
  });

  it('holds at most maxBytes, dropping the least recently used chunk', async () => {
    const file = randomBytes(CHUNK * 8);
    const m = memoryReader(file);
    const cache = new ChunkCache(CHUNK * 3, CHUNK, m.reader);
    await transfer(cache, 'a', file.length, 0, CHUNK * 3 - 1); // chunks 0 1 2
    await transfer(cache, 'a', file.length, 0, 0); // 0 used again: 1 is now the oldest
    await transfer(cache, 'a', file.length, CHUNK * 5, CHUNK * 5); // 5 in, 1 out
    expect(cache.bytes).toBe(CHUNK * 3);
    m.reads.length = 0;
    await transfer(cache, 'a', file.length, 0, 0);
    await transfer(cache, 'a', file.length, CHUNK * 2, CHUNK * 2);
    expect(m.reads).toEqual([]);
    await transfer(cache, 'a', file.length, CHUNK, CHUNK);
    expect(m.reads).toEqual([[CHUNK, CHUNK]]);
    expect(cache.bytes).toBe(CHUNK * 3);
  });

  it('with 0 bytes keeps nothing but still shares reads in flight', async () => {
    const file = randomBytes(CHUNK * 2);
    const m = memoryReader(file);
    const cache = new ChunkCache(0, CHUNK, m.reader);
    m.hold();
    const two = [transfer(cache, 'a', file.length, 0, file.length - 1), transfer(cache, 'a', file.length, 0, file.length - 1)];
    await new Promise((r) => setTimeout(r, 5));
    m.release();
    await Promise.all(two);
    expect(m.reads).toHaveLength(2);
    await transfer(cache, 'a', file.length, 0, 10);
    expect(m.reads).toHaveLength(3);
    expect(cache.bytes).toBe(0);
  });

  it('keeps files apart and forgets a file on request', async () => {
    const a = randomBytes(CHUNK * 2);
    const b = randomBytes(CHUNK * 2);
    const reads: string[] = [];
    const cache = new ChunkCache(CHUNK * 16, CHUNK, (fd, length, position) => {
      reads.push(`${fd}@${position}`);
      return Promise.resolve(Buffer.from((fd === 1 ? a : b).subarray(position, position + length)));
    });
    expect((await cache.slice('a', 1, a.length, 0, a.length - 1)).equals(a.subarray(0, CHUNK))).toBe(true);
    expect((await cache.slice('b', 2, b.length, 0, b.length - 1)).equals(b.subarray(0, CHUNK))).toBe(true);
    cache.forget('a');
    expect(cache.bytes).toBe(CHUNK);
    cache.clear();
    expect(cache.bytes).toBe(0);
    await cache.slice('b', 2, b.length, 0, 0);
    cache.forget('nothing');
    await cache.slice('a', 1, a.length, 0, 0);
    await cache.slice('b', 2, b.length, 0, 0);
    expect(reads).toEqual(['1@0', '2@0', '2@0', '1@0']);
  });

  it('refuses a file shorter than its size, and caches nothing of it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-chunks-'));
    const path = join(dir, 'short');
    writeFileSync(path, randomBytes(CHUNK + 100));
    const fd = openSync(path, 'r');
    try {
      const cache = new ChunkCache(CHUNK * 16, CHUNK);
      expect((await cache.slice(path, fd, CHUNK + 100, 0, CHUNK + 99)).length).toBe(CHUNK);
      await expect(cache.slice(path, fd, CHUNK * 2, CHUNK, CHUNK * 2 - 1)).rejects.toThrow(/ended at byte 4196, expected 8192 bytes/);
      expect(cache.bytes).toBe(CHUNK);
    } finally {
      closeSync(fd);
    }
  });
});
