import type { Router } from '../contracts/index.js';
import type { HttpLayer } from './http-layer.js';
import { sendJson } from './respond.js';

export interface ApiCore {
  status(): Record<string, unknown>;
  metrics(): Promise<string>;
}

/**
 * The local API's own routes: `/api/v1/status` (JSON), `/metrics` (Prometheus text) and
 * `/healthz`. Every other capability mounts its routes itself (dead letters, writes, rules, OTA,
 * Node-RED at /red).
 */
export function coreRoutes(http: HttpLayer, core: ApiCore): Router {
  const r = http.router();
  r.get('/api/v1/status', (_req, res) => sendJson(res, 200, core.status()));
  r.get('/metrics', (_req, res, next) => {
    core.metrics().then((text) => {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
      res.end(text);
    }, next);
  });
  r.get('/healthz', (_req, res) => sendJson(res, 200, { ok: true }));
  return r;
}
