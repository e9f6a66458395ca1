import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import type { DdiDevice, DdiDeviceOptions } from '../../sim/ota/ddi-device.js';
import { ReleaseSigner } from '../../sim/ota/release-signer.js';
import { ddiDevices, GROUP_SECRET, GW, manifest, otaSite, rollout, targetAuth, type Site } from '../helpers/ota-site.js';
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
    // Signed by the trusted key, but for another gateway (replayed from its topic), or expired, or without expiry.
    const elsewhere = manifest(s, '6.0.0', randomBytes(1000), { phases: [{ share: 100 }] });
    await s.publish({ ...elsewhere, target: { gateways: ['another-gw'], devices: ['sensor-*'] } });
    await s.publish({ ...manifest(s, '7.0.0', randomBytes(1000), { phases: [{ share: 100 }] }), issuedAt: Date.now() - 2000, expiresAt: Date.now() - 1000 });
    const noExpiry = manifest(s, '8.0.0', randomBytes(1000), { phases: [{ share: 100 }] });
    delete noExpiry.expiresAt;
    await s.publish(noExpiry);
    await waitFor('seven refusals reported', () => s.cloud.ledger.otaEvents.filter((e) => e.event.event === 'refused').length === 7, 10_000);
    const refusals = s.cloud.ledger.otaEvents.filter((e) => e.event.event === 'refused');
    const reasons = refusals.map((e) => e.event.result).sort();
    expect(reasons).toEqual(['bad-signature', 'expired', 'invalid', 'malformed', 'rollback', 'unsigned', 'wrong-gateway']);
    const named = refusals.find((e) => e.event.result === 'wrong-gateway')!.event.details as string[];
    expect(named[0]).toContain('another-gw');
    expect(named[0]).toContain(GW);
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
  it('refuses unsigned, badly signed and misdirected rollout commands from the cloud (counted); applies a signed one', async () => {
    const s = await site();
    const m = manifest(s, '2.0.0', randomBytes(50_000), { phases: [{ share: 100 }] });
    await s.publish(m);
    await waitFor('rollout running', () => rollout(s.gateway, 'sensor-fw-2.0.0')?.state === 'running', 10_000);
    const cloud = await mqtt.connectAsync(s.cloud.url, { reconnectPeriod: 0 });
    cleanup.push(() => cloud.endAsync(true));
    const topic = `outpost/v1/gw/${GW}/rollouts/sensor-fw-2.0.0/command`;
    const cmd = { gateway: GW, release: 'sensor-fw-2.0.0', action: 'abort', at: Date.now() };
    const forgery = ReleaseSigner.generate('cloud-2026');
    const attempts = [
      { action: 'abort', at: Date.now() }, // the old unsigned form
      forgery.signCommand(cmd), // an untrusted key under a trusted key's id
      s.signer.sign(cmd), // a trusted key's release signature: another signing context
      s.signer.signCommand({ ...cmd, gateway: 'another-gw' }), // replayed from another gateway's topic
      s.signer.signCommand({ ...cmd, release: 'sensor-fw-1.0.0' }), // from another release's topic
    ];
    for (const a of attempts) await cloud.publishAsync(topic, JSON.stringify(a), { qos: 1 });
    const count = async (outcome: string): Promise<number> => Number(new RegExp(`outpost_ota_commands_total\\{outcome="${outcome}"\\} (\\d+)`).exec(await s.gateway.metrics.text())?.[1] ?? 0);
    await waitFor('five commands refused', async () => (await count('unsigned')) + (await count('bad-signature')) + (await count('wrong-target')) === 5, 10_000);
    expect([await count('unsigned'), await count('bad-signature'), await count('wrong-target')]).toEqual([1, 2, 2]);
    expect(rollout(s.gateway, 'sensor-fw-2.0.0')?.state).toBe('running');
    await s.command('sensor-fw-2.0.0', 'pause');
    await waitFor('signed pause applied', () => rollout(s.gateway, 'sensor-fw-2.0.0')?.state === 'paused', 10_000);
    expect(await count('applied')).toBe(1);
  });

  it('the CLI makes a token and its hash, hashes a token and derives a device token from the group secret, secrets never on the command line', async () => {
    const cli = join(import.meta.dirname, '../../dist/runtime/cli.js');
    const run = async (args: string[], input?: string): Promise<string> => {
      const p = promisify(execFile)(process.execPath, [cli, 'ota', ...args], { encoding: 'utf8' });
      p.child.stdin!.end(input ?? '');
      return (await p).stdout;
    };
    const made = await run(['new-token', 'sensor-001']);
    const token = /token: (\S+)/.exec(made)![1]!;
    const hash = /sha256: ([0-9a-f]{64})/.exec(made)![1]!;
    expect(made).toContain(`"sensor-001": "${hash}"`);
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect((await run(['hash-token'], `${token}\n`)).trim()).toBe(hash);
    expect((await run(['device-token', 'sensor-001'], `${GROUP_SECRET}\n`)).trim()).toBe(targetAuth('sensor-001').slice('TargetToken '.length));
  });


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
    // Resumed from the cloud: a retained signed command, applied once.
    await s.command('sensor-fw-2.0.0', 'resume');
    await waitFor('rollout done after resume', () => rollout(s.gateway, 'sensor-fw-2.0.0')?.state === 'done', 15_000);
    expect((await post('/rollouts/sensor-fw-2.0.0/abort')).status).toBe(409);
    expect((await post('/rollouts/nope/abort')).status).toBe(404);
  });
});
