import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import type { DdiDevice, DdiDeviceOptions } from '../../sim/ota/ddi-device.js';
import { ReleaseSigner } from '../../sim/ota/release-signer.js';
import { ddiDevices, GW, manifest, otaSite, rollout, type Site } from '../helpers/ota-site.js';
import { waitFor } from '../helpers/wait.js';
import { gatewayApi, TEST_TOKENS } from '../helpers/api.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});
const site = (): Promise<Site> => otaSite(cleanup);
const devices = (s: Site, n: number, extra: Partial<DdiDeviceOptions> = {}): DdiDevice[] => ddiDevices(s, n, cleanup, extra);

describe('OTA: fetch once, roll out to the site', () => {
  it('fetches a release once across broken transfers, rolls it out in phases to every device, and reports to the cloud', async () => {
    const s = await site();
    const ds = devices(s, 20, { interruptAfter: 100_000 });
    await waitFor('devices known to the update server', async () => (await s.gateway.metrics.total('outpost_ddi_requests_total')) >= 40);
    const image = randomBytes(1_500_000);
    s.origin.breakNext(2, 400_000);
    const m = manifest(s, '2.0.0', image, { phases: [{ share: 10 }, { share: 50 }, { share: 100 }], failureThreshold: 0.2, maxRetries: 1 });
    await s.publish(m);
    await waitFor('rollout done', () => rollout(s.gateway, 'sensor-fw-2.0.0')?.state === 'done', 30_000, 50, () => JSON.stringify(rollout(s.gateway, 'sensor-fw-2.0.0')));
    expect(ds.map((d) => d.version)).toEqual(ds.map(() => '2.0.0'));
    expect(rollout(s.gateway, 'sensor-fw-2.0.0')!.phases.map((p) => [p.devices, p.succeeded])).toEqual([[2, 2], [8, 8], [10, 10]]);
    // The cloud link carried the image once although two transfers broke; 20 devices got it locally.
    expect(s.origin.bytesSent).toBe(image.length);
    expect(s.origin.requests.filter((r) => r.range !== undefined).map((r) => r.range)).toEqual(['bytes=400000-', 'bytes=800000-']);
    expect(ds.reduce((n, d) => n + d.bytesDownloaded, 0)).toBeGreaterThanOrEqual(20 * image.length);
    // Every device's success reached the cloud, through the outbox.
    await waitFor('success feedback at the cloud', () => s.cloud.ledger.otaEvents.filter((e) => e.event.event === 'closed' && e.event.result === 'success').length === 20);
    const gwEvents = s.cloud.ledger.otaEvents.filter((e) => e.device === GW).map((e) => e.event.event);
    expect(gwEvents).toEqual(expect.arrayContaining(['accepted', 'cached', 'started', 'phase', 'done']));
  });

  it('halts a bad release at its first phase: the other devices keep their version', async () => {
    const s = await site();
    const ds = devices(s, 20, { failRate: 1 });
    await waitFor('devices known', async () => (await s.gateway.metrics.total('outpost_ddi_requests_total')) >= 40);
    await s.publish(manifest(s, '2.0.0', randomBytes(200_000), { phases: [{ share: 10 }, { share: 100 }], failureThreshold: 0.2, maxRetries: 1 }));
    await waitFor('rollout halted', () => rollout(s.gateway, 'sensor-fw-2.0.0')?.state === 'halted', 30_000);
    const r = rollout(s.gateway, 'sensor-fw-2.0.0')!;
    expect(r.phases[0]!.failed).toBeGreaterThan(0);
    expect(r.phases[1]!.succeeded + r.phases[1]!.failed).toBe(0);
    // Two devices of phase 1 tried (each twice: maxRetries 1); the other 18 were never offered.
    expect(ds.filter((d) => d.outcomes.includes('failed')).length).toBeLessThanOrEqual(2);
    expect(ds.filter((d) => d.outcomes.length === 0)).toHaveLength(18);
    await waitFor('halt reported', () => s.cloud.ledger.otaEvents.some((e) => e.event.event === 'halted'));
  });

  it('refuses unsigned, badly signed and rolled-back releases, reporting why; nothing is fetched or written', async () => {
    const s = await site();
    const client = await mqtt.connectAsync(s.cloud.url, { reconnectPeriod: 0 });
    cleanup.push(() => client.endAsync(true));
    const good = manifest(s, '3.0.0', randomBytes(1000), { phases: [{ share: 100 }] });
    await s.publish(good);
    await waitFor('3.0.0 accepted', () => s.gateway.status().ota!.releases.some((r) => r.release === 'sensor-fw-3.0.0'));
    const topic = (r: string): string => `outpost/v1/gw/${GW}/releases/${r}`;
    const old = manifest(s, '2.9.0', randomBytes(1000), { phases: [{ share: 100 }] });
    await s.publish(old);
    await client.publishAsync(topic('unsigned'), JSON.stringify({ payload: JSON.stringify({ ...good, release: 'unsigned', version: '4.0.0' }) }), { qos: 1 });
    await client.publishAsync(topic('forged'), JSON.stringify(ReleaseSigner.generate('cloud-2026').sign({ ...good, release: 'forged', version: '5.0.0' })), { qos: 1 });
    await client.publishAsync(topic('garbage'), '{"payload": 42', { qos: 1 });
    await waitFor('four refusals reported', () => s.cloud.ledger.otaEvents.filter((e) => e.event.event === 'refused').length === 4, 10_000);
    const reasons = s.cloud.ledger.otaEvents.filter((e) => e.event.event === 'refused').map((e) => e.event.result).sort();
    expect(reasons).toEqual(['bad-signature', 'malformed', 'rollback', 'unsigned']);
    expect(s.gateway.status().ota!.releases.map((r) => r.release)).toEqual(['sensor-fw-3.0.0']);
    const cache = join(s.dir, 'ota-cache');
    expect(existsSync(cache)).toBe(true);
    expect(readdirSync(join(cache, 'blobs')).length + readdirSync(join(cache, 'partial')).length).toBeLessThanOrEqual(1);
    expect(s.origin.requests.map((r) => r.path)).toEqual(['/releases/sensor-fw-3.0.0.swu']);
  });

  it('serves the children while the cloud is down', async () => {
    const s = await site();
    const image = randomBytes(300_000);
    await s.publish(manifest(s, '2.0.0', image, { phases: [{ share: 50 }, { share: 100 }] }));
    await waitFor('release cached', () => s.gateway.status().ota!.releases.some((r) => r.state === 'ready'), 15_000, 25, () => JSON.stringify(s.gateway.status().ota));
    await s.cloud.stop();
    await s.origin.stop();
    const ds = devices(s, 6);
    await waitFor('rollout done with the cloud down', () => rollout(s.gateway, 'sensor-fw-2.0.0')?.state === 'done', 30_000);
    expect(ds.every((d) => d.version === '2.0.0')).toBe(true);
  });
});

describe('OTA control: local API, CLI and cloud commands', () => {
  it('pauses, resumes and aborts a rollout over the local API and from the cloud; the CLI shows a bar per phase', async () => {
    const s = await site();
    const client = gatewayApi(s.gateway.ports.http, s.dir, TEST_TOKENS.operate);
    const api = `${client.base}/api/v1/ota`;
    const post = async (path: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> => {
      const res = await client.fetch(`${api}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: body === undefined ? '' : JSON.stringify(body) });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    // A release given locally, signed as the cloud would.
    const m = manifest(s, '2.0.0', randomBytes(50_000), { phases: [{ share: 50, waitMs: 0 }, { share: 100 }] });
    expect((await post('/releases', s.signer.sign(m))).status).toBe(200);
    const bad = await post('/releases', { payload: '{}', signatures: [{ keyId: 'cloud-2026', sig: 'AAAA' }] });
    expect([bad.status, bad.body.reason]).toEqual([400, 'bad-signature']);
    await waitFor('rollout running', () => rollout(s.gateway, 'sensor-fw-2.0.0')?.state === 'running', 10_000);
    expect((await post('/rollouts/sensor-fw-2.0.0/pause')).body.state).toBe('paused');
    expect((await post('/rollouts/sensor-fw-2.0.0/pause')).status).toBe(409);
    const ds = devices(s, 4);
    await new Promise((r) => setTimeout(r, 500));
    expect(ds.every((d) => d.version === '1.0.0')).toBe(true);
    // The CLI as a user runs it (asynchronously: the gateway lives in this process).
    const cli = join(import.meta.dirname, '../../dist/runtime/cli.js');
    const { stdout: shown } = await promisify(execFile)(process.execPath, [cli, 'ota', 'status', '--url', client.base, '--ca', join(s.dir, 'http.crt')], {
      encoding: 'utf8',
      env: { ...process.env, OUTPOST_TOKEN: TEST_TOKENS.read },
    });
    expect(shown).toContain('sensor-fw-2.0.0 (2.0.0): paused');
    expect(shown).toMatch(/phase 1 \( 50 %\) \[[.#]+\]/);
    // Resumed from the cloud: a retained command, applied once.
    const cloud = await mqtt.connectAsync(s.cloud.url, { reconnectPeriod: 0 });
    cleanup.push(() => cloud.endAsync(true));
    await cloud.publishAsync(`outpost/v1/gw/${GW}/rollouts/sensor-fw-2.0.0/command`, JSON.stringify({ action: 'resume', at: Date.now() }), { qos: 1, retain: true });
    await waitFor('rollout done after resume', () => rollout(s.gateway, 'sensor-fw-2.0.0')?.state === 'done', 15_000);
    expect((await post('/rollouts/sensor-fw-2.0.0/abort')).status).toBe(409);
    expect((await post('/rollouts/nope/abort')).status).toBe(404);
  });
});
