import { dirname, join } from 'node:path';
import { HostedNodeRed, makeNodeHost } from '../node-red.js';
import type { Part } from './site.js';

/** Node-RED hosted by the gateway at /red, with the Outpost palette (docs/rules.md); only with `nodeRed.enabled` and admin credentials. */
export const nodeRedPart: Part = {
  name: 'node-red',
  build(site) {
    const { config } = site;
    if (!config.nodeRed?.enabled || !config.http.admin) return undefined;
    const http = site.get('http');
    const pipeline = site.get('rules').pipeline;
    const sequence = site.get('store').sequence;
    const { points } = site.opts;
    return new HostedNodeRed({
      userDir: config.nodeRed.userDir ?? join(dirname(config.storage.path), 'node-red'),
      admin: config.http.admin,
      server: () => http.apiServer,
      mount: (prefix, handler) => http.mount(prefix, handler),
      host: (ctx) =>
        makeNodeHost({
          gateway: config.gateway.id,
          streams: config.streams.map((s) => s.name),
          pipeline,
          sequence,
          metrics: ctx.metrics,
          log: ctx.log,
          write: (device, point, value) => points.write(device, point, value, 'flow'),
        }),
    });
  },
};
