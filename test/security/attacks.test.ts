import Database from 'better-sqlite3';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../runtime/config/load.js';
import type { SiteConfigInput } from '../../runtime/config/schema.js';
import { cloudTopics, deriveDeviceKey } from '../../runtime/contracts/index.js';
import { Gateway } from '../../runtime/gateway.js';
import { hashPassword } from '../../runtime/identity/passwords.js';
import { createLogger } from '../../runtime/logger.js';
import { SimCloud } from '../../sim/cloud.js';
import { profiles, SimModbusSlave } from '../../sim/modbus-slave.js';
import { pointEntries } from '../../sim/site.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { attemptConnect } from '../helpers/broker-access.js';
import { gatewayApi, json, TEST_API_TOKENS, TEST_TOKENS } from '../helpers/api.js';
import { CLI } from '../helpers/gateway-process.js';

const run = promisify(execFile);

/**
 * The attacks of the first paragraph of the security issue, against a gateway configured like
 * examples/site.yaml (a Modbus PLC whose setpoint a rule writes from its speed, an MQTT pump with a
 * declared schema, a panel that reads site/#, alarms for hot readings), each now refused.
 */
const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const SENSORS = 'outpost-attack-test-sensors-secret';
const PUMP_PASSWORD = 'pump-3 correct horse';

interface Site {
  gateway: Gateway;
  cloud: SimCloud;
  plc: SimModbusSlave;
  url: string;
  config: SiteConfigInput;
  dir: string;
}

async function site(dir = mkdtempSync(join(tmpdir(), 'outpost-attack-'))): Promise<Site> {
  const plc = await SimModbusSlave.start({ points: profiles.plc() });
  cleanup.push(() => plc.stop());
  const cloud = await SimCloud.start();
  cleanup.push(() => cloud.stop());
  cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
  const config: SiteConfigInput = {
    gateway: { id: 'attack-gw' },
    broker: { host: '127.0.0.1', port: 0, grants: [{ identities: ['panel-*'], subscribe: ['site/#'] }, { identities: ['operator'], publish: ['outpost/v1/dev/+/cmd'] }] },
    identities: {
      devices: [{ id: 'pump-3', passwordHash: await hashPassword(PUMP_PASSWORD, { ln: 10 }) }],
      clients: [{ id: 'operator', passwordHash: await hashPassword('operator password', { ln: 10 }) }],
      groups: [{ name: 'sensors', devices: 'sensor-*', secret: SENSORS }, { name: 'panels', devices: 'panel-*', secret: SENSORS }],
    },
    http: { host: '127.0.0.1', port: 0, tokens: TEST_API_TOKENS },
    devices: [
      { id: 'plc-1', protocol: 'modbus-tcp', host: plc.host, port: plc.port, pollIntervalMs: 100, points: pointEntries(plc.points).map((p) => (p.name === 'speed-setpoint' ? { ...p, range: { min: 0, max: 50 } } : p)) },
      { id: 'pump-3', protocol: 'mqtt', points: { flow: { type: 'number', min: 0, max: 200 }, temperature: { type: 'number' } } },
      { id: 'sensor-1', protocol: 'mqtt' },
      { id: 'sensor-2', protocol: 'mqtt' },
    ],
    streams: [{ name: 'alarms', priority: 0 }, { name: 'telemetry', priority: 5 }],
    rules: [
      { id: 'all', type: 'filter', match: { device: '*', point: '*' } },
      { id: 'follow-speed', type: 'filter', match: { device: 'plc-1', point: 'speed' }, set: { value: '$round(value * 2) / 2' }, route: 'write', write: { device: 'plc-1', point: 'speed-setpoint', minIntervalMs: 200, sources: ['plc-1'] } },
      { id: 'hot', type: 'filter', match: { device: '*', point: 'temperature' }, where: 'value > 60', route: 'alert', stream: 'alarms', alert: { severity: 'critical' } },
      { id: 'pump-panel', type: 'filter', match: { device: 'pump-3' }, route: 'mqtt', mqtt: { topic: 'site/{device}/{point}' } },
    ],
    cloud: { url: cloud.url, lingerMs: 0, backoff: { initialMs: 100, maxMs: 1000 } },
    storage: { path: join(dir, 'o.db') },
  };
  const gateway = await Gateway.start(parseConfig(config), { log: createLogger({ level: 'silent' }) });
  cleanup.push(() => gateway.stop());
  return { gateway, cloud, plc, url: `mqtt://127.0.0.1:${gateway.ports.broker}`, config, dir };
}

const sensor = (id: string): IClientOptions => ({ clientId: id, username: id, password: deriveDeviceKey(SENSORS, id) });

/** Connected, or rejected with the broker's refusal (or the connection closed before CONNACK). */
function attempt(url: string, opts: IClientOptions): Promise<MqttClient> {
  return attemptConnect(url, opts, (c) => cleanup.push(() => c.endAsync(true)));
}

/** true when the broker acknowledged the publish; false when it refused (it closes the connection). */
function published(c: MqttClient, topic: string, payload: string, retain = false): Promise<boolean> {
  const closed = new Promise<false>((resolve) => c.once('close', () => resolve(false)));
  return Promise.race([c.publishAsync(topic, payload, { qos: 1, retain }).then(() => true as const, () => false as const), closed]);
}

describe('attacks on a gateway configured like examples/site.yaml', () => {
  it('an anonymous client cannot connect; nobody can connect as the Modbus PLC; a device cannot speak for the PLC, so the rule never writes its value', async () => {
    const s = await site();
    await expect(attempt(s.url, { clientId: 'intruder' })).rejects.toThrow(/Not authorized/);
    await expect(attempt(s.url, { clientId: 'plc-1', username: 'plc-1', password: 'anything' })).rejects.toThrow(/Not authorized/);
    const attacker = await attempt(s.url, sensor('sensor-1'));
    expect(await published(attacker, 'outpost/v1/dev/plc-1/telemetry', '{"points":{"speed":55.3}}')).toBe(false);
    await waitFor('the PLC at the cloud', () => (s.cloud.ledger.byDevice.get('plc-1') ?? 0) > 10, 10_000);
    await sleep(500);
    // The setpoint follows the PLC's own speed (40–50 Hz), never the forged 55.3.
    const sp = s.plc.valueOf('speed-setpoint') as number;
    expect(sp).toBeGreaterThanOrEqual(40);
    expect(sp).toBeLessThanOrEqual(50);
  });

  it('subscribing to # or to another device\'s commands is refused; the panel reads site/# only', async () => {
    const s = await site();
    const attacker = await attempt(s.url, sensor('sensor-1'));
    for (const f of ['#', 'outpost/v1/dev/+/telemetry', 'outpost/v1/dev/pump-3/cmd', '$SYS/#']) {
      const granted = await attacker.subscribeAsync(f, { qos: 1 }).catch(() => [{ qos: 128 }]);
      expect(granted[0]?.qos, f).toBe(128);
    }
    const panel = await attempt(s.url, sensor('panel-1'));
    const got: string[] = [];
    panel.on('message', (t) => got.push(t));
    expect((await panel.subscribeAsync('site/#', { qos: 1 }))[0]?.qos).toBe(1);
    const pump = await attempt(s.url, { clientId: 'pump-3', username: 'pump-3', password: PUMP_PASSWORD });
    await pump.publishAsync('outpost/v1/dev/pump-3/telemetry', '{"points":{"flow":12}}', { qos: 1 });
    await waitFor('the panel output', () => got.includes('site/pump-3/flow'));
  });

  it('a device session cannot be taken over: its client id needs its credential, and its queued command waits for it', async () => {
    const s = await site();
    const pump = await attempt(s.url, { clientId: 'pump-3', username: 'pump-3', password: PUMP_PASSWORD, clean: false });
    await pump.subscribeAsync('outpost/v1/dev/pump-3/cmd', { qos: 1 });
    await pump.endAsync();
    const operator = await attempt(s.url, { clientId: 'operator', username: 'operator', password: 'operator password' });
    await operator.publishAsync('outpost/v1/dev/pump-3/cmd', '{"run":false}', { qos: 1 });
    // With a wrong password, and with another device's good credential: both refused.
    await expect(attempt(s.url, { clientId: 'pump-3', username: 'pump-3', password: 'guess', clean: false })).rejects.toThrow(/Bad username or password/);
    await expect(attempt(s.url, { ...sensor('sensor-1'), clientId: 'pump-3', clean: false })).rejects.toThrow(/Bad username or password/);
    const back = mqtt.connect(s.url, { clientId: 'pump-3', username: 'pump-3', password: PUMP_PASSWORD, clean: false, reconnectPeriod: 0 });
    cleanup.push(() => back.endAsync(true));
    const got = await new Promise<string>((resolve) => back.on('message', (_t, p) => resolve(p.toString())));
    expect(got).toBe('{"run":false}');
  });

  it('a device cannot publish as another (no reading, no alarm at the cloud), nor plant retained messages or wills on its topics', async () => {
    const s = await site();
    const attacker = await attempt(s.url, sensor('sensor-1'));
    expect(await published(attacker, 'outpost/v1/dev/pump-3/telemetry', '{"points":{"temperature":99}}')).toBe(false);
    const again = await attempt(s.url, sensor('sensor-1'));
    expect(await published(again, 'outpost/v1/dev/pump-3/status', '{"state":"offline"}', true)).toBe(false);
    await expect(attempt(s.url, { ...sensor('sensor-1'), will: { topic: 'outpost/v1/dev/pump-3/status', payload: Buffer.from('{"state":"offline"}'), qos: 1, retain: true } })).rejects.toThrow(/Not authorized/);
    // Its own readings still go through.
    const own = await attempt(s.url, sensor('sensor-1'));
    expect(await published(own, 'outpost/v1/dev/sensor-1/telemetry', '{"points":{"temperature":21}}')).toBe(true);
    await waitFor('sensor-1 at the cloud', () => (s.cloud.ledger.byDevice.get('sensor-1') ?? 0) === 1);
    expect(s.cloud.ledger.byDevice.get('pump-3') ?? 0).toBe(0);
    expect(s.cloud.ledger.byDevice.get('pump-3') ?? 0).toBe(0);
  });

  it('revoking a device cuts its live connection at once (API, CLI through the store, cloud command) and holds across a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-attack-'));
    const s = await site(dir);
    const api = gatewayApi(s.gateway.ports.http, dir, TEST_TOKENS.admin);
    const live = await attempt(s.url, sensor('sensor-1'));
    const cut = new Promise<void>((r) => live.once('close', () => r()));
    // An operate token may not; an admin token may.
    const operate = gatewayApi(s.gateway.ports.http, dir, TEST_TOKENS.operate);
    expect((await operate.fetch(`${operate.base}/api/v1/identities/sensor-1/revoke`, json({ reason: 'stolen' }))).status).toBe(403);
    const res = await api.fetch(`${api.base}/api/v1/identities/sensor-1/revoke`, json({ reason: 'stolen' }));
    expect(res.status).toBe(200);
    await cut;
    await expect(attempt(s.url, sensor('sensor-1'))).rejects.toThrow(/Not authorized/);

    // Another process (the CLI) writes the store; the gateway cuts the device within a second or two.
    const live2 = await attempt(s.url, sensor('sensor-2'));
    const cut2 = new Promise<void>((r) => live2.once('close', () => r()));
    const configFile = join(dir, 'site.json');
    writeFileSync(configFile, JSON.stringify(s.config), { mode: 0o600 });
    const cli = await run(process.execPath, [CLI, 'identity', 'revoke', 'sensor-2', '--config', configFile, '--reason', 'lost']);
    expect(cli.stdout).toBe('sensor-2: revoked\n');
    await cut2;

    // The cloud revokes a third.
    const live3 = await attempt(s.url, sensor('sensor-3'));
    const cut3 = new Promise<void>((r) => live3.once('close', () => r()));
    const cloudClient = await mqtt.connectAsync(s.cloud.url, { reconnectPeriod: 0 });
    cleanup.push(() => cloudClient.endAsync(true));
    await waitFor('the gateway subscribed to identity commands', async () => {
      await cloudClient.publishAsync(cloudTopics.identityCommands('outpost', 'attack-gw'), '{"action":"revoke","id":"sensor-3"}', { qos: 1 });
      return live3.connected === false;
    });
    await cut3;

    // After a restart the revocations hold; the others still connect.
    await s.gateway.stop();
    const gw2 = await Gateway.start(parseConfig(s.config), { log: createLogger({ level: 'silent' }) });
    cleanup.push(() => gw2.stop());
    const url2 = `mqtt://127.0.0.1:${gw2.ports.broker}`;
    for (const id of ['sensor-1', 'sensor-2', 'sensor-3']) await expect(attempt(url2, sensor(id)), id).rejects.toThrow(/Not authorized/);
    await attempt(url2, sensor('sensor-4'));
  });

  it('an enrolled device keeps its credential across a gateway restart (its first contact is recorded once)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-attack-'));
    const s = await site(dir);
    const d = await attempt(s.url, sensor('sensor-7'));
    await d.endAsync();
    await s.gateway.stop();
    const gw2 = await Gateway.start(parseConfig(s.config), { log: createLogger({ level: 'silent' }) });
    cleanup.push(() => gw2.stop());
    await attempt(`mqtt://127.0.0.1:${gw2.ports.broker}`, sensor('sensor-7'));
    const db = new Database(join(dir, 'o.db'), { readonly: true });
    const rows = db.prepare("SELECT id, method FROM identity_enrollments WHERE id = 'sensor-7'").all();
    db.close();
    expect(rows).toEqual([{ id: 'sensor-7', method: 'group:sensors' }]);
  });
});
