import { statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../runtime/config/load.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { SimSite } from '../../sim/site.js';
import { forwardAll } from '../helpers/site-gateway.js';
import { cloudBehindDeadLink } from '../helpers/cloud-behind-link.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { TEST_GROUP_SECRET, testIdentities } from '../helpers/broker-access.js';
import { gatewayApi } from '../helpers/api.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

describe('a full store', () => {
  it('acknowledges nothing it could not store, keeps running, and resumes by itself when space returns', async () => {
    const { dir, cloud, link } = await cloudBehindDeadLink('full', cleanup);
    const site = await SimSite.start({ meters: 0, boilers: 0, children: 3, childIntervalMs: 5, pollIntervalMs: 1000 });
    cleanup.push(() => site.stop());
    const config = parseConfig({
      gateway: { id: 'full-gw' },
      broker: { host: '127.0.0.1', port: 0 },
      identities: testIdentities,
      http: { host: '127.0.0.1', port: 0 },
      devices: site.devices(),
      rules: forwardAll,
      cloud: { url: link.url, backoff: { initialMs: 100, maxMs: 1000 } },
      // The database file may not grow past 1 MiB: SQLite fails writes as on a full disk.
      storage: { path: join(dir, 'outpost.db'), maxDbBytes: 1024 * 1024, quotaBytes: 64 * 1024 * 1024 },
    });
    const gw = await Gateway.start(config, { log: createLogger({ level: 'silent' }) });
    cleanup.push(() => gw.stop());
    site.startChildren(`mqtt://127.0.0.1:${gw.ports.broker}`, TEST_GROUP_SECRET);
    const failures = (): Promise<number> => gw.metrics.total('outpost_store_commit_failures_total');

    await waitFor('the store to be full', async () => (await failures()) > 0, 30_000, 50);
    // While full: the children keep publishing, commits keep failing, and nothing more is
    // acknowledged, for a whole second. The first failed commits are the large group commits; a
    // smaller one may still fit in the last free space of a page for a while (longer on a loaded
    // machine), so the second is looked for until the store is full for good.
    let ackedWhenFull = 0;
    await waitFor(
      'a second of refused commits with nothing acknowledged',
      async () => {
        ackedWhenFull = site.childAcked().length;
        const failed = await failures();
        await sleep(1000);
        return site.childAcked().length === ackedWhenFull && (await failures()) > failed;
      },
      30_000,
      0,
    );
    expect(site.children.reduce((n, c) => n + c.published, 0) * 3).toBeGreaterThan(ackedWhenFull);
    expect(gw.status().outbox.dropped).toBe(0);
    const api = gatewayApi(gw.ports.http, dir, undefined);
    const res = await api.fetch(`${api.base}/healthz`);
    expect(res.status).toBe(200);

    // Space returns when the outbox drains to the cloud: intake resumes without a restart.
    link.restore();
    await waitFor('intake to resume', () => site.childAcked().length > ackedWhenFull + 300, 30_000, 50);
    await site.stopChildren();
    await gw.stop({ drainMs: 20_000 });
    const s = gw.status().outbox;
    expect(s.depth).toBe(0);
    expect(s.dropped).toBe(0);
    expect(cloud.ledger.missing(site.childAcked())).toEqual([]);
    expect(cloud.ledger.uniqueFrom('full-gw')).toBe(s.appended);
    expect(statSync(join(dir, 'outpost.db')).size).toBeLessThanOrEqual(1024 * 1024);
  });
});
