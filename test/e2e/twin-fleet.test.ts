import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../runtime/config/load.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { SimCloud } from '../../sim/cloud.js';
import { SimTwinChild } from '../../sim/twin-child.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { deviceCredentials, TEST_GROUP_SECRET } from '../helpers/broker-access.js';
import { TEST_API_TOKENS } from '../helpers/api.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
});

const GW = 'fleet-gw';
/** Children and how long they take to join; `OUTPOST_FLEET=…` for other sizes. */
const N = Number(process.env.OUTPOST_FLEET ?? 2000);
const JOIN_MS = Number(process.env.OUTPOST_FLEET_JOIN_MS ?? 60_000);
const FAMILIES = ['P-3.1', 'V-2', 'M-7', 'S-1'] as const;

describe(`a fleet of ${N} children joining over ${JOIN_MS / 1000} s`, () => {
  it('one cloud message per configuration reaches every member of its family, those that join later and those that were offline included; the higher priority wins where two overlap', { timeout: JOIN_MS + 120_000 }, async () => {
    const cloud = await SimCloud.start();
    cleanup.push(() => cloud.stop());
    const dir = mkdtempSync(join(tmpdir(), 'outpost-fleet-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const file = join(dir, 'site.yaml');
    writeFileSync(
      file,
      `
gateway: { id: ${GW} }
broker:
  host: 127.0.0.1
  port: 0
  acceptUnknownDevices: true
  limits: { maxConnectionsPerAddress: ${N + 100}, connectRate: { perSecond: 500, burst: 1000 } }
identities: { groups: [{ name: test, devices: '*', secret: ${TEST_GROUP_SECRET} }] }
http: { host: 127.0.0.1, port: 0, tokens: ${JSON.stringify(TEST_API_TOKENS)} }
streams: [{ name: telemetry }, { name: twins, priority: 1 }]
cloud: { url: "${cloud.url}", lingerMs: 200 }
storage: { path: ${JSON.stringify(join(dir, 'o.db'))} }
`,
      { mode: 0o600 },
    );
    const gateway = await Gateway.start(await loadConfig(file), { log: createLogger({ level: 'silent' }), configFile: file });
    cleanup.push(() => gateway.stop());
    const url = `mqtt://127.0.0.1:${gateway.ports.broker}`;
    const children = Array.from({ length: N }, (_, i) => {
      const id = `dev-${String(i).padStart(5, '0')}`;
      return new SimTwinChild({ url, deviceId: id, password: deviceCredentials(id).password, attributes: { model: FAMILIES[i % 4]!, firmware: '1.0.0' } });
    });
    cleanup.push(() => Promise.all(children.map((c) => c.kill())));
    const family = (i: number): string => FAMILIES[i % 4]!;

    // The first 30 % join at once; a tenth of them goes offline before the configurations arrive.
    const early = Math.floor(N * 0.3);
    await Promise.all(children.slice(0, early).map((c) => c.start()));
    const away = children.slice(0, early).filter((_, i) => i % 10 === 0);
    await Promise.all(away.map((c) => c.kill()));
    await waitFor('early children in the inventory', () => gateway.status().devices.count >= early + 1, 30_000);

    // Two configurations, one message each: pumps at max speed 20 (priority 10); pumps and valves
    // at 30 with a report period (priority 5): the pumps' maxSpeed is 20, the valves' 30.
    await cloud.twins.configure(GW, 'pumps', { version: 1, target: 'model = "P-3.1"', desired: { maxSpeed: 20 }, priority: 10 });
    await cloud.twins.configure(GW, 'moving-parts', { version: 1, target: 'model in ["P-3.1", "V-2"]', desired: { maxSpeed: 30, reportS: 60 }, priority: 5 });

    // The rest join over the join time, in steps; the offline ones come back halfway.
    const rest = children.slice(early);
    const steps = 20;
    for (let s = 0; s < steps; s++) {
      const part = rest.slice(Math.floor((s * rest.length) / steps), Math.floor(((s + 1) * rest.length) / steps));
      await Promise.all(part.map((c) => c.start()));
      if (s === steps / 2) await Promise.all(away.map((c) => c.start()));
      await sleep(JOIN_MS / steps);
    }

    const want = (i: number): Record<string, unknown> => (family(i) === 'P-3.1' ? { maxSpeed: 20, reportS: 60 } : family(i) === 'V-2' ? { maxSpeed: 30, reportS: 60 } : {});
    const wrong = (): string[] =>
      children.flatMap((c, i) => {
        const w = want(i);
        const ok = Object.keys(w).length === 0 ? c.version === 0 : JSON.stringify(c.desired) === JSON.stringify(w);
        return ok ? [] : [`${c.id} (${family(i)}): ${JSON.stringify(c.desired)} v${c.version}`];
      });
    await waitFor('every child runs what its family is configured with', () => wrong().length === 0, 60_000, 250, () => `${wrong().length} wrong, e.g. ${wrong().slice(0, 3).join('; ')}`);

    // Each child applied each version once, in order (a retained document and a patch of the same
    // version never both apply).
    for (const c of children) {
      const v = c.applied.map((a) => a.version);
      expect(new Set(v).size, c.id).toBe(v.length);
      expect(v, c.id).toEqual([...v].sort((a, b) => a - b));
    }
    // The gateway counts every pump applied, and tells the cloud.
    await waitFor(
      'the counts in the cloud',
      () => {
        const p = cloud.twins.configurationStatus.get(`${GW}\u0000pumps`);
        return p?.targeted === N / 4 && p.applied === N / 4;
      },
      30_000,
      250,
      () => JSON.stringify([...cloud.twins.configurationStatus]),
    );
    expect(cloud.twins.configurationStatus.get(`${GW}\u0000moving-parts`)).toMatchObject({ targeted: N / 2, applied: N / 2, pending: 0, failed: 0 });
    // Two messages from the cloud for the whole fleet, not one per device.
    expect(cloud.twins.sent.messages).toBe(2);
    // The inventory reached the cloud: every child and the gateway.
    await waitFor('the inventory in the cloud', () => [...cloud.twins.inventory.keys()].filter((k) => k.startsWith(`${GW}\u0000`)).length === N + 1, 30_000);
    console.log(`fleet: ${N} children, ${cloud.twins.sent.messages} cloud messages (${cloud.twins.sent.bytes} bytes) for the configurations, ${cloud.ledger.records} records up`);
  });
});
