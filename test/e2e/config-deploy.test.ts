import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import bcrypt from 'bcryptjs';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfigText } from '../../runtime/config/load.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { SimChildDevice } from '../../sim/child-device.js';
import { cloudTopics, localTopics } from '../../runtime/contracts/index.js';
import type { ConfigVersion } from '../../runtime/deploy/history.js';
import { CONFIG_SIGNING_CONTEXT } from '../../runtime/parts/config.js';
import { SimCloud } from '../../sim/cloud.js';
import { profiles, SimModbusSlave } from '../../sim/modbus-slave.js';
import { ReleaseSigner } from '../../sim/ota/release-signer.js';
import { pointEntries } from '../../sim/site.js';
import { gatewayApi, TEST_API_TOKENS, TEST_TOKENS } from '../helpers/api.js';
import { deviceCredentials, testIdentities } from '../helpers/broker-access.js';
import { CLI, GatewayProcess } from '../helpers/gateway-process.js';
import { sleep, waitFor } from '../helpers/wait.js';

const exec = promisify(execFile);
const cleanup: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function outpost(env: NodeJS.ProcessEnv, ...args: string[]): Promise<Run> {
  try {
    const r = await exec(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, timeout: 150_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

describe('configuration as a deployment', () => {
  it('validates, applies only what changed, rolls back a config that fails its health checks, keeps versions, and takes signed configs from the cloud', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-deploy-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const cloud = await SimCloud.start({ credentials: { username: 'deploy-gw', password: 'right-secret' } });
    cleanup.push(() => cloud.stop());
    const plc = await SimModbusSlave.start({ points: profiles.plc() });
    cleanup.push(() => plc.stop());
    const signer = ReleaseSigner.generate('cfg-key');

    const base = {
      gateway: { id: 'deploy-gw' },
      http: { host: '127.0.0.1', port: 0, tokens: TEST_API_TOKENS },
      broker: { host: '127.0.0.1', port: 0 },
      identities: testIdentities,
      devices: [
        { id: 'plc-1', protocol: 'modbus-tcp', host: plc.host, port: plc.port, pollIntervalMs: 200, points: pointEntries(plc.points) },
        { id: 'pump-1', protocol: 'mqtt' },
      ],
      rules: [{ id: 'all', type: 'filter', match: { device: '*', point: '*' } }],
      cloud: { url: cloud.url, username: 'deploy-gw', password: 'right-secret', lingerMs: 0, backoff: { initialMs: 100, maxMs: 500 } },
      storage: { path: join(dir, 'outpost.db') },
      deploy: { healthWindowMs: 4000, trustedKeys: { 'cfg-key': signer.publicKeyPem } },
    };
    type Base = typeof base;
    const write = (name: string, cfg: unknown): string => {
      const file = join(dir, name);
      writeFileSync(file, `${JSON.stringify(cfg, null, 2)}\n`, { mode: 0o600 });
      return file;
    };
    const file = write('site.yaml', base);
    const gw = await GatewayProcess.start(file);
    cleanup.push(() => gw.terminate());
    const env = { OUTPOST_URL: `https://127.0.0.1:${gw.httpPort}`, OUTPOST_CA: join(dir, 'http.crt'), OUTPOST_TOKEN: TEST_TOKENS.admin };
    const api = gatewayApi(gw.httpPort, dir);
    const status = async (): Promise<{ link: string; config: { version?: number }; drivers: Array<{ name: string; connected?: boolean; devices?: Array<{ device: string; polls: number }> }> }> =>
      (await (await api.fetch(`${api.base}/api/v1/status`)).json()) as never;
    const versions = async (): Promise<ConfigVersion[]> => ((await (await api.fetch(`${api.base}/api/v1/config/versions`)).json()) as { versions: ConfigVersion[] }).versions;
    const connects = async (): Promise<number> => {
      const text = await (await api.fetch(`${api.base}/metrics`)).text();
      return Number(/^outpost_uplink_connects_total (\d+)/m.exec(text)?.[1] ?? NaN);
    };

    // A child that counts its own connections: an in-place change must not drop it.
    let childConnects = 0;
    const child = mqtt.connect(`mqtt://127.0.0.1:${gw.brokerPort}`, { ...deviceCredentials('pump-1'), reconnectPeriod: 200 });
    child.on('connect', () => childConnects++);
    cleanup.push(() => child.endAsync(true));
    let n = 0;
    const ticker = setInterval(() => {
      if (child.connected) child.publish(localTopics.telemetry('pump-1'), JSON.stringify({ id: `m${n}`, points: { flow: n++ } }), { qos: 1 });
    }, 50);
    cleanup.push(() => Promise.resolve(clearInterval(ticker)));

    await waitFor('link up and readings of both devices at the cloud', async () => (await status()).link === 'up' && (cloud.ledger.byDevice.get('plc-1') ?? 0) > 0 && (cloud.ledger.byDevice.get('pump-1') ?? 0) > 0, 20_000);
    expect((await versions()).map((v) => [v.version, v.source, v.status])).toEqual([[1, 'file', 'active']]);

    // 1. An invalid config changes nothing and says why.
    const bad = write('bad.yaml', { ...base, rules: [{ id: 'x', type: 'filter', match: { device: '*' } }], cloud: { ...base.cloud, batchSize: 0 } });
    const refused = await outpost(env, 'config', 'deploy', bad);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('invalid config; nothing changed');
    expect(refused.stderr).toContain('cloud.batchSize');
    expect(await versions()).toHaveLength(1);
    expect((await outpost({}, 'config', 'check', bad)).code).toBe(1);
    expect((await outpost({}, 'config', 'check', file)).stdout).toContain('valid');

    // 2. Rules and a Modbus device's poll interval: applied in place; the child and the cloud link stay connected.
    const connectsBefore = await connects();
    const childBefore = childConnects;
    const inPlace: Base = {
      ...base,
      devices: [{ ...base.devices[0]!, pollIntervalMs: 100 }, base.devices[1]!],
      rules: [...base.rules, { id: 'flows', type: 'filter', match: { device: 'pump-1', point: 'flow' } }],
    } as Base;
    const deployed = await outpost(env, 'config', 'deploy', write('v2.yaml', inPlace));
    expect(deployed.stderr).toBe('');
    expect(deployed.stdout).toContain('config version 2: in place (devices, rules changed); drivers of plc-1 restart');
    expect(deployed.stdout).toContain('config version 2 active');
    expect(deployed.code).toBe(0);
    await sleep(500);
    expect(await connects()).toBe(connectsBefore);
    expect(childConnects).toBe(childBefore);
    expect((await status()).config.version).toBe(2);

    // 3. New cloud credentials the broker refuses: every part restarts, the link fails, the version is
    //    rolled back within the health window and the link comes back on the old credentials.
    const wrong = write('v3.yaml', { ...inPlace, cloud: { ...base.cloud, password: 'wrong-secret' } });
    const t0 = Date.now();
    const failed = await outpost(env, 'config', 'deploy', wrong);
    const rollbackMs = Date.now() - t0;
    expect(failed.stdout).toContain('every part restarts (cloud changed)');
    expect(failed.stderr).toMatch(/config version 3 failed: the cloud broker refused the connection \(CONNACK 4/);
    expect(failed.code).toBe(1);
    expect(rollbackMs).toBeLessThan(4000 + 20_000);
    await waitFor('link up again on the version before', async () => (await status()).link === 'up', 15_000);
    const afterFail = await versions();
    expect(afterFail.map((v) => [v.version, v.status])).toEqual([
      [3, 'failed'],
      [2, 'active'],
      [1, 'superseded'],
    ]);

    // 4. A Modbus device moved to an address where nothing answers: its driver restarts in place and,
    //    as it cannot connect, the version is rolled back; polling resumes on the old address.
    const dead = write('v4.yaml', { ...inPlace, devices: [{ ...inPlace.devices[0]!, port: 1 }, base.devices[1]!] });
    const deadRun = await outpost(env, 'config', 'deploy', dead);
    expect(deadRun.code).toBe(1);
    expect(deadRun.stderr).toMatch(/config version 4 failed: not healthy within 4000 ms: modbus:.* \(plc-1\) is not connected/);
    const polls = async (): Promise<number> => (await status()).drivers.flatMap((d) => d.devices ?? []).find((d) => d.device === 'plc-1')?.polls ?? 0;
    const p0 = await polls();
    await waitFor('plc-1 polled again', async () => (await polls()) > p0 + 3, 10_000);

    // 5. History and rollback from the CLI: back to version 1 (the file's), as a new version.
    const history = await outpost(env, 'config', 'history');
    expect(history.code).toBe(0);
    expect(history.stdout).toMatch(/VERSION\s+STATUS\s+SOURCE/);
    expect(history.stdout).toMatch(/4\s+failed\s+api/);
    const rolled = await outpost(env, 'config', 'rollback', '1');
    expect(rolled.code).toBe(0);
    expect(rolled.stdout).toContain('config version 5 (a rollback)');
    expect(rolled.stdout).toContain('config version 5 active');
    const v5 = (await versions())[0]!;
    expect(v5).toMatchObject({ version: 5, source: 'rollback', status: 'active', sha256: (await versions()).find((v) => v.version === 1)!.sha256 });

    // 6. A signed config from the cloud is deployed; a forged one and a replayed one are not.
    const fromCloud = { ...base, rules: [...base.rules, { id: 'cloud-rule', type: 'filter', match: { device: 'plc-1', point: '*' } }] };
    const envelope = (cfg: unknown, issuedAt: number, key = signer): string => {
      const payload = JSON.stringify({ gateway: 'deploy-gw', issuedAt, text: JSON.stringify(cfg) });
      return JSON.stringify({ payload, signatures: [{ keyId: 'cfg-key', sig: key.signText(payload, CONFIG_SIGNING_CONTEXT) }] });
    };
    const forger = ReleaseSigner.generate('cfg-key');
    await cloud.publish(cloudTopics.config('outpost', 'deploy-gw'), envelope(fromCloud, Date.now(), forger), false);
    await sleep(1000);
    expect((await versions())[0]!.version).toBe(5);
    const issuedAt = Date.now();
    await cloud.publishRetained(cloudTopics.config('outpost', 'deploy-gw'), envelope(fromCloud, issuedAt));
    await waitFor('the cloud config active', async () => (await versions())[0]?.status === 'active' && (await versions())[0]?.source === 'cloud', 15_000);
    expect((await versions())[0]).toMatchObject({ version: 6, issuedAt });

    // 7. kill -9 while a version is in its health window (its cloud URL answers nothing, so the
    //    link cannot come back): the next start runs the last good version and marks it failed.
    const slow = write('v7.yaml', { ...fromCloud, cloud: { ...base.cloud, url: 'mqtt://127.0.0.1:1' }, deploy: { ...base.deploy, healthWindowMs: 60_000 } });
    await waitFor('link up', async () => (await status()).link === 'up', 15_000);
    const pending = await outpost(env, 'config', 'deploy', slow, '--no-wait');
    expect(pending.code).toBe(0);
    await waitFor('version 7 pending with its parts restarted', async () => (await versions().catch(() => []))[0]?.status === 'pending' && (await status()).link !== 'up', 10_000);
    await gw.kill9();
    const again = await GatewayProcess.start(file);
    cleanup.push(() => again.terminate());
    const api2 = gatewayApi(again.httpPort, dir);
    const after = ((await (await api2.fetch(`${api2.base}/api/v1/config/versions`)).json()) as { version: number; versions: ConfigVersion[] });
    expect(after.versions.find((v) => v.version === 7)).toMatchObject({ status: 'failed', reason: expect.stringContaining('stopped before its health checks passed') as unknown });
    expect(after.version).toBe(6);
    expect(after.versions[0]!.version).toBe(7);
  }, 240_000);

  it('a restart on a deployed config keeps the ports, brings Node-RED back and loses no reading of a child that keeps publishing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-deploy-nr-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const cloud = await SimCloud.start();
    cleanup.push(() => cloud.stop());
    const input = {
      gateway: { id: 'restart-gw' },
      http: { host: '127.0.0.1', port: 0, tokens: TEST_API_TOKENS, admin: { username: 'admin', passwordHash: bcrypt.hashSync('s3cret', 8) } },
      broker: { host: '127.0.0.1', port: 0 },
      identities: testIdentities,
      nodeRed: { enabled: true },
      devices: [{ id: 'pump-1', protocol: 'mqtt' }],
      rules: [{ id: 'all', type: 'filter', match: { device: '*', point: '*' } }],
      cloud: { url: cloud.url, lingerMs: 0, backoff: { initialMs: 100, maxMs: 500 } },
      storage: { path: join(dir, 'outpost.db') },
      deploy: { healthWindowMs: 10_000 },
    };
    const text = JSON.stringify(input);
    const gateway = await Gateway.start(parseConfigText(text), { log: createLogger({ level: 'silent' }), configText: text });
    cleanup.push(() => gateway.stop());
    const ports = gateway.ports;
    const api = gatewayApi(ports.http, dir);
    const child = new SimChildDevice({ url: `mqtt://127.0.0.1:${ports.broker}`, deviceId: 'pump-1', password: deviceCredentials('pump-1').password, intervalMs: 10, points: { a: { kind: 'counter' } } });
    child.start();
    cleanup.push(() => child.kill());
    await waitFor('readings flowing', () => child.acked.length > 50, 15_000);

    const d = gateway.deployer.deploy(JSON.stringify({ ...input, cloud: { ...input.cloud, keepaliveS: 20 } }), 'api');
    expect(d.plan).toMatchObject({ kind: 'restart', why: 'cloud changed' });
    expect(await d.done).toMatchObject({ version: 2, status: 'active' });
    expect(gateway.ports).toEqual(ports);
    expect((await api.fetch(`${api.base}/red/`)).status).toBe(200);
    const before = child.acked.length;
    await waitFor('readings acknowledged after the restart', () => child.acked.length > before + 50, 15_000);
    await child.stop();
    await waitFor('every acknowledged reading at the cloud', () => cloud.ledger.missing(child.acked).length === 0, 15_000, 100, () => `${cloud.ledger.missing(child.acked).length} of ${child.acked.length} missing`);
    console.log(`restart on a deployed config: ${child.acked.length} readings acknowledged across it, 0 missing, ${cloud.ledger.duplicates} duplicates`);
  }, 60_000);
});
