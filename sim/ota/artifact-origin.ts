import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * The cloud's artifact origin for the sim and tests: serves byte buffers by path with HTTP Range
 * (single ranges, RFC 9110 §14), and can break transfers on purpose: the next `n` responses stop
 * after `afterBytes` bytes by destroying the socket, as a cellular link drop does.
 */
export class ArtifactOrigin {
  private readonly files = new Map<string, Buffer>();
  private server: Server | undefined;
  private cuts: { n: number; afterBytes: number; stall: boolean } | undefined;
  /** Bytes of artifact bodies sent, over every request (what the cloud link carried). */
  bytesSent = 0;
  readonly requests: Array<{ path: string; range: string | undefined; status: number }> = [];

  put(path: string, body: Buffer): string {
    this.files.set(path, body);
    return `${this.url}${path}`;
  }

  /** The next `n` responses are cut after `afterBytes` bytes of body. */
  breakNext(n: number, afterBytes: number): void {
    this.cuts = { n, afterBytes, stall: false };
  }

  /** The next `n` responses send `afterBytes` bytes of body, then nothing more (the link hangs). */
  stallNext(n: number, afterBytes: number): void {
    this.cuts = { n, afterBytes, stall: true };
  }

  get url(): string {
    const a = this.server?.address() as AddressInfo | null | undefined;
    if (!a) throw new Error('origin not started');
    return `http://127.0.0.1:${a.port}`;
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    return this;
  }

  async stop(): Promise<void> {
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0]!;
    const body = this.files.get(path);
    const range = req.headers.range;
    const log = (status: number): void => void this.requests.push({ path, range, status });
    if (!body) {
      log(404);
      res.writeHead(404).end();
      return;
    }
    let start = 0;
    let end = body.length - 1;
    let status = 200;
    const m = range ? /^bytes=(\d+)-(\d*)$/.exec(range) : null;
    if (m) {
      start = Number(m[1]);
      end = m[2] ? Math.min(Number(m[2]), body.length - 1) : body.length - 1;
      if (start >= body.length) {
        log(416);
        res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
        return;
      }
      status = 206;
    }
    const slice = body.subarray(start, end + 1);
    log(status);
    res.writeHead(status, {
      'content-length': slice.length,
      'accept-ranges': 'bytes',
      ...(status === 206 ? { 'content-range': `bytes ${start}-${end}/${body.length}` } : {}),
    });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    const cut = this.cuts && this.cuts.n > 0 ? this.cuts : undefined;
    if (cut) {
      cut.n--;
      const part = slice.subarray(0, Math.min(cut.afterBytes, slice.length));
      this.bytesSent += part.length;
      res.write(part, () => {
        if (!cut.stall) setTimeout(() => res.destroy(), 20);
      });
      return;
    }
    this.bytesSent += slice.length;
    res.end(slice);
  }
}
