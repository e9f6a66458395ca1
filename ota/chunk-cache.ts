import { read } from 'node:fs';
import { promisify } from 'node:util';

const readAt = promisify(read);

/** Reads `length` bytes at `position` of an open file into a new buffer. */
export type ChunkReader = (fd: number, length: number, position: number) => Promise<Buffer>;

const fileReader: ChunkReader = async (fd, length, position) => {
  const buf = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await readAt(fd, buf, got, length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got === length ? buf : buf.subarray(0, got);
};

/**
 * Fixed-size chunks of immutable artifact files held in memory, least recently used dropped first,
 * so that devices of one rollout phase, which download the same artifact at about the same time,
 * share one read of each chunk instead of each reading (and allocating) it again. Concurrent misses
 * of one chunk share one read. Keys must name immutable content (the cache's digest paths do).
 * With `maxBytes` 0 nothing is kept, but concurrent reads of a chunk are still shared.
 */
export class ChunkCache {
  private readonly chunks = new Map<string, Buffer>();
  private readonly pending = new Map<string, Promise<Buffer>>();
  private held = 0;
  hits = 0;
  misses = 0;

  constructor(
    readonly maxBytes: number,
    readonly chunkBytes = 1024 * 1024,
    private readonly reader: ChunkReader = fileReader,
    private readonly observe: (hit: boolean) => void = () => undefined,
  ) {
    if (!Number.isInteger(chunkBytes) || chunkBytes < 4096) throw new Error(`chunk size ${chunkBytes}: at least 4096 bytes`);
  }

  /** Bytes held now. */
  get bytes(): number {
    return this.held;
  }

  /**
   * The bytes of `file` (open as `fd`, `size` bytes) from `position` to the end of the chunk that
   * holds it, at most `end - position + 1` bytes. Throws when the file is shorter than `size`.
   */
  async slice(file: string, fd: number, size: number, position: number, end: number): Promise<Buffer> {
    const index = Math.floor(position / this.chunkBytes);
    const chunk = await this.chunk(file, fd, size, index);
    const from = position - index * this.chunkBytes;
    const to = Math.min(chunk.length, end - index * this.chunkBytes + 1);
    return from === 0 && to === chunk.length ? chunk : chunk.subarray(from, to);
  }

  /** Drops every chunk (reads in flight finish for their callers and are then kept). */
  clear(): void {
    this.chunks.clear();
    this.held = 0;
  }

  /** Drops the chunks of a file (it was evicted or replaced). */
  forget(file: string): void {
    for (const [k, b] of this.chunks) {
      if (k.startsWith(`${file}\0`)) {
        this.chunks.delete(k);
        this.held -= b.length;
      }
    }
  }

  private async chunk(file: string, fd: number, size: number, index: number): Promise<Buffer> {
    const key = `${file}\0${index}`;
    const hit = this.chunks.get(key);
    if (hit) {
      this.hits++;
      this.observe(true);
      // Most recently used goes last.
      this.chunks.delete(key);
      this.chunks.set(key, hit);
      return hit;
    }
    const inFlight = this.pending.get(key);
    if (inFlight) {
      this.hits++;
      this.observe(true);
      return inFlight;
    }
    this.misses++;
    this.observe(false);
    const start = index * this.chunkBytes;
    const length = Math.min(this.chunkBytes, size - start);
    const p = this.reader(fd, length, start).then((buf) => {
      if (buf.length !== length) throw new Error(`${file} ended at byte ${start + buf.length}, expected ${size} bytes`);
      this.keep(key, buf);
      return buf;
    });
    this.pending.set(key, p);
    try {
      return await p;
    } finally {
      this.pending.delete(key);
    }
  }

  private keep(key: string, buf: Buffer): void {
    if (buf.length > this.maxBytes) return;
    this.chunks.set(key, buf);
    this.held += buf.length;
    for (const [k, b] of this.chunks) {
      if (this.held <= this.maxBytes) break;
      this.chunks.delete(k);
      this.held -= b.length;
    }
  }
}
