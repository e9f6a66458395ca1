import { z } from 'zod';
import { cloudTopics, errorMessage, HttpError, idSchema, type Component, type ComponentContext, type Logger } from '../contracts/index.js';
import type { EmbeddedBroker } from '../broker/embedded-broker.js';
import { sendJson } from '../http/respond.js';
import type { SiteConfig } from '../config/schema.js';
import type { Part } from './site.js';

const revokeBody = z.strictObject({ reason: z.string().max(200).optional() });
const cloudCommand = z.strictObject({ action: z.literal('revoke'), id: idSchema, reason: z.string().max(200).optional() });

/**
 * Revocation wherever it comes from: the API (`POST /api/v1/identities/{id}/revoke`), the CLI
 * (`outpost identity revoke`, written to the store by another process and picked up here within a
 * second), the cloud (identity commands) and the config. A revoked identity's live connection is
 * closed at once and every later connection refused, across restarts. Lifting a revocation is the
 * site's decision (API or CLI), never the cloud's.
 */
class IdentitiesComponent implements Component {
  readonly name = 'identities';
  private timer: NodeJS.Timeout | undefined;
  private log: Logger | undefined;

  constructor(private readonly broker: EmbeddedBroker) {}

  start(ctx: ComponentContext): Promise<void> {
    this.log = ctx.log;
    this.timer = setInterval(() => {
      try {
        for (const id of this.broker.identities.refresh()) this.cut(id, 'store');
      } catch (err) {
        this.log?.warn({ err: errorMessage(err) }, 'could not read identity revocations');
      }
    }, 1000);
    this.timer.unref();
    return Promise.resolve();
  }

  revoke(id: string, source: string, reason?: string): void {
    this.broker.identities.revoke(id, source, reason);
    this.cut(id, source);
  }

  private cut(id: string, source: string): void {
    const connected = this.broker.disconnect(id);
    this.log?.warn({ identity: id, source, disconnected: connected }, 'identity revoked');
  }

  stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    return Promise.resolve();
  }

  status(): Record<string, unknown> {
    return {};
  }
}

/** The identities of the broker as the API lists them: configured, enrolled, revoked, connected. */
function listing(config: SiteConfig, broker: EmbeddedBroker): Record<string, unknown> {
  const registry = broker.identities;
  return {
    devices: config.identities.devices.map((d) => ({ id: d.id, credential: d.certSha256 ? (d.passwordHash ? 'password+certificate' : 'certificate') : 'password' })),
    clients: config.identities.clients.map((c) => ({ id: c.id })),
    groups: config.identities.groups.map((g) => ({ name: g.name, devices: g.devices, credential: g.caFile ? 'certificate' : 'derived-key' })),
    enrolled: registry.enrolled(),
    revoked: registry.revocations(),
  };
}

export const identitiesPart: Part = {
  name: 'identities',
  build(site) {
    const { config } = site.opts;
    // With an external site broker, children authenticate there (its password file and ACL).
    const broker = site.find('embeddedBroker');
    if (!broker) return undefined;
    const component = new IdentitiesComponent(broker);
    const http = site.get('http');
    const r = http.router();
    r.get('/', (_req, res) => sendJson(res, 200, listing(config, broker)));
    r.post('/:id/revoke', http.jsonBody(revokeBody), (req, res) => {
      const id = idSchema.safeParse(req.params.id);
      if (!id.success) throw new HttpError(400, 'identity id: only letters, digits, "_", "." and "-"');
      component.revoke(id.data, 'api', (req.body as z.output<typeof revokeBody>).reason);
      sendJson(res, 200, { revoked: id.data });
    });
    r.post('/:id/restore', (req, res) => {
      const id = String(req.params.id);
      if (config.identities.revoked.includes(id)) throw new HttpError(409, `"${id}" is revoked by the config (identities.revoked): remove it there`);
      sendJson(res, 200, { restored: broker.identities.restore(id) ? id : null });
    });
    // Identities are the site's access control: admin scope.
    http.mount('/api/v1/identities', r, { scope: 'admin' });
    const uplink = site.get('uplink');
    uplink.subscribe(cloudTopics.identityCommands(config.cloud.topicPrefix, config.gateway.id), (_topic, payload) => {
      try {
        const cmd = cloudCommand.parse(JSON.parse(payload.toString('utf8')));
        component.revoke(cmd.id, 'cloud', cmd.reason);
      } catch (err) {
        site.opts.log.warn({ err: errorMessage(err) }, 'identity command from the cloud refused');
      }
    });
    return component;
  },
};
