import { z } from 'zod';
import { TrustedKeys } from '../../ota/trusted-keys.js';
import { ConfigError } from '../config/load.js';
import { cloudTopics, errorMessage, HttpError, signedManifestSchema, type Component, type Logger } from '../contracts/index.js';
import type { ConfigDeployer, Deployment } from '../deploy/deployer.js';
import { DeployRefused } from '../deploy/plan.js';
import { sendJson } from '../http/respond.js';
import type { Part } from './site.js';

/** A config sent by the cloud is signed under its own context, so no release or command signature passes for one. */
export const CONFIG_SIGNING_CONTEXT = 'outpost-config-v1\n';

/** The payload of a cloud config envelope (docs/topics.md). */
export const cloudConfigSchema = z.strictObject({
  gateway: z.string().min(1).max(128),
  /** Issue time, ms: a config older than the last one applied from the cloud is refused (replay). */
  issuedAt: z.number().int().positive(),
  /** The whole site config, YAML (or JSON). */
  text: z.string().min(1).max(200_000),
});

const textBody = z.strictObject({ text: z.string().min(1).max(1_000_000) });
const rollbackBody = z.strictObject({ version: z.number().int().positive().optional() });

/** A deployment's answer: the version, what applying it does, and where to watch it. */
function accepted(d: Deployment): Record<string, unknown> {
  return { version: d.version, plan: d.plan, status: `/api/v1/config/versions/${d.version}` };
}

/** Deployer errors as API answers: invalid (400, with the problems), refused or busy (409). */
function asHttp(err: unknown): unknown {
  if (err instanceof ConfigError) return new HttpError(400, 'invalid config; nothing changed', { problems: err.problems });
  if (err instanceof DeployRefused) return new HttpError(409, err.message);
  return err;
}

/**
 * Config as a deployment, on the API (`/api/v1/config`, admin scope) and from the cloud (signed
 * configs on `…/gw/{id}/config`). The deployer itself belongs to the gateway and outlives this
 * part, which a restart on a new config builds again.
 */
class ConfigComponent implements Component {
  readonly name = 'config';
  constructor(private readonly deployer: ConfigDeployer) {}
  start(): Promise<void> {
    return Promise.resolve();
  }
  stop(): Promise<void> {
    return Promise.resolve();
  }
  status(): Record<string, unknown> {
    return {};
  }
}

export const configPart: Part = {
  name: 'config',
  build(site) {
    const deployer = site.opts.deployer;
    if (!deployer) return undefined;
    const { config, log } = site.opts;
    const http = site.get('http');
    const r = http.router();
    r.get('/', (_req, res) => sendJson(res, 200, { ...deployer.status() }));
    r.get('/versions', (req, res) => {
      const raw = req.query.limit;
      const limit = Number(typeof raw === 'string' ? raw : 50);
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new HttpError(400, 'limit: expected an integer from 1 to 1000');
      sendJson(res, 200, { ...deployer.status(), versions: deployer.history.list(limit) });
    });
    r.get('/versions/:version', (req, res) => {
      const v = deployer.history.get(Number(req.params.version));
      if (!v) throw new HttpError(404, `no config version ${req.params.version}`);
      sendJson(res, 200, { ...v });
    });
    r.post('/check', http.jsonBody(textBody, { limitBytes: 1_100_000 }), (req, res) => {
      try {
        sendJson(res, 200, { valid: true, plan: deployer.check((req.body as z.output<typeof textBody>).text) });
      } catch (err) {
        throw asHttp(err);
      }
    });
    r.post('/', http.jsonBody(textBody, { limitBytes: 1_100_000 }), (req, res) => {
      let d: Deployment;
      try {
        d = deployer.deploy((req.body as z.output<typeof textBody>).text, 'api');
      } catch (err) {
        throw asHttp(err);
      }
      sendJson(res, d.plan.kind === 'unchanged' ? 200 : 202, accepted(d));
    });
    r.post('/rollback', http.jsonBody(rollbackBody), (req, res) => {
      let d: Deployment;
      try {
        d = deployer.rollback((req.body as z.output<typeof rollbackBody>).version);
      } catch (err) {
        throw asHttp(err);
      }
      sendJson(res, 202, accepted(d));
    });
    http.mount('/api/v1/config', r, { scope: 'admin' });

    const keys = config.deploy.trustedKeys ?? config.ota?.trustedKeys;
    const uplink = site.get('uplink');
    const topic = cloudTopics.config(config.cloud.topicPrefix, config.gateway.id);
    const clog = log.child({ component: 'config' });
    uplink.subscribe(topic, (_t, payload) => fromCloud(payload, keys ? new TrustedKeys(keys) : undefined, config.gateway.id, deployer, clog));
    return new ConfigComponent(deployer);
  },
};

/** A signed config from the cloud: verified, then deployed like any other (health checks and rollback included). */
function fromCloud(payload: Buffer, keys: TrustedKeys | undefined, gatewayId: string, deployer: ConfigDeployer, log: Logger): void {
  if (payload.length === 0) return; // a cleared retained message
  const refuse = (reason: string, message: string): void => log.warn({ reason }, `cloud config refused: ${message}`);
  if (!keys) return refuse('no-keys', 'no trusted keys (deploy.trustedKeys or ota.trustedKeys) to verify it with');
  let raw: unknown;
  try {
    raw = JSON.parse(payload.toString('utf8'));
  } catch {
    return refuse('malformed', 'not JSON');
  }
  const env = signedManifestSchema.safeParse(raw);
  if (!env.success) return refuse('malformed', 'not a signed envelope {payload, signatures}');
  if (!keys.verify(env.data, CONFIG_SIGNING_CONTEXT)) return refuse('bad-signature', `no valid signature by a trusted key (signed by: ${env.data.signatures.map((s) => s.keyId).join(', ')})`);
  let body: z.output<typeof cloudConfigSchema>;
  try {
    body = cloudConfigSchema.parse(JSON.parse(env.data.payload));
  } catch (err) {
    return refuse('invalid', errorMessage(err));
  }
  if (body.gateway !== gatewayId) return refuse('wrong-gateway', `for gateway ${body.gateway}`);
  if (body.issuedAt <= deployer.history.lastIssuedAt()) return; // applied (or refused) already: retained messages come again on every connection
  try {
    const d = deployer.deploy(body.text, 'cloud', { issuedAt: body.issuedAt });
    d.done.then(
      (o) => log.info({ version: o.version, status: o.status, reason: o.reason }, 'cloud config deployed'),
      (err: unknown) => log.error({ err: errorMessage(err) }, 'cloud config deployment failed'),
    );
  } catch (err) {
    refuse(err instanceof ConfigError ? 'invalid' : 'refused', err instanceof ConfigError ? err.problems.join('; ') : errorMessage(err));
  }
}
