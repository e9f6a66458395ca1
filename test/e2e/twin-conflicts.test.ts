import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../runtime/config/load.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { SimCloud } from '../../sim/cloud.js';
import { LinkProxy } from '../../sim/link-proxy.js';
import { SimTwinChild } from '../../sim/twin-child.js';
import { waitFor } from '../helpers/wait.js';
import { deviceCredentials, TEST_GROUP_SECRET } from '../helpers/broker-access.js';
import { gatewayApi, json, TEST_API_TOKENS, TEST_TOKENS } from '../helpers/api.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
});

const GW = 'conflict-gw';

describe('desired state edited on both sides during an outage', () => {
  it('resolves every leaf by version, then the edge on a tie, the same way on both sides; the child ends with the result', async () => {
    const cloud = await SimCloud.start();
    cleanup.push(() => cloud.stop());
    const link = await LinkProxy.start({ port: cloud.port });
    cleanup.push(() => link.close());
    const dir = mkdtempSync(join(tmpdir(), 'outpost-conflict-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const file = join(dir, 'site.yaml');
    writeFileSync(
      file,
      `
gateway: { id: ${GW} }
broker: { host: 127.0.0.1, port: 0 }
identities: { groups: [{ name: test, devices: '*', secret: ${TEST_GROUP_SECRET} }] }
http: { host: 127.0.0.1, port: 0, tokens: ${JSON.stringify(TEST_API_TOKENS)} }
devices: [{ id: pump-1, protocol: mqtt, model: P-3.1 }]
streams: [{ name: telemetry }, { name: twins, priority: 1 }]
cloud: { url: "${link.url}", lingerMs: 0, backoff: { initialMs: 100, maxMs: 500 } }
storage: { path: ${JSON.stringify(join(dir, 'o.db'))} }
`,
      { mode: 0o600 },
    );
    const gateway = await Gateway.start(await loadConfig(file), { log: createLogger({ level: 'silent' }), configFile: file });
    cleanup.push(() => gateway.stop());
    const child = new SimTwinChild({ url: `mqtt://127.0.0.1:${gateway.ports.broker}`, deviceId: 'pump-1', password: deviceCredentials('pump-1').password, attributes: { model: 'P-3.1' } });
    await child.start();
    cleanup.push(() => child.kill());
    const api = gatewayApi(gateway.ports.http, dir, TEST_TOKENS.operate);
    const edgeDirect = async (): Promise<Record<string, { value: unknown; version: number }>> => {
      const res = await api.fetch(`${api.base}/api/v1/devices/pump-1`);
      return ((await res.json()) as { direct: Record<string, { value: unknown; version: number }> }).direct;
    };

    // In step: the cloud sets three properties; the gateway and the child follow.
    await waitFor('link up', () => gateway.status().link === 'up');
    await cloud.twins.edit(GW, 'pump-1', { speed: 10, mode: 'eco', limit: 50 });
    await waitFor('the child has the cloud edit', () => child.desired.speed === 10 && child.desired.limit === 50);
    expect(await edgeDirect()).toEqual({ speed: { value: 10, version: 1 }, mode: { value: 'eco', version: 1 }, limit: { value: 50, version: 1 } });

    // The link goes down. The operator edits speed (once) and limit (twice) at the edge; the cloud
    // edits speed (once), mode (once) and limit (once) meanwhile.
    link.down();
    await waitFor('link down', () => gateway.status().link !== 'up');
    const edit = (patch: unknown): Promise<Response> => api.fetch(`${api.base}/api/v1/devices/pump-1/desired`, json(patch, 'PATCH'));
    expect((await edit({ speed: 15 })).status).toBe(200);
    expect((await edit({ limit: 40 })).status).toBe(200);
    expect((await edit({ limit: 45 })).status).toBe(200);
    await cloud.twins.edit(GW, 'pump-1', { speed: 25, mode: 'boost', limit: 60 });
    await waitFor('the child has the edge edits', () => child.desired.speed === 15 && child.desired.limit === 45);
    // Meanwhile a measured property flaps: 200 reports while the link is down.
    const reportsBefore = cloud.twins.received.get(`${GW}\u0000pump-1\u0000$twin/reported`) ?? 0;
    for (let i = 1; i <= 200; i++) await child.report({ temperature: i });

    // Resync. The policy: speed v2 on both sides, a tie -> the edge's 15; mode edited only by the
    // cloud -> boost (v2); limit v3 at the edge beats v2 in the cloud -> 45.
    link.restore();
    const expected = { speed: { value: 15, version: 2 }, mode: { value: 'boost', version: 2 }, limit: { value: 45, version: 3 } };
    let seen: unknown;
    await waitFor('the edge resolved', async () => isDeepStrictEqual((seen = await edgeDirect()), expected), 15_000, 100, () => `edge: ${JSON.stringify(seen)}`);
    await waitFor('the cloud resolved', () => isDeepStrictEqual(cloud.twins.desiredOf(GW, 'pump-1'), expected), 15_000, 100, () => JSON.stringify(cloud.twins.desiredOf(GW, 'pump-1')));
    await waitFor('the child runs the result', () => child.desired.mode === 'boost' && child.desired.speed === 15 && child.desired.limit === 45);
    // The child applied each version once, in order.
    const versions = child.applied.map((a) => a.version);
    expect(versions).toEqual([...versions].sort((a, b) => a - b));
    expect(new Set(versions).size).toBe(versions.length);
    // And the cloud heard what the child reports: the flapping property as its latest value, in a
    // few records (what waited in the outbox when the link went down, then the coalesced rest).
    await waitFor('reported in the cloud', () => {
      const reported = cloud.twins.reported.get(`${GW}\u0000pump-1`) as { mode?: string; temperature?: number } | undefined;
      return reported?.mode === 'boost' && reported.temperature === 200;
    });
    const reportsAfter = cloud.twins.received.get(`${GW}\u0000pump-1\u0000$twin/reported`) ?? 0;
    expect(reportsAfter - reportsBefore).toBeLessThanOrEqual(4);

    // A call from the cloud: the answer comes back as a record.
    await cloud.twins.call(GW, { id: 'call-1', device: 'pump-1', method: 'selftest', payload: { level: 2 }, timeoutMs: 5000 });
    await waitFor('the answer in the cloud', () => cloud.twins.callAnswers.has('call-1'));
    expect(cloud.twins.callAnswers.get('call-1')).toMatchObject({ method: 'selftest', status: 200, payload: { method: 'selftest', echo: { level: 2 } } });
    await cloud.twins.call(GW, { id: 'call-2', device: 'nobody', method: 'selftest' });
    await waitFor('the refusal in the cloud', () => cloud.twins.callAnswers.has('call-2'));
    expect(cloud.twins.callAnswers.get('call-2')).toMatchObject({ error: 'unknown-device' });
  }, 60_000);
});
