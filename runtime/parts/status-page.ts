import { existsSync, readFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { fileURLToPath } from 'node:url';
import { HttpError, type Component, type ComponentContext, type Outbox } from '../contracts/index.js';
import { sendJson } from '../http/respond.js';
import { LiveValues } from '../live-values.js';
import type { ProblemLog } from '../problems.js';
import type { Part } from './site.js';

/** Live streams open at once, at most (each costs a snapshot a second). */
const MAX_STREAMS = 16;
const EVERY_MS = 1000;
/** A stream ends after this long and the page opens another with its token: a revoked token stops reading within it. */
const STREAM_MS = 60_000;
/** A client that stops reading is dropped once this much waits for it. */
const MAX_BUFFERED = 1024 * 1024;

/** The page's files (runtime/http/status-page/, shipped as they are: no build step). */
const FILES: Record<string, string> = { '': 'index.html', 'app.js': 'app.js', 'style.css': 'style.css' };
const TYPES: Record<string, string> = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' };

function pageDir(): string {
  // From the sources (runtime/parts/) or from the compiled package (dist/runtime/parts/).
  for (const rel of ['../http/status-page/', '../../../runtime/http/status-page/']) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(`${dir}index.html`)) return dir;
  }
  throw new Error('the status page files (runtime/http/status-page/) are missing from this installation');
}

/**
 * The status page (docs/operations.md, "Status page"): `/status` serves the page (no data in it),
 * `GET /api/v1/status/live` one snapshot and `GET /api/v1/status/stream` a snapshot a second as
 * Server-Sent Events, both behind the API's tokens (read scope). A snapshot is the gateway's
 * status with the last values of every point (a short trend each), the rules' counts, the outbox's
 * oldest reading per stream, recent problems and dead letters.
 */
class StatusPage implements Component {
  readonly name = 'status-page';
  private readonly streams = new Set<ServerResponse>();
  private timer: NodeJS.Timeout | undefined;
  private untap: (() => void) | undefined;

  constructor(
    readonly live: LiveValues,
    private readonly snapshot: () => Record<string, unknown>,
    private readonly tap: (fn: (readings: Parameters<LiveValues['take']>[0]) => void) => () => void,
  ) {}

  start(_ctx: ComponentContext): Promise<void> {
    this.untap = this.tap((r) => this.live.take(r));
    return Promise.resolve();
  }

  open(res: ServerResponse): void {
    if (this.streams.size >= MAX_STREAMS) throw new HttpError(503, `${MAX_STREAMS} status streams are open already; close one or poll /api/v1/status/live`);
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    res.write('retry: 2000\n\n');
    this.streams.add(res);
    const expiry = setTimeout(() => res.end(), STREAM_MS);
    expiry.unref();
    res.on('close', () => {
      clearTimeout(expiry);
      this.streams.delete(res);
    });
    this.send(res, JSON.stringify(this.snapshot()));
    this.timer ??= setInterval(() => this.broadcast(), EVERY_MS);
    this.timer.unref();
  }

  private send(res: ServerResponse, data: string): void {
    if (res.writableLength > MAX_BUFFERED) {
      res.destroy();
      this.streams.delete(res);
      return;
    }
    res.write(`event: snapshot\ndata: ${data}\n\n`);
  }

  private broadcast(): void {
    if (this.streams.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
      return;
    }
    const data = JSON.stringify(this.snapshot());
    for (const res of this.streams) this.send(res, data);
  }

  stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    this.untap?.();
    for (const res of this.streams) res.end();
    this.streams.clear();
    return Promise.resolve();
  }

  status(): Record<string, unknown> {
    return {};
  }
}

function deadLetters(outbox: Outbox): { count: number; recent: unknown[] } {
  return {
    count: outbox.deadLetterCount(),
    recent: outbox.listDeadLetters(5).map((d) => {
      let reading: { device?: unknown; point?: unknown } = {};
      try {
        reading = JSON.parse(d.body) as typeof reading;
      } catch {
        // shown without its device
      }
      return { id: d.id, stream: d.stream, reason: d.reason, failedAt: d.failedAt, device: reading.device, point: reading.point };
    }),
  };
}

export const statusPagePart: Part = {
  name: 'status-page',
  build(site) {
    const http = site.get('http');
    const outbox = site.get('outbox').outbox;
    const pipeline = site.get('rules').pipeline;
    const problems: ProblemLog | undefined = site.opts.problems;
    const live = new LiveValues();
    const snapshot = (): Record<string, unknown> => {
      const status = site.opts.status() as { outbox?: { streams?: Array<{ stream: string }> } };
      const oldest: Record<string, number> = {};
      for (const s of status.outbox?.streams ?? []) {
        const row = outbox.peek(s.stream, 0, 1)[0];
        if (row) oldest[s.stream] = row.createdAt;
      }
      return {
        at: site.opts.clock.now(),
        status,
        oldest,
        devices: live.snapshot(),
        problems: { total: problems?.total ?? 0, recent: problems?.recent(30) ?? [] },
        deadLetters: deadLetters(outbox),
      };
    };
    const page = new StatusPage(live, snapshot, (fn) => pipeline.addTap(fn));

    const dir = pageDir();
    const files = new Map(Object.entries(FILES).map(([route, file]) => [route, { body: readFileSync(`${dir}${file}`), type: TYPES[file.split('.').pop()!]! }]));
    const r = http.router();
    r.get(['/', '/:file'], (req, res) => {
      const f = files.get(req.params.file ?? '');
      if (!f) throw new HttpError(404, `no ${req.path} in the status page`);
      res.setHeader('content-type', f.type);
      res.setHeader('cache-control', 'no-cache');
      // The page runs its own script and style only, and talks to this API only.
      res.setHeader('content-security-policy', "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
      res.setHeader('x-content-type-options', 'nosniff');
      res.end(f.body);
    });
    http.open('/status');
    http.mount('/status', r);

    const api = http.router();
    api.get('/live', (_req, res) => sendJson(res, 200, snapshot()));
    api.get('/stream', (_req, res) => page.open(res));
    http.mount('/api/v1/status', api, { scope: 'read' });
    return page;
  },
};
