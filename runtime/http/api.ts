import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../contracts/index.js';

export interface ApiHandlers {
  status(): Record<string, unknown>;
  metrics(): Promise<string>;
}

/**
 * The local HTTP API: `/api/v1/status` (JSON), `/metrics` (Prometheus text), `/healthz`.
 * Read-only so far; every other path or method gets a JSON error naming what was wrong.
 */
export class HttpApi {
  private server: Server | undefined;

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
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return (server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
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
      case '/healthz':
        send(res, 200, { ok: true });
        return;
      default:
        send(res, 404, { error: `no resource at ${path}` });
    }
  }
}

function send(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
