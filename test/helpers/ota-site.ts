import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { configSchema, type SiteConfigInput } from '../../runtime/config/schema.js';
import { cloudTopics, type Clock } from '../../runtime/contracts/index.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { SimCloud } from '../../sim/cloud.js';
import { ArtifactOrigin } from '../../sim/ota/artifact-origin.js';
import { DdiDevice, groupTargetToken, type DdiDeviceOptions } from '../../sim/ota/ddi-device.js';
import { ReleaseSigner } from '../../sim/ota/release-signer.js';
import { TEST_API_TOKENS } from './api.js';

export const GW = 'ota-gw';
/** The update server's group secret at the test site: each device's target token derives from it. */
export const GROUP_SECRET = 'test-site-group-secret-0123456789abcdef';
/** The Authorization header of a device at the test site. */
export const targetAuth = (device: string): string => `TargetToken ${groupTargetToken(GROUP_SECRET, device)}`;
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

export interface Site {
  gateway: Gateway;
  cloud: SimCloud;
  origin: ArtifactOrigin;
  signer: ReleaseSigner;
  dir: string;
  server: string;
  publish(manifest: Record<string, unknown>): Promise<void>;
  /** Publishes a rollout command signed by the site's release signer (retained, as the cloud does). */
  command(release: string, action: 'pause' | 'resume' | 'abort', at?: number): Promise<void>;
}

/**
 * A gateway with OTA on a sim cloud, an artifact origin and a release signer; torn down by
 * `cleanup`. `ota` and `site.cloud` are merged into the config's sections.
 */
export async function otaSite(
  cleanup: Array<() => Promise<unknown>>,
  ota: Record<string, unknown> = {},
  site: { cloud?: Record<string, unknown>; clock?: Clock } = {},
): Promise<Site> {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-ota-'));
  cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
  const cloud = await SimCloud.start();
  cleanup.push(() => cloud.stop());
  const origin = await new ArtifactOrigin().start();
  cleanup.push(() => origin.stop());
  const signer = ReleaseSigner.generate('cloud-2026');
  const input: SiteConfigInput = {
    gateway: { id: GW },
    broker: { host: '127.0.0.1', port: 0 },
    http: { host: '127.0.0.1', port: 0, tokens: TEST_API_TOKENS },
    cloud: { url: cloud.url, lingerMs: 0, backoff: { initialMs: 100, maxMs: 500 }, ...site.cloud },
    storage: { path: join(dir, 'outpost.db') },
    ota: {
      trustedKeys: { 'cloud-2026': signer.publicKeyPem },
      cacheBytes: 64 * 1024 * 1024,
      server: { host: '127.0.0.1', port: 0, tenant: 'site-a', pollSeconds: 1, groupSecret: GROUP_SECRET },
      ...ota,
    },
  };
  const gateway = await Gateway.start(configSchema.parse(input), { log: createLogger({ level: 'silent' }), ...(site.clock ? { clock: site.clock } : {}) });
  cleanup.push(() => gateway.stop());
  const publisher = await mqtt.connectAsync(cloud.url, { reconnectPeriod: 0 });
  cleanup.push(() => publisher.endAsync(true));
  return {
    gateway,
    cloud,
    origin,
    signer,
    dir,
    server: `http://127.0.0.1:${gateway.ports.ota}/site-a`,
    publish: async (m) => {
      await publisher.publishAsync(cloudTopics.release('outpost', GW, String(m.release)), JSON.stringify(signer.sign(m)), { qos: 1, retain: true });
    },
    command: async (release, action, at = Date.now()) => {
      const signed = signer.signCommand({ gateway: GW, release, action, at });
      await publisher.publishAsync(`outpost/v1/gw/${GW}/rollouts/${release}/command`, JSON.stringify(signed), { qos: 1, retain: true });
    },
  };
}

export function manifest(s: Site, version: string, image: Buffer, rollout: Record<string, unknown>): Record<string, unknown> {
  return {
    release: `sensor-fw-${version}`,
    product: 'sensor-fw',
    version,
    issuedAt: Date.now(),
    expiresAt: Date.now() + 86_400_000,
    target: { gateways: [GW], devices: ['sensor-*'] },
    artifact: { name: `sensor-fw-${version}.swu`, url: s.origin.put(`/releases/sensor-fw-${version}.swu`, image), size: image.length, sha256: sha(image) },
    rollout,
  };
}

/** n sim DDI devices sensor-000… on version 1.0.0, each with its own target token, polling at least every 100 ms. */
export function ddiDevices(s: Site, n: number, cleanup: Array<() => Promise<unknown>>, extra: Partial<DdiDeviceOptions> = {}): DdiDevice[] {
  const ds = Array.from({ length: n }, (_, i) => new DdiDevice({ server: s.server, id: `sensor-${String(i).padStart(3, '0')}`, version: '1.0.0', authorization: targetAuth(`sensor-${String(i).padStart(3, '0')}`), maxPollMs: 100, ...extra }));
  for (const d of ds) {
    d.start();
    cleanup.push(() => d.stop());
  }
  return ds;
}

export const rollout = (g: Gateway, release: string): { state: string; phases: ReadonlyArray<{ devices: number; succeeded: number; failed: number }> } | undefined =>
  g.status().ota?.rollouts.find((r) => r.release === release);

