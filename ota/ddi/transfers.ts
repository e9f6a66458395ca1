import { closeSync, fstatSync, openSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Counter, Gauge, Logger } from '../../runtime/contracts/index.js';
import { errorMessage } from '../../runtime/contracts/index.js';
import { ChunkCache } from '../chunk-cache.js';

/**
 * A transfer whose device takes longer than this to read one chunk (1 MiB, i.e. below about
 * 3.5 kB/s) is closed, so that devices that stop reading cannot hold the transfer slots for ever.
 */
const STALL_MS = 300_000;

/** The chunk cache is emptied after this long without an artifact transfer. */
const CHUNK_IDLE_MS = 60_000;

/** An artifact file as the deployment source names it. */
export interface ArtifactFile {
  readonly path: string;
  readonly sha256: string;
  readonly size: number;
}

export interface TransferOptions {
  /** Artifact transfers at once; more wait in line (up to maxQueued), beyond that 503. */
  readonly maxTransfers: number;
  readonly maxQueued?: number | undefined;
  /** Artifact bytes kept in memory (1 MiB chunks, least recently used dropped); default 32 MiB, 0: none. */
  readonly chunkCacheBytes?: number | undefined;
  /** A transfer whose device takes longer than this to read one chunk is closed; default 5 min. */
  readonly stallMs?: number | undefined;
}

export interface TransferMetrics {
  readonly requests: (status: number) => void;
  readonly refused: Counter;
  readonly bytes: Counter;
  readonly active: Gauge;
  readonly chunkReads: Counter;
}

/**
 * Artifact bytes to devices: HTTP ranges (RFC 9110 §14: Range, suffix ranges, If-Range), ETag and
 * If-None-Match, HEAD; a bounded number of transfers at once with a bounded line behind them;
 * files opened once and shared by concurrent transfers; reads through a bounded chunk cache, so
 * that devices fetching the same artifact share its chunks in memory.
 */
export class ArtifactTransfers {
  private active = 0;
  private readonly waiting: Array<() => void> = [];
  /** Open artifact files, shared by concurrent transfers (positional reads), closed when unused. */
  private readonly files = new Map<string, { fd: number; users: number; modified: string }>();
  private readonly chunks: ChunkCache;
  /** Clears the chunk cache when no transfer ran for a while (the memory goes back). */
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly opts: TransferOptions,
    private readonly m: TransferMetrics,
    private readonly log: Logger,
  ) {
    this.chunks = new ChunkCache(opts.chunkCacheBytes ?? 32 * 1024 * 1024, 1024 * 1024, undefined, (hit) => m.chunkReads.inc({ result: hit ? 'hit' : 'miss' }));
  }

  /** Ends the idle timer and closes every file and cached chunk (the listener is closed). */
  close(): void {
    clearTimeout(this.idleTimer);
    this.chunks.clear();
    for (const f of this.files.values()) closeSync(f.fd);
    this.files.clear();
  }

  /** Answers a GET or HEAD of `art` (`device` for the logs); `sendError` answers in the listener's error shape. */
  serve(req: IncomingMessage, res: ServerResponse, art: ArtifactFile, name: string, device: string, sendError: (status: number, message: string) => void): void {
    const etag = `"${art.sha256}"`;
    const common = { etag, 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream', 'content-disposition': `attachment;filename=${name}` };
    const inm = req.headers['if-none-match'];
    if (inm !== undefined && inm.split(',').some((t) => t.trim() === etag || t.trim() === '*')) {
      this.m.requests(304);
      res.writeHead(304, { etag }).end();
      return;
    }
    let start = 0;
    let end = art.size - 1;
    let status = 200;
    const range = req.headers.range;
    // If-Range with another validator: the whole file (RFC 9110 §13.1.5).
    const ifRange = req.headers['if-range'];
    if (range !== undefined && (ifRange === undefined || ifRange === etag)) {
      const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
      const valid = m && (m[1] !== '' || m[2] !== '');
      if (valid) {
        if (m[1] === '') {
          start = Math.max(0, art.size - Number(m[2]));
        } else {
          start = Number(m[1]);
          if (m[2] !== '') end = Math.min(end, Number(m[2]));
        }
      }
      if (!valid || start > end || start >= art.size) {
        this.m.requests(416);
        res.writeHead(416, { 'content-range': `bytes */${art.size}`, etag }).end();
        return;
      }
      status = 206;
    }
    const headers = { ...common, 'content-length': end - start + 1, ...(status === 206 ? { 'content-range': `bytes ${start}-${end}/${art.size}` } : {}) };
    if (req.method === 'HEAD') {
      this.m.requests(status);
      res.writeHead(status, headers).end();
      return;
    }
    const go = (): void => {
      if (res.destroyed) {
        this.release();
        return;
      }
      this.m.requests(status);
      let file: { fd: number; modified: string };
      try {
        file = this.openFile(art.path);
      } catch (err) {
        this.release();
        this.log.error({ err: errorMessage(err), device }, 'artifact not readable');
        sendError(500, 'artifact not readable');
        return;
      }
      res.writeHead(status, { ...headers, 'last-modified': file.modified });
      void this.send(res, art.path, file.fd, art.size, start, end)
        .catch((err: unknown) => {
          this.log.error({ err: errorMessage(err), device }, 'artifact read failed');
          res.destroy();
        })
        .finally(() => {
          this.closeFile(art.path);
          this.release();
        });
    };
    const slot = this.acquire();
    if (slot === true) go();
    else if (slot === false) {
      this.m.refused.inc({ reason: 'busy' });
      res.setHeader('retry-after', '10');
      sendError(503, 'too many transfers; try again later');
    } else {
      void slot.then(go);
    }
  }

  private openFile(path: string): { fd: number; users: number; modified: string } {
    let f = this.files.get(path);
    if (!f) {
      const fd = openSync(path, 'r');
      f = { fd, users: 0, modified: new Date(fstatSync(fd).mtimeMs).toUTCString() };
      this.files.set(path, f);
    }
    f.users++;
    return f;
  }

  private closeFile(path: string): void {
    const f = this.files.get(path);
    if (f) f.users--;
    // Keep a few idle files open for the next ranges; close the rest.
    if (this.files.size <= 8) return;
    for (const [p, x] of this.files) {
      if (this.files.size <= 8) break;
      if (x.users > 0) continue;
      closeSync(x.fd);
      this.files.delete(p);
    }
  }

  /**
   * Bytes start..end of the open file to the response, a chunk at a time from the chunk cache
   * (concurrent transfers of one artifact share its chunks), waiting for the socket to drain
   * between chunks.
   */
  private async send(res: ServerResponse, path: string, fd: number, size: number, start: number, end: number): Promise<void> {
    let pos = start;
    while (pos <= end && !res.destroyed) {
      const buf = await this.chunks.slice(path, fd, size, pos, end);
      pos += buf.length;
      this.m.bytes.inc({}, buf.length);
      // The last chunk goes with the end of the response (one write fewer per range).
      if (pos > end) {
        res.end(buf);
        return;
      }
      if (!res.write(buf)) {
        await new Promise<void>((resolve) => {
          // A device that stops reading must not hold its transfer slot for ever.
          const stalled = setTimeout(() => {
            this.m.refused.inc({ reason: 'stalled' });
            this.log.warn({ url: res.req.url }, 'artifact transfer stalled: the device read less than 1 MiB in 5 minutes; closed');
            res.destroy();
          }, this.opts.stallMs ?? STALL_MS);
          const go = (): void => {
            clearTimeout(stalled);
            res.off('drain', go);
            res.off('close', go);
            resolve();
          };
          res.on('drain', go);
          res.on('close', go);
        });
      }
    }
    if (!res.destroyed) res.end();
  }

  /** Waits for a transfer slot; false when the line is full (the device is told to come back). */
  private acquire(): Promise<boolean> | boolean {
    if (this.active < this.opts.maxTransfers) {
      this.active++;
      this.m.active.set(this.active);
      return true;
    }
    if (this.waiting.length >= (this.opts.maxQueued ?? 1000)) return false;
    return new Promise((resolve) => this.waiting.push(() => resolve(true)));
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next) {
      next();
      return;
    }
    this.active--;
    this.m.active.set(this.active);
    if (this.active === 0 && (this.chunks.bytes > 0 || this.files.size > 0)) {
      clearTimeout(this.idleTimer);
      this.idleTimer = setTimeout(() => {
        if (this.active !== 0) return;
        this.chunks.clear();
        // Idle descriptors too: a blob evicted from the cache frees its disk space.
        for (const [p, f] of this.files) {
          if (f.users > 0) continue;
          closeSync(f.fd);
          this.files.delete(p);
        }
      }, CHUNK_IDLE_MS);
      this.idleTimer.unref();
    }
  }
}
