import { closeSync, fstatSync, openSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import type { Counter, Gauge, Logger, Metrics } from '../contracts/index.js';
import { listenOn } from '../listen.js';
import { ChunkCache } from './chunk-cache.js';

/**
 * The gateway's update server for child devices, speaking the Eclipse hawkBit Direct Device
 * Integration (DDI) API v1, so that existing update agents (SWUpdate's suricatta, RAUC's
 * rauc-hawkbit-updater, hawkBit clients) work against the gateway unchanged. Served resources
 * (docs/ota.md), under `/{tenant}/controller/v1/{controllerId}`:
 *
 *   GET  ""                                   poll: polling interval and links to open work
 *   GET  deploymentBase/{actionId}            the deployment: chunk, artifact, hashes, links
 *   POST deploymentBase/{actionId}/feedback   progress and outcome
 *   GET  cancelAction/{actionId}              a cancellation of an aborted rollout's action
 *   POST cancelAction/{actionId}/feedback     its confirmation
 *   PUT  configData                           device attributes (the installed version)
 *   GET|HEAD softwaremodules/{id}/artifacts/{file}[.MD5SUM]   artifact bytes (Range, ETag)
 *
 * What is offered to whom is the rollout engine's business (DeploymentSource).
 */

/** One artifact as a device may download it. */
export interface OfferedArtifact {
  readonly moduleId: number;
  readonly filename: string;
  readonly size: number;
  readonly sha256: string;
  readonly sha1: string;
  readonly md5: string;
}

export interface DdiOffer {
  readonly actionId: number;
  readonly name: string;
  readonly version: string;
  readonly artifact: OfferedArtifact;
  /** Outside the maintenance window: the device may download, not install. */
  readonly maintenanceWindow?: 'available' | 'unavailable' | undefined;
}

export const feedbackSchema = z.object({
  id: z.union([z.string().max(32), z.number()]).optional(),
  time: z.string().max(64).optional(),
  timestamp: z.number().optional(),
  status: z.object({
    execution: z.enum(['closed', 'proceeding', 'canceled', 'scheduled', 'rejected', 'resumed', 'downloaded', 'download']),
    result: z.object({
      finished: z.enum(['success', 'failure', 'none']),
      progress: z.object({ cnt: z.number().int().min(0), of: z.number().int().min(0) }).partial().optional(),
    }),
    code: z.number().int().optional(),
    details: z.array(z.string().max(4096)).max(200).optional(),
  }),
});
export type DdiFeedback = z.output<typeof feedbackSchema>;

const configDataSchema = z.object({
  mode: z.enum(['merge', 'replace', 'remove']).optional(),
  data: z.record(z.string().max(128), z.string().max(1024)).refine((d) => Object.keys(d).length <= 100, 'at most 100 attributes'),
});

/** What the rollout engine tells the update server. */
export interface DeploymentSource {
  /** The action the device should work on now, if any (full image or a delta for its version). */
  offer(device: string): DdiOffer | undefined;
  /** An action of the device that is to be cancelled (its rollout was aborted). */
  cancellation(device: string): number | undefined;
  /** Feedback for an action; false when the device has no such action. */
  feedback(device: string, actionId: number, fb: DdiFeedback): boolean;
  cancelFeedback(device: string, actionId: number, fb: DdiFeedback): boolean;
  configData(device: string, data: Readonly<Record<string, string>>): void;
  /** Where the bytes of an artifact offered to this device are, or undefined (not offered to it). */
  artifact(device: string, moduleId: number, filename: string): { path: string; sha256: string; md5: string; size: number } | undefined;
}

export interface DdiServerOptions {
  readonly tenant: string;
  /** Poll interval suggested to devices. */
  readonly pollSeconds: number;
  /** `GatewayToken` accepted for every device; unset with no target tokens: no authentication. */
  readonly gatewayToken?: string | undefined;
  /** Per-device `TargetToken`s. */
  readonly targetTokens?: Readonly<Record<string, string>> | undefined;
  /** Artifact transfers at once; more wait in line (up to maxQueued), beyond that 503. */
  readonly maxTransfers: number;
  readonly maxQueued?: number | undefined;
  /** Base URL devices use to reach this server (links in responses); default: the request's Host. */
  readonly publicUrl?: string | undefined;
  /** Artifact bytes kept in memory (1 MiB chunks, least recently used dropped); default 32 MiB, 0: none. */
  readonly chunkCacheBytes?: number | undefined;
  /** A transfer whose device takes longer than this to read one chunk is closed; default 5 min. */
  readonly stallMs?: number | undefined;
}

/**
 * A transfer whose device takes longer than this to read one chunk (1 MiB, i.e. below about
 * 3.5 kB/s) is closed, so that devices that stop reading cannot hold the transfer slots for ever.
 */
const STALL_MS = 300_000;

/** The chunk cache is emptied after this long without an artifact transfer. */
const CHUNK_IDLE_MS = 60_000;

const ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

function hhmmss(seconds: number): string {
  const s = Math.max(1, Math.min(86_399, Math.round(seconds)));
  return [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60].map((n) => String(n).padStart(2, '0')).join(':');
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/hal+json;charset=UTF-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

function problem(res: ServerResponse, status: number, message: string): void {
  json(res, status, { errorCode: `outpost.ddi.${status}`, message });
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export class DdiServer {
  private server: Server | undefined;
  private active = 0;
  private readonly waiting: Array<() => void> = [];
  /** Open artifact files, shared by concurrent transfers (positional reads), closed when unused. */
  private readonly files = new Map<string, { fd: number; users: number; modified: string }>();
  private readonly mRequests: Counter;
  private readonly mBytes: Counter;
  private readonly mActive: Gauge;
  private readonly mRefused: Counter;
  private readonly chunks: ChunkCache;
  /** Clears the chunk cache when no transfer ran for a while (the memory goes back). */
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly source: DeploymentSource,
    private readonly opts: DdiServerOptions,
    private readonly log: Logger,
    metrics: Metrics,
  ) {
    if (!ID.test(opts.tenant)) throw new Error(`DDI tenant "${opts.tenant}": letters, digits, "_", ".", ":", "-"`);
    this.mRequests = metrics.counter('outpost_ddi_requests_total', 'Update server (DDI) requests by resource and status', ['resource', 'status']);
    this.mBytes = metrics.counter('outpost_ddi_served_bytes_total', 'Artifact bytes served to child devices');
    this.mActive = metrics.gauge('outpost_ddi_transfers', 'Artifact transfers in progress');
    this.mRefused = metrics.counter('outpost_ddi_refused_total', 'Update server requests refused, by reason', ['reason']);
    const mChunks = metrics.counter('outpost_ddi_chunk_reads_total', 'Artifact chunks served, from memory (hit) or read from the cache directory (miss)', ['result']);
    this.chunks = new ChunkCache(opts.chunkCacheBytes ?? 32 * 1024 * 1024, 1024 * 1024, undefined, (hit) => mChunks.inc({ result: hit ? 'hit' : 'miss' }));
  }

  get port(): number {
    return (this.server?.address() as AddressInfo).port;
  }

  async listen(host: string, port: number): Promise<number> {
    const server = createServer((req, res) => {
      try {
        this.handle(req, res);
      } catch (err) {
        this.log.error({ err: (err as Error).message, url: req.url }, 'update server request failed');
        if (!res.headersSent) problem(res, 500, 'internal error');
        else res.destroy();
      }
    });
    server.keepAliveTimeout = 10_000;
    this.server = server;
    return listenOn(server, host, port);
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    clearTimeout(this.idleTimer);
    this.chunks.clear();
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
    for (const f of this.files.values()) closeSync(f.fd);
    this.files.clear();
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
      this.mBytes.inc({}, buf.length);
      const more = res.write(buf);
      if (pos > end) break;
      if (!more) {
        await new Promise<void>((resolve) => {
          // A device that stops reading must not hold its transfer slot for ever.
          const stalled = setTimeout(() => {
            this.mRefused.inc({ reason: 'stalled' });
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

  private count(resource: string, status: number): void {
    this.mRequests.inc({ resource, status: String(status) });
  }

  private authorized(req: IncomingMessage, device: string): boolean {
    const { gatewayToken, targetTokens } = this.opts;
    if (gatewayToken === undefined && targetTokens === undefined) return true;
    const m = /^(TargetToken|GatewayToken) (\S+)$/.exec(req.headers.authorization ?? '');
    if (!m) return false;
    if (m[1] === 'GatewayToken') return gatewayToken !== undefined && sameSecret(m[2]!, gatewayToken);
    const own = targetTokens?.[device];
    return own !== undefined && sameSecret(m[2]!, own);
  }

  private base(req: IncomingMessage, device: string): string {
    const root = this.opts.publicUrl ?? `http://${req.headers.host ?? '127.0.0.1'}`;
    return `${root.replace(/\/$/, '')}/${this.opts.tenant}/controller/v1/${encodeURIComponent(device)}`;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const parts = url.pathname.split('/').slice(1).map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        return '\0';
      }
    });
    // /{tenant}/controller/v1/{controllerId}/...
    if (parts.length < 4 || parts[0] !== this.opts.tenant || parts[1] !== 'controller' || parts[2] !== 'v1') {
      this.mRefused.inc({ reason: 'not-found' });
      problem(res, 404, `no such resource: ${url.pathname.slice(0, 200)}`);
      return;
    }
    const device = parts[3]!;
    const rest = parts.slice(4);
    if (!ID.test(device)) {
      this.mRefused.inc({ reason: 'bad-controller-id' });
      problem(res, 400, 'controllerId: letters, digits, "_", ".", ":", "-", at most 128');
      return;
    }
    if (!this.authorized(req, device)) {
      this.mRefused.inc({ reason: 'unauthorized' });
      res.setHeader('www-authenticate', 'TargetToken');
      problem(res, 401, 'a valid TargetToken or GatewayToken is required');
      return;
    }
    const method = req.method ?? 'GET';
    const route = `${method} ${rest.map((p, i) => (i % 2 === 1 && rest[0] !== 'configData' ? ':id' : p)).join('/')}`;
    switch (route) {
      case 'GET ':
        return this.poll(req, res, device);
      case 'GET deploymentBase/:id':
        return this.deployment(req, res, device, Number(rest[1]));
      case 'POST deploymentBase/:id/feedback':
        return this.readBody(req, res, feedbackSchema, (fb) => {
          const ok = this.source.feedback(device, Number(rest[1]), fb);
          this.count('feedback', ok ? 200 : 410);
          if (ok) res.writeHead(200).end();
          else problem(res, 410, `action ${rest[1]} is not open for ${device}`);
        });
      case 'GET cancelAction/:id': {
        const id = this.source.cancellation(device);
        if (id === undefined || id !== Number(rest[1])) {
          this.count('cancelAction', 404);
          return problem(res, 404, `no cancellation ${rest[1]} for ${device}`);
        }
        this.count('cancelAction', 200);
        return json(res, 200, { id: String(id), cancelAction: { stopId: String(id) } });
      }
      case 'POST cancelAction/:id/feedback':
        return this.readBody(req, res, feedbackSchema, (fb) => {
          const ok = this.source.cancelFeedback(device, Number(rest[1]), fb);
          this.count('cancelFeedback', ok ? 200 : 410);
          if (ok) res.writeHead(200).end();
          else problem(res, 410, `no cancellation ${rest[1]} open for ${device}`);
        });
      case 'PUT configData':
        return this.readBody(req, res, configDataSchema, (body) => {
          this.source.configData(device, body.data);
          this.count('configData', 200);
          res.writeHead(200).end();
        });
      default:
        if (rest[0] === 'softwaremodules' && rest[2] === 'artifacts' && rest.length === 4 && (method === 'GET' || method === 'HEAD')) {
          return this.download(req, res, device, Number(rest[1]), rest[3]!);
        }
    }
    this.mRefused.inc({ reason: 'not-found' });
    problem(res, method === 'GET' || method === 'POST' || method === 'PUT' || method === 'HEAD' ? 404 : 405, `no resource ${method} ${url.pathname.slice(0, 200)}`);
  }

  private poll(req: IncomingMessage, res: ServerResponse, device: string): void {
    const links: Record<string, { href: string }> = {};
    const base = this.base(req, device);
    const cancel = this.source.cancellation(device);
    const offer = cancel === undefined ? this.source.offer(device) : undefined;
    if (cancel !== undefined) links.cancelAction = { href: `${base}/cancelAction/${cancel}` };
    else if (offer) links.deploymentBase = { href: `${base}/deploymentBase/${offer.actionId}?c=${offer.artifact.sha256.slice(0, 8)}` };
    else links.configData = { href: `${base}/configData` };
    this.count('poll', 200);
    json(res, 200, { config: { polling: { sleep: hhmmss(this.opts.pollSeconds) } }, _links: links });
  }

  private deployment(req: IncomingMessage, res: ServerResponse, device: string, actionId: number): void {
    const offer = this.source.offer(device);
    if (!offer || offer.actionId !== actionId) {
      this.count('deploymentBase', 404);
      problem(res, 404, `action ${actionId} is not open for ${device}`);
      return;
    }
    const a = offer.artifact;
    const href = `${this.base(req, device)}/softwaremodules/${a.moduleId}/artifacts/${encodeURIComponent(a.filename)}`;
    this.count('deploymentBase', 200);
    json(res, 200, {
      id: String(offer.actionId),
      deployment: {
        download: 'forced',
        update: 'forced',
        ...(offer.maintenanceWindow ? { maintenanceWindow: offer.maintenanceWindow } : {}),
        chunks: [
          {
            part: 'os',
            version: offer.version,
            name: offer.name,
            artifacts: [
              {
                filename: a.filename,
                hashes: { sha1: a.sha1, md5: a.md5, sha256: a.sha256 },
                size: a.size,
                _links: { 'download-http': { href }, 'md5sum-http': { href: `${href}.MD5SUM` } },
              },
            ],
          },
        ],
      },
    });
  }

  private readBody<T>(req: IncomingMessage, res: ServerResponse, schema: z.ZodType<T>, then: (body: T) => void): void {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > 256 * 1024) {
        this.mRefused.inc({ reason: 'too-large' });
        problem(res, 413, 'request body over 256 KiB');
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (res.headersSent) return;
      let raw: unknown;
      try {
        raw = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch (err) {
        this.mRefused.inc({ reason: 'not-json' });
        problem(res, 400, `body is not JSON: ${(err as Error).message}`);
        return;
      }
      const r = schema.safeParse(raw);
      if (!r.success) {
        this.mRefused.inc({ reason: 'invalid-body' });
        problem(res, 400, r.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; '));
        return;
      }
      // Outside the request handler's try: a failure here (a full disk under the store) must not
      // escape into the event loop.
      try {
        then(r.data);
      } catch (err) {
        this.log.error({ err: (err as Error).message, url: req.url }, 'update server request failed');
        if (!res.headersSent) problem(res, 500, 'internal error');
        else res.destroy();
      }
    });
  }

  /** Waits for a transfer slot; false when the line is full (the device is told to come back). */
  private acquire(): Promise<boolean> | boolean {
    if (this.active < this.opts.maxTransfers) {
      this.active++;
      this.mActive.set(this.active);
      return true;
    }
    if (this.waiting.length >= (this.opts.maxQueued ?? 1000)) return false;
    return new Promise((resolve) => this.waiting.push(() => resolve(true)));
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else {
      this.active--;
      this.mActive.set(this.active);
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

  private download(req: IncomingMessage, res: ServerResponse, device: string, moduleId: number, file: string): void {
    const md5sum = file.endsWith('.MD5SUM');
    const name = md5sum ? file.slice(0, -'.MD5SUM'.length) : file;
    const art = this.source.artifact(device, moduleId, name);
    if (!art) {
      this.count('artifact', 404);
      problem(res, 404, `artifact ${name} is not offered to ${device}`);
      return;
    }
    if (md5sum) {
      this.count('artifact', 200);
      res.writeHead(200, { 'content-type': 'text/plain' }).end(`${art.md5}  ${name}\n`);
      return;
    }
    const etag = `"${art.sha256}"`;
    const common = { etag, 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream', 'content-disposition': `attachment;filename=${name}` };
    const inm = req.headers['if-none-match'];
    if (inm !== undefined && inm.split(',').some((t) => t.trim() === etag || t.trim() === '*')) {
      this.count('artifact', 304);
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
        this.count('artifact', 416);
        res.writeHead(416, { 'content-range': `bytes */${art.size}`, etag }).end();
        return;
      }
      status = 206;
    }
    const headers = { ...common, 'content-length': end - start + 1, ...(status === 206 ? { 'content-range': `bytes ${start}-${end}/${art.size}` } : {}) };
    if (req.method === 'HEAD') {
      this.count('artifact', status);
      res.writeHead(status, headers).end();
      return;
    }
    const go = (): void => {
      if (res.destroyed) {
        this.release();
        return;
      }
      this.count('artifact', status);
      let file: { fd: number; modified: string };
      try {
        file = this.openFile(art.path);
      } catch (err) {
        this.release();
        this.log.error({ err: (err as Error).message, device }, 'artifact not readable');
        problem(res, 500, 'artifact not readable');
        return;
      }
      res.writeHead(status, { ...headers, 'last-modified': file.modified });
      void this.send(res, art.path, file.fd, art.size, start, end)
        .catch((err: unknown) => {
          this.log.error({ err: (err as Error).message, device }, 'artifact read failed');
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
      this.mRefused.inc({ reason: 'busy' });
      res.setHeader('retry-after', '10');
      problem(res, 503, 'too many transfers; try again later');
    } else {
      void slot.then(go);
    }
  }
}
