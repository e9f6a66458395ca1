import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../runtime/config/load.js';
import type { SiteConfigInput } from '../../runtime/config/schema.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { SimSite, type SiteSpec } from '../../sim/site.js';
import { TEST_GROUP_SECRET, testIdentities } from './broker-access.js';
import { TEST_API_TOKENS } from './api.js';

/** Every reading of every device goes to the cloud: what the loss tests need to count. */
export const forwardAll: SiteConfigInput['rules'] = [{ id: 'all', type: 'filter', match: { device: '*', point: '*' } }];

export interface SiteAndGateway {
  readonly site: SimSite;
  readonly gateway: Gateway;
  readonly dir: string;
  close(): Promise<void>;
}

/** A simulated site wired to an in-process gateway whose uplink goes to `cloudUrl`. */
export async function startSiteAndGateway(
  cloudUrl: string,
  spec: SiteSpec,
  rules: SiteConfigInput['rules'] = forwardAll,
  cloud: Partial<SiteConfigInput['cloud']> = {},
  streams?: SiteConfigInput['streams'],
): Promise<SiteAndGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-e2e-'));
  const site = await SimSite.start(spec);
  const config = parseConfig({
    gateway: { id: 'e2e-gw' },
    // The simulated children are listed; other test devices (authenticated all the same) are welcome.
    broker: { host: '127.0.0.1', port: 0, acceptUnknownDevices: true },
    identities: testIdentities,
    http: { host: '127.0.0.1', port: 0, tokens: TEST_API_TOKENS },
    devices: site.devices(),
    rules,
    ...(streams ? { streams } : {}),
    cloud: { url: cloudUrl, batchSize: 100, backoff: { initialMs: 100, maxMs: 1000 }, ...cloud },
    storage: { path: join(dir, 'outpost.db') },
  });
  const gateway = await Gateway.start(config, { log: createLogger({ level: process.env.OUTPOST_TEST_LOG === undefined ? 'silent' : 'debug', destination: process.env.OUTPOST_TEST_LOG }) });
  site.startChildren(`mqtt://127.0.0.1:${gateway.ports.broker}`, TEST_GROUP_SECRET);
  return {
    site,
    gateway,
    dir,
    close: async () => {
      await site.stop();
      await gateway.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
