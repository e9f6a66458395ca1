import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { z } from 'zod';
import type { Logger } from '../contracts/index.js';
import { listenOn } from '../listen.js';

export interface DeadLetterView {
  readonly id: number;
  readonly stream: string;
  readonly reason: string;
  readonly failedAt: number;
  readonly reading: unknown;
}

export interface ApiHandlers {
  status(): Record<string, unknown>;
  metrics(): Promise<string>;
  deadLetters?(limit: number): { count: number; items: DeadLetterView[] };
  /** Puts dead letters back into their streams: all, or the given ids. */
  replayDeadLetters?(ids: readonly number[] | undefined): number;
  /** Writes a device point; resolves with what was read back, rejects with an HTTP status. */
  writePoint?(device: string, point: string, value: number | boolean | string): Promise<{ status: number; body: Record<string, unknown> }>;
  /** Reads the config file's rules again and applies them (the running rules stay on any problem). */
  reloadRules?(): Promise<{ status: number; body: Record<string, unknown> }>;
  /** Releases, rollouts and the artifact cache (OTA configured). */
  ota?(): Record<string, unknown>;
  /** Pause, resume or abort a rollout. */
  rolloutCommand?(release: string, action: 'pause' | 'resume' | 'abort'): { status: number; body: Record<string, unknown> };
  /** A signed release envelope given locally (as the cloud would send it). */
  submitRelease?(body: unknown): { status: number; body: Record<string, unknown> };
}

const ROLLOUT_PATH = /^\/api\/v1\/ota\/rollouts\/([^/]+)\/(pause|resume|abort)$/;

const writeBody = z.strictObject({ value: z.union([z.number().finite(), z.boolean(), z.string().max(250)]) });
const WRITE_PATH = /^\/api\/v1\/devices\/([^/]+)\/points\/([^/]+)\/write$/;

const replayBody = z.strictObject({ ids: z.array(z.number().int().positive()).max(100_000).optional() });
const MAX_BODY = 1024 * 1024;

/**
 * The local HTTP API: `/api/v1/status` (JSON), `/metrics` (Prometheus text), `/healthz`, the
 * dead letters, and point writes (`POST /api/v1/devices/{device}/points/{point}/write`). Every
 * other path or method gets a JSON error naming what was wrong.
 */
export class HttpApi {
  private server: Server | undefined;
  private readonly mounts: Array<{ prefix: string; handler: (req: IncomingMessage, res: ServerResponse) => void }> = [];

  /** The listening server (for handlers that also take WebSocket upgrades). */
  get httpServer(): Server | undefined {
    return this.server;
  }

  /**
   * Hands requests under `prefix` to `handler` (an express app, for instance) with the prefix cut
   * from `req.url` and the full URL in `req.originalUrl`.
   */
  mount(prefix: string, handler: (req: IncomingMessage, res: ServerResponse) => void): void {
    this.mounts.push({ prefix, handler });
  }

  constructor(
    private readonly handlers: ApiHandlers,
    private readonly log: Logger,
  ) {}

  async listen(host: string, port: number): Promise<number> {
    const server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.log.error({ err: (err as Error).message, url: req.url }, 'http handler failed');
        if (!res.headersSent) send(res, 500, { error: 'internal error' });
        else res.destroy();
      });
    });
    server.keepAliveTimeout = 5000;
    this.server = server;
    return listenOn(server, host, port);
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const path = url.pathname;
    for (const m of this.mounts) {
      if (path === m.prefix || path.startsWith(`${m.prefix}/`)) {
        const original = req.url ?? '/';
        (req as IncomingMessage & { originalUrl?: string }).originalUrl = original;
        const rest = original.slice(m.prefix.length);
        req.url = rest.startsWith('/') ? rest : `/${rest}`;
        m.handler(req, res);
        return;
      }
    }
    if (req.method === 'POST' && path === '/api/v1/dead-letters/replay' && this.handlers.replayDeadLetters) {
      const body = await validBody(req, res, replayBody);
      if (body) send(res, 200, { replayed: this.handlers.replayDeadLetters(body.ids) });
      return;
    }
    if (req.method === 'POST' && path === '/api/v1/rules/reload' && this.handlers.reloadRules) {
      const r = await this.handlers.reloadRules();
      send(res, r.status, r.body);
      return;
    }
    const rollout = ROLLOUT_PATH.exec(path);
    if (req.method === 'POST' && rollout && this.handlers.rolloutCommand) {
      const r = this.handlers.rolloutCommand(decodeURIComponent(rollout[1]!), rollout[2] as 'pause' | 'resume' | 'abort');
      send(res, r.status, r.body);
      return;
    }
    if (req.method === 'POST' && path === '/api/v1/ota/releases' && this.handlers.submitRelease) {
      const body = await readBody(req);
      if (typeof body === 'string') {
        send(res, body === 'too large' ? 413 : 400, { error: `request body: ${body}` });
        return;
      }
      const r = this.handlers.submitRelease(body);
      send(res, r.status, r.body);
      return;
    }
    const write = WRITE_PATH.exec(path);
    if (req.method === 'POST' && write && this.handlers.writePoint) {
      const body = await validBody(req, res, writeBody);
      if (!body) return;
      const r = await this.handlers.writePoint(decodeURIComponent(write[1]!), decodeURIComponent(write[2]!), body.value);
      send(res, r.status, r.body);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(res, 405, { error: `method ${req.method ?? '?'} not allowed on ${path}` });
      return;
    }
    switch (path) {
      case '/api/v1/status':
        send(res, 200, this.handlers.status());
        return;
      case '/metrics': {
        const text = await this.handlers.metrics();
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
        res.end(text);
        return;
      }
      case '/api/v1/dead-letters': {
        if (!this.handlers.deadLetters) break;
        const limit = Number(url.searchParams.get('limit') ?? 100);
        if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) {
          send(res, 400, { error: 'limit: expected an integer from 1 to 10000' });
          return;
        }
        send(res, 200, this.handlers.deadLetters(limit));
        return;
      }
      case '/api/v1/ota':
        if (!this.handlers.ota) {
          send(res, 404, { error: 'OTA is not configured (no ota section in the site config)' });
          return;
        }
        send(res, 200, this.handlers.ota());
        return;
      case '/healthz':
        send(res, 200, { ok: true });
        return;
      default:
    }
    send(res, 404, { error: `no resource at ${path}` });
  }
}

function send(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** The request's JSON body checked against `schema`; undefined after answering 400/413 naming what was wrong. */
async function validBody<T>(req: IncomingMessage, res: ServerResponse, schema: z.ZodType<T>): Promise<T | undefined> {
  const body = await readBody(req);
  if (typeof body === 'string') {
    send(res, body === 'too large' ? 413 : 400, { error: `request body: ${body}` });
    return undefined;
  }
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    send(res, 400, { error: parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ') });
    return undefined;
  }
  return parsed.data;
}

/** The JSON body of a request (empty means {}), or a string saying what was wrong with it. */
async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) return 'too large';
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return {};
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    return `not JSON: ${(err as Error).message}`;
  }
}
