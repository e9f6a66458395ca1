import { createHmac } from 'node:crypto';
import { join } from 'node:path';
import { LoginLimiter, limitLogins } from '../http/login-limiter.js';
import { HostedNodeRed, makeNodeHost } from '../node-red.js';
import { gatewaySecret } from '../security/secret-files.js';
import { stateDir } from './http.js';
import type { Part } from './site.js';

/**
 * The key Node-RED encrypts flow credentials with: an HMAC of the gateway's secret under a fixed
 * label, so the raw secret never leaves the gateway and a key derived for another use differs.
 */
export function nodeRedCredentialSecret(dir: string): string {
  return createHmac('sha256', gatewaySecret(dir)).update('outpost/node-red/credentialSecret/v1').digest('hex');
}

/** Node-RED hosted by the gateway at /red, with the Outpost palette (docs/rules.md); only with `nodeRed.enabled` and admin credentials. */
export const nodeRedPart: Part = {
  name: 'node-red',
  build(site) {
    const { config } = site;
    if (!config.nodeRed?.enabled || !config.http.admin) return undefined;
    const http = site.get('http');
    const pipeline = site.get('rules').pipeline;
    const sequence = site.get('store').sequence;
    const { points, clock, metrics } = site.opts;
    const { registry, calls } = site.get('devices');
    // Failed editor logins slow down per address (before Node-RED's own /red handler sees them).
    const limiter = new LoginLimiter(clock);
    http.mount('/red/auth/token', limitLogins(limiter, metrics.counter('outpost_http_refused_total', 'Requests to the local API refused before any route ran', ['reason'])), { ownAuth: true });
    return new HostedNodeRed({
      userDir: config.nodeRed.userDir ?? join(stateDir(config), 'node-red'),
      credentialSecret: nodeRedCredentialSecret(stateDir(config)),
      admin: config.http.admin,
      server: () => http.apiServer,
      // The editor authenticates its users itself (http.admin); the API guard checks Host and Origin.
      mount: (prefix, handler) => http.mount(prefix, handler, { ownAuth: true }),
      host: (ctx) =>
        makeNodeHost({
          gateway: config.gateway.id,
          streams: config.streams.map((s) => s.name),
          pipeline,
          sequence,
          metrics: ctx.metrics,
          log: ctx.log,
          write: (device, point, value) => points.write(device, point, value, 'flow'),
          devices: { show: (d) => registry.show(d), editDesired: (d, patch) => registry.editDesired(d, patch), call: (req) => calls.call(req) },
        }),
    });
  },
};
