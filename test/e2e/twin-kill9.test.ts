import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { SimCloud } from '../../sim/cloud.js';
import { SimTwinChild } from '../../sim/twin-child.js';
import { GatewayProcess } from '../helpers/gateway-process.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { deviceCredentials, testIdentities } from '../helpers/broker-access.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
});

const GW = 'fanout-gw';
const CHILDREN = 300;
const ROUNDS = 5;

describe('kill -9 and restarts during a configuration fan-out', () => {
  it('every child ends with the last configuration, and applies each desired version once, in order', { timeout: 180_000 }, async () => {
    const cloud = await SimCloud.start();
    cleanup.push(() => cloud.stop());
    const dir = mkdtempSync(join(tmpdir(), 'outpost-fanout-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const configFile = join(dir, 'site.yaml');
    writeFileSync(
      configFile,
      stringify({
        gateway: { id: GW },
        broker: { host: '127.0.0.1', port: 0, acceptUnknownDevices: true, limits: { maxConnectionsPerAddress: CHILDREN + 50, connectRate: { perSecond: 1000, burst: 2000 } } },
        identities: testIdentities,
        http: { host: '127.0.0.1', port: 0 },
        streams: [{ name: 'telemetry' }, { name: 'twins', priority: 1 }],
        cloud: { url: cloud.url, lingerMs: 100, backoff: { initialMs: 100, maxMs: 500 } },
        storage: { path: join(dir, 'o.db') },
      }),
    );
    const children = Array.from({ length: CHILDREN }, (_, i) => {
      const id = `c-${i}`;
      return new SimTwinChild({ url: '', deviceId: id, password: deviceCredentials(id).password, attributes: { model: i % 2 === 0 ? 'P-3.1' : 'V-2' } });
    });
    cleanup.push(() => Promise.all(children.map((c) => c.kill())));
    const pumps = children.filter((_, i) => i % 2 === 0);
    const valves = children.filter((_, i) => i % 2 === 1);

    let gw = await GatewayProcess.start(configFile);
    cleanup.push(() => gw.kill9());
    await Promise.all(children.map((c) => c.start(gw.brokerUrl)));
    for (let round = 1; round <= ROUNDS; round++) {
      // A new version of the configuration, and the power goes at a random moment of its fan-out.
      await cloud.twins.configure(GW, 'pumps', { version: round, target: 'model = "P-3.1"', desired: { maxSpeed: 20 + round, round } });
      await sleep(Math.floor(Math.random() * 60));
      await gw.kill9();
      await Promise.all(children.map((c) => c.kill()));
      gw = await GatewayProcess.start(configFile);
      cleanup.push(() => gw.kill9());
      await Promise.all(children.map((c) => c.start(gw.brokerUrl)));
    }
    const wrong = (): string[] => pumps.filter((c) => c.desired.maxSpeed !== 20 + ROUNDS || c.desired.round !== ROUNDS).map((c) => `${c.id}: ${JSON.stringify(c.desired)}`);
    await waitFor('every pump on the last configuration', () => wrong().length === 0, 60_000, 250, () => `${wrong().length} not yet, e.g. ${wrong().slice(0, 3).join('; ')}`);
    for (const v of valves) expect(v.version, v.id).toBe(0);
    for (const c of pumps) {
      const versions = c.applied.map((a) => a.version);
      expect(new Set(versions).size, `${c.id} applied ${JSON.stringify(c.applied)}`).toBe(versions.length);
      expect(versions, c.id).toEqual([...versions].sort((a, b) => a - b));
    }
    await waitFor('the count in the cloud', () => cloud.twins.configurationStatus.get(`${GW}\u0000pumps`)?.applied === CHILDREN / 2, 30_000);
    expect(cloud.twins.configurationStatus.get(`${GW}\u0000pumps`)).toMatchObject({ version: ROUNDS, targeted: CHILDREN / 2, failed: 0 });
    expect(await gw.terminate()).toBe(0);
  });
});
