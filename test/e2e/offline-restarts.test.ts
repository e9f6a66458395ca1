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

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const RESTARTS = 6;

describe('restarts while offline', () => {
  it(`delivers everything after ${RESTARTS} restarts with the cloud unreachable, in per-source order, with the accounting intact`, async () => {
    const { dir, cloud, link } = await cloudBehindDeadLink('offline', cleanup);
    const site = await SimSite.start({ meters: 1, boilers: 1, children: 3, childIntervalMs: 10, pollIntervalMs: 100 });
    cleanup.push(() => site.stop());
    const config = parseConfig({
      gateway: { id: 'offline-gw' },
      broker: { host: '127.0.0.1', port: 0 },
      identities: testIdentities,
      http: { host: '127.0.0.1', port: 0 },
      devices: site.devices(),
      rules: forwardAll,
      cloud: { url: link.url, backoff: { initialMs: 100, maxMs: 1000 } },
      storage: { path: join(dir, 'outpost.db') },
    });
    const log = createLogger({ level: 'silent' });

    let queued = 0;
    for (let i = 0; i < RESTARTS; i++) {
      const gw = await Gateway.start(config, { log });
      const url = `mqtt://127.0.0.1:${gw.ports.broker}`;
      if (i === 0) site.startChildren(url, TEST_GROUP_SECRET);
      else for (const c of site.children) c.start(url);
      await sleep(300 + Math.floor(Math.random() * 300));
      await site.stopChildren();
      await gw.stop();
      const s = gw.status().outbox;
      expect(s.depth).toBeGreaterThan(queued);
      queued = s.depth;
      expect(s.delivered).toBe(0);
    }
    expect(cloud.ledger.unique).toBe(0);

    link.restore();
    const gw = await Gateway.start(config, { log });
    cleanup.push(() => gw.stop());
    await waitFor('the backlog to drain', () => gw.status().outbox.depth === 0, 20_000);
    await gw.stop();
    const s = gw.status().outbox;
    // Counters persist across restarts: everything ever produced is accounted for. The last run
    // kept polling the Modbus slaves after the backlog drained; what it took in its last moments
    // may still be queued after its stop's drain time on a loaded machine, and is counted there.
    expect(s.appended).toBeGreaterThanOrEqual(queued);
    expect(s.delivered).toBeGreaterThanOrEqual(queued);
    expect(s.delivered + s.depth).toBe(s.appended);
    expect(cloud.ledger.uniqueFrom('offline-gw')).toBe(s.delivered);
    expect(cloud.ledger.missing(site.childAcked())).toEqual([]);
    expect(cloud.ledger.orderViolations).toBe(0);
    for (const d of ['meter-1', 'boiler-1', 'pump-1', 'pump-2', 'pump-3']) expect(cloud.ledger.byDevice.get(d) ?? 0).toBeGreaterThan(0);
  });
});
