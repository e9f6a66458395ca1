import { z } from 'zod';
import { HttpError, type HttpHost, type Router } from '../runtime/contracts/index.js';
import type { OtaService } from './ota-service.js';

const ACTIONS = ['pause', 'resume', 'abort'] as const;

/**
 * OTA's part of the local API (docs/topics.md):
 *   GET  /api/v1/ota                                  releases, download progress, rollouts, cache
 *   POST /api/v1/ota/rollouts/{release}/pause|resume|abort
 *   POST /api/v1/ota/releases                         a signed release given locally, as the cloud would send it
 */
export function otaRoutes(http: HttpHost, ota: OtaService): Router {
  const r = http.router();
  r.get('/', (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ...ota.status().ota }));
  });
  r.post('/rollouts/:release/:action', (req, res) => {
    const release = req.params.release;
    const action = req.params.action as (typeof ACTIONS)[number];
    if (!ACTIONS.includes(action)) throw new HttpError(405, `method POST not allowed on ${req.originalUrl.split('?')[0]!.slice(0, 200)}`);
    const result = ota.rollouts.command(release, action);
    if (result.state === undefined) throw new HttpError(404, `no rollout of release "${release}"`);
    if (!result.applied) throw new HttpError(409, `rollout of ${release} is ${result.state}: cannot ${action}`, { state: result.state });
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ release, state: result.state }));
  });
  r.post('/releases', http.jsonBody(z.unknown()), (req, res) => {
    const result = ota.receive(JSON.stringify(req.body));
    if (!result.accepted) throw new HttpError(400, result.message ?? 'release refused', { reason: result.reason });
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ release: result.release }));
  });
  return r;
}

/** The same paths when the site config has no `ota` section: each says so. */
export function otaNotConfiguredRoutes(http: HttpHost): Router {
  const r = http.router();
  r.get('/', () => {
    throw new HttpError(404, 'OTA is not configured (no ota section in the site config)');
  });
  r.post(['/rollouts/:release/:action', '/releases'], () => {
    throw new HttpError(404, 'OTA is not configured');
  });
  return r;
}
