import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import express from 'express';
import type { z } from 'zod';
import {
  errorMessage,
  type HttpHost,
  type HttpListener,
  type JsonBodyOptions,
  type Logger,
  type NextFunction,
  type Request,
  type RequestHandler,
  type Response,
  type Router,
} from '../contracts/index.js';
import { listenOn } from '../listen.js';
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

  mount(prefix: string, handler: RequestHandler | Router): void {
    this.mounts.use(prefix, handler);
  }

  sendError(res: Response | ServerResponse, status: number, message: string, details?: Readonly<Record<string, unknown>>): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    sendError(res, status, message, details);
  }

  /**
   * The local API listener: the mounts first (in the order they were made), then `routes`, then
   * the answers for unknown paths and failures.
   */
  async listenApi(host: string, port: number, routes: Router): Promise<HttpListener> {
    const app = this.app(routes, { name: 'api' }, this.mounts);
    this.api = await this.serve(app, host, port, 5000);
    return this.api;
  }

  /** The API listener's server (Node-RED takes its WebSocket upgrades), once listening. */
  get apiServer(): Server | undefined {
    return this.api?.server;
  }

  async listen(opts: Parameters<HttpHost['listen']>[0], handler: Router): Promise<HttpListener> {
    const app = this.app(handler, { name: opts.name, errorFields: opts.errorFields });
    return this.serve(app, opts.host, opts.port, opts.keepAliveTimeoutMs ?? 5000);
  }

  /** Closes every listener still open. */
  async close(): Promise<void> {
    await Promise.all([...this.listeners].map((l) => l.close()));
  }

  private app(handler: Router, opts: { name: string; errorFields?: ErrorFields }, mounts?: Router): express.Express {
    const app = express();
    app.disable('x-powered-by');
    app.disable('etag');
    app.set('query parser', 'simple');
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
      const known = statusOf(err);
      if (known) {
        this.sendError(res, known.status, known.message, { ...known.details, ...fields?.(known.status, known.message) });
        return;
      }
      this.log.error({ listener: opts.name, err: errorMessage(err), url: req.originalUrl }, 'http handler failed');
      this.sendError(res, 500, 'internal error', fields?.(500, 'internal error'));
    });
    return app;
  }

  private async serve(app: express.Express, host: string, port: number, keepAliveTimeoutMs: number): Promise<HttpListener> {
    const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
      app(req, res);
    });
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
