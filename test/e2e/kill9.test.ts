import Database from 'better-sqlite3';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { SimChildDevice } from '../../sim/child-device.js';
import { GatewayProcess } from '../helpers/gateway-process.js';
import { cloudBehindDeadLink } from '../helpers/cloud-behind-link.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { deviceCredentials, testIdentities } from '../helpers/broker-access.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** Kills in CI; `OUTPOST_KILLS=1000 npx vitest run test/e2e/kill9.test.ts` for the long run. */
const KILLS = Number(process.env.OUTPOST_KILLS ?? 50);

describe('kill -9 while the cloud is down', () => {
  it(`loses nothing a child was acknowledged for, across ${KILLS} kills mid-ingest`, { timeout: Math.max(120_000, KILLS * 3_000) }, async () => {
    const { dir, cloud, link } = await cloudBehindDeadLink('kill9', cleanup);
    const configFile = join(dir, 'site.yaml');
    const dbPath = join(dir, 'outpost.db');
    writeFileSync(
      configFile,
      stringify({
        gateway: { id: 'kill-gw' },
        broker: { host: '127.0.0.1', port: 0, acceptUnknownDevices: true },
        identities: testIdentities,
        http: { host: '127.0.0.1', port: 0 },
        rules: [{ id: 'all', type: 'filter', match: { device: '*', point: '*' } }],
        cloud: { url: link.url, backoff: { initialMs: 100, maxMs: 500 } },
        storage: { path: dbPath },
      }),
    );

    const acked: string[] = [];
    for (let k = 0; k < KILLS; k++) {
      const gw = await GatewayProcess.start(configFile);
      cleanup.push(() => gw.kill9());
      const children = [1, 2, 3].map(
        (i) => new SimChildDevice({ url: gw.brokerUrl, deviceId: `dev-${i}`, password: deviceCredentials(`dev-${i}`).password, intervalMs: 5, points: { a: { kind: 'counter' }, b: { kind: 'sine', amplitude: 1, periodMs: 1000 } }, maxInFlight: 20 }),
      );
      for (const c of children) c.start();
      await waitFor('children to be acknowledged', () => children.every((c) => c.acked.length > 4));
      // A random moment mid-ingest.
      await sleep(Math.floor(Math.random() * 200));
      await gw.kill9();
      for (const c of children) {
        await c.kill();
        acked.push(...c.acked);
      }
      expect(cloud.ledger.unique).toBe(0);
      // The store is consistent after every power cut.
      const db = new Database(dbPath, { readonly: true });
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
      db.close();
    }
    expect(acked.length).toBeGreaterThan(KILLS * 3 * 4);

    link.restore();
    const gw = await GatewayProcess.start(configFile);
    cleanup.push(() => gw.terminate());
    await waitFor('every acknowledged reading at the cloud', () => cloud.ledger.missing(acked).length === 0, 60_000, 200);
    expect(cloud.ledger.missing(acked)).toEqual([]);
    expect(cloud.ledger.orderViolations).toBe(0);
    console.log(`kill loop: ${KILLS} kills, ${acked.length} acknowledged readings, all at the cloud, ${cloud.ledger.duplicates} duplicates`);
    expect(await gw.terminate()).toBe(0);
  });
});
