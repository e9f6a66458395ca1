import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import express from 'express';
import type { z } from 'zod';
import {
  errorMessage,
  type HttpHost,
  type HttpListener,
  type JsonBodyOptions,
  type Logger,
  type MountOptions,
  type NextFunction,
  type Request,
  type RequestHandler,
  type Response,
  type Router,
} from '../contracts/index.js';
import { listenOn } from '../listen.js';
import type { PathPolicy } from './guard.js';
import { sendError, statusOf } from './respond.js';

/** Request bodies are read up to this by default. */
export const DEFAULT_BODY_LIMIT = 1024 * 1024;

type ErrorFields = JsonBodyOptions['errorFields'];

/**
 * The gateway's HTTP layer: express routers, one JSON body reader with limits, one error shape,
 * and the listeners (the local API with its mounts, and listeners of their own such as the update
 * server's). Every listener answers an unknown path 404 (405 for a method other than GET or HEAD)
 * and a failed handler 500, in the same shape.
 */
export class HttpLayer implements HttpHost {
  /** What components mounted on the API listener, in order; consulted before the core routes' 404. */
  private readonly mounts = express.Router();
  private readonly listeners = new Set<HttpListener>();
  private api: HttpListener | undefined;
  /** The guard's policy per mounted prefix (lower case), longest first. */
  private policies: Array<{ readonly prefix: string; readonly policy: PathPolicy }> = [];

  constructor(private readonly log: Logger) {}

  router(): Router {
    return express.Router();
  }

  jsonBody<T>(schema: z.ZodType<T>, opts: JsonBodyOptions = {}): RequestHandler {
    const limit = opts.limitBytes ?? DEFAULT_BODY_LIMIT;
    const fields = opts.errorFields;
    // body-parser reads and parses (any content type: a client that forgets the header is still
    // understood); the schema check and the answers are ours.
    const parse = express.json({ limit, strict: false, type: () => true });
    const refuse = (res: Response, status: number, reason: 'too-large' | 'not-json' | 'invalid-body', message: string): void => {
      opts.onRefused?.(reason);
      this.sendError(res, status, message, fields?.(status, message));
    };
    return (req, res, next) => {
      parse(req, res, (err?: unknown) => {
        if (err !== undefined && err !== null) {
          const type = (err as { type?: unknown }).type;
          if (type === 'entity.too.large') refuse(res, 413, 'too-large', `request body: too large (over ${limit} bytes)`);
          else if (type === 'entity.parse.failed') refuse(res, 400, 'not-json', `request body: not JSON: ${errorMessage(err)}`);
          else next(err);
          return;
        }
        // body-parser leaves `{}` for an empty body.
        const parsed = schema.safeParse(req.body ?? {});
        if (!parsed.success) {
          refuse(res, 400, 'invalid-body', parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; '));
          return;
        }
        req.body = parsed.data;
        next();
      });
    };
  }

  mount(prefix: string, handler: RequestHandler | Router, opts: MountOptions = {}): void {
    this.mounts.use(prefix, handler);
    if (opts.scope !== undefined || opts.ownAuth) this.setPolicy(prefix, opts);
  }

  /** A path (and what is under it) that needs no credentials at all (`/healthz`). */
  open(prefix: string): void {
    this.setPolicy(prefix, { open: true });
  }

  /**
   * The policy of `path` (lower case, as express matches paths case-insensitively): the longest
   * prefix given to mount() or open(), else the default (a token; scope by method).
   */
  policy(path: string): PathPolicy {
    const p = path.toLowerCase();
    return this.policies.find((x) => p === x.prefix || p.startsWith(`${x.prefix}/`))?.policy ?? {};
  }

  private setPolicy(prefix: string, policy: PathPolicy): void {
    const p = prefix.toLowerCase().replace(/\/+$/, '');
    this.policies = [...this.policies.filter((x) => x.prefix !== p), { prefix: p, policy }].sort((a, b) => b.prefix.length - a.prefix.length);
  }

  sendError(res: Response | ServerResponse, status: number, message: string, details?: Readonly<Record<string, unknown>>): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    sendError(res, status, message, details);
  }

  /**
   * The local API listener: `guard` first (credentials, Host and Origin: runtime/http/guard.ts),
   * then the mounts (in the order they were made), then `routes`, then the answers for unknown
   * paths and failures. With `tls` it speaks HTTPS only.
   */
  async listenApi(host: string, port: number, routes: Router, opts: { tls?: { cert: string; key: string }; guard?: RequestHandler } = {}): Promise<HttpListener> {
    const app = this.app(routes, { name: 'api', ...(opts.guard ? { guard: opts.guard } : {}) }, this.mounts);
    this.api = await this.serve(app, host, port, 5000, opts.tls);
    return this.api;
  }

  /** The API listener's server (Node-RED takes its WebSocket upgrades), once listening. */
  get apiServer(): Server | undefined {
    return this.api?.server;
  }

  async listen(opts: Parameters<HttpHost['listen']>[0], handler: Router): Promise<HttpListener> {
    const app = this.app(handler, { name: opts.name, errorFields: opts.errorFields });
    const pre = opts.preRoute;
    if (!pre) return this.serve(app, opts.host, opts.port, opts.keepAliveTimeoutMs ?? 5000);
    const first = (req: IncomingMessage, res: ServerResponse): void => {
      try {
        if (pre(req, res)) return;
      } catch (err) {
        this.failed(opts.name, opts.errorFields, (req.url ?? '').split('?')[0]!, res, err);
        return;
      }
      app(req, res);
    };
    return this.serve(first, opts.host, opts.port, opts.keepAliveTimeoutMs ?? 5000);
  }

  /** Closes every listener still open. */
  async close(): Promise<void> {
    await Promise.all([...this.listeners].map((l) => l.close()));
  }

  private app(handler: Router, opts: { name: string; errorFields?: ErrorFields; guard?: RequestHandler }, mounts?: Router): express.Express {
    const app = express();
    app.disable('x-powered-by');
    app.disable('etag');
    app.set('query parser', 'simple');
    if (opts.guard) app.use(opts.guard);
    if (mounts) app.use(mounts);
    app.use(handler);
    const fields = opts.errorFields;
    app.use((req: Request, res: Response) => {
      const path = req.path;
      const known = req.method === 'GET' || req.method === 'HEAD';
      const message = known ? `no resource at ${path.slice(0, 200)}` : `method ${req.method} not allowed on ${path.slice(0, 200)}`;
      const status = known ? 404 : 405;
      this.sendError(res, status, message, fields?.(status, message));
    });
    app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
      this.failed(opts.name, fields, req.path, res, err);
    });
    return app;
  }

  /** A handler failed: its HTTP meaning when it has one, else 500 "internal error" (logged). */
  private failed(listener: string, fields: ErrorFields, path: string, res: ServerResponse, err: unknown): void {
    const known = statusOf(err);
    if (known) {
      this.sendError(res, known.status, known.message, { ...known.details, ...fields?.(known.status, known.message) });
      return;
    }
    // The path only: a query string may carry a credential (Node-RED's access_token).
    this.log.error({ listener, err: errorMessage(err), path: path.slice(0, 200) }, 'http handler failed');
    this.sendError(res, 500, 'internal error', fields?.(500, 'internal error'));
  }

  private async serve(
    app: (req: IncomingMessage, res: ServerResponse) => void,
    host: string,
    port: number,
    keepAliveTimeoutMs: number,
    tls?: { cert: string; key: string },
  ): Promise<HttpListener> {
    const handle = (req: IncomingMessage, res: ServerResponse): void => {
      app(req, res);
    };
    // An https.Server is an http.Server to its users (requests, upgrades, close).
    const server: Server = tls ? createTlsServer({ cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2' }, handle) : createServer(handle);
    server.keepAliveTimeout = keepAliveTimeoutMs;
    const bound = await listenOn(server, host, port);
    let closing: Promise<void> | undefined;
    const listener: HttpListener = {
      port: bound,
      server,
      close: () =>
        (closing ??= new Promise<void>((resolve) => {
          this.listeners.delete(listener);
          server.closeAllConnections();
          server.close(() => resolve());
        })),
    };
    this.listeners.add(listener);
    return listener;
  }
}
