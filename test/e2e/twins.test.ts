import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../runtime/config/load.js';
import { configSchema } from '../../runtime/config/schema.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { twinTopics } from '../../runtime/contracts/index.js';
import { profiles, SimModbusSlave } from '../../sim/modbus-slave.js';
import { pointEntries } from '../../sim/site.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { deviceCredentials, TEST_GROUP_SECRET } from '../helpers/broker-access.js';
import { gatewayApi, json, TEST_API_TOKENS, TEST_TOKENS } from '../helpers/api.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
});

function siteYaml(dir: string, plcPort: number): string {
  const plcPoints = pointEntries(profiles.plc()).map((p) => (p.name === 'speed-setpoint' ? { ...p, range: { min: 0, max: 60 } } : p));
  return `
gateway: { id: twins-gw }
broker: { host: 127.0.0.1, port: 0, acceptUnknownDevices: true }
identities: { groups: [{ name: test, devices: '*', secret: ${TEST_GROUP_SECRET} }] }
http: { host: 127.0.0.1, port: 0, tokens: ${JSON.stringify(TEST_API_TOKENS)} }
devices:
  - { id: pump-1, protocol: mqtt, model: P-3.1, labels: { line: "2" } }
  - id: plc-1
    protocol: modbus-tcp
    host: 127.0.0.1
    port: ${plcPort}
    pollIntervalMs: 50
    model: S7
    twin: { drive.speed: speed-setpoint }
    points: ${JSON.stringify(plcPoints)}
configurations:
  - { id: p31-speed, target: 'model = "P-3.1"', priority: 10, desired: { maxSpeed: 20, mode: auto } }
  - { id: line2, target: 'labels.line = "2"', priority: 5, desired: { maxSpeed: 15, alarm: { high: 80 } } }
  - { id: plc-speed, target: 'id = "plc-1"', desired: { drive: { speed: 42.5 } } }
  - { id: zone-a, target: 'tags.zone = "A"', desired: { lamp: "on" } }
rules:
  - { id: start-pump, type: filter, match: { device: plc-1, point: run }, rateLimit: { count: 1, perMs: 60000 }, route: call, call: { device: pump-1, method: start, sources: [plc-1] } }
streams: [{ name: telemetry }, { name: twins, priority: 1 }]
cloud: { url: "mqtt://127.0.0.1:9" }
storage: { path: ${JSON.stringify(join(dir, 'o.db'))} }
`;
}

interface Child {
  client: MqttClient;
  desired: Array<{ version: number; desired: Record<string, unknown> }>;
  patches: Array<{ version: number; from: number; patch: Record<string, unknown> }>;
  calls: Array<{ topic: string; body: { id: string; payload?: unknown; deadline: number } }>;
}

async function child(port: number, id: string, attributes: Record<string, string>, answer = true): Promise<Child> {
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
    ...deviceCredentials(id),
    reconnectPeriod: 0,
    will: { topic: `outpost/v1/dev/${id}/status`, payload: Buffer.from('{"state":"offline"}'), qos: 1, retain: true },
  });
  cleanup.push(() => client.endAsync(true));
  const c: Child = { client, desired: [], patches: [], calls: [] };
  client.on('message', (topic, payload) => {
    if (payload.length === 0) return; // a retained message cleared (the device was removed)
    const body = JSON.parse(payload.toString()) as never;
    if (topic === twinTopics.desired(id)) c.desired.push(body);
    else if (topic === twinTopics.desiredPatch(id)) c.patches.push(body);
    else if (topic.startsWith(`outpost/v1/dev/${id}/cmd/`)) {
      c.calls.push({ topic, body });
      const call = body as { id: string; payload?: unknown };
      if (answer) void client.publishAsync(twinTopics.response(id, call.id), JSON.stringify({ status: 200, payload: { echo: call.payload, method: topic.split('/').at(-1) } }), { qos: 1 });
    }
  });
  await client.subscribeAsync([`outpost/v1/dev/${id}/desired/#`, `outpost/v1/dev/${id}/cmd/#`], { qos: 1 });
  await client.publishAsync(`outpost/v1/dev/${id}/status`, JSON.stringify({ state: 'online', attributes }), { qos: 1, retain: true });
  return c;
}

describe('twins and configurations on one gateway', () => {
  it('refuses at intake a configuration whose target is not an expression, and a rule that calls a method of a Modbus device', () => {
    const problems = (yaml: Record<string, unknown>): string[] => {
      const r = configSchema.safeParse({ gateway: { id: 'g' }, cloud: { url: 'mqtt://127.0.0.1:9' }, storage: { path: '/tmp/x.db' }, ...yaml });
      return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    };
    expect(problems({ configurations: [{ id: 'c', target: 'model = = "x"', desired: { a: 1 } }] })[0]).toMatch(/^configurations\.0\.target: .*\(at character \d+\)$/);
    expect(problems({ configurations: [{ id: 'c', target: 'true', desired: { a: [1] } }] })).toEqual(['configurations.0.desired: desired.a: arrays are not allowed in twin documents (use an object keyed by position)']);
    expect(
      problems({
        devices: [{ id: 'plc', protocol: 'modbus-tcp', host: '127.0.0.1', points: [{ name: 'sp', table: 'holding', address: 1 }], twin: { speed: 'sp' } }],
        rules: [{ id: 'r', type: 'filter', route: 'call', call: { device: 'plc', method: 'm', sources: ['*'] } }],
      }),
    ).toEqual(['devices.0.twin.speed: point "sp" of "plc" is not writable (set writable: true)', 'rules.0.call.device: "plc" is a modbus-tcp device: methods are called on MQTT children (write its points instead)']);
  });

  it('configurations reach current and new children by priority, bound Modbus properties are written, edits and explain show the winner, calls are answered', async () => {
    const plc = await SimModbusSlave.start({ points: profiles.plc() });
    cleanup.push(() => plc.stop());
    const dir = mkdtempSync(join(tmpdir(), 'outpost-twins-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const file = join(dir, 'site.yaml');
    writeFileSync(file, siteYaml(dir, plc.port), { mode: 0o600 });
    const gateway = await Gateway.start(await loadConfig(file), { log: createLogger({ level: 'silent' }), configFile: file });
    cleanup.push(() => gateway.stop());
    const api = gatewayApi(gateway.ports.http, dir, TEST_TOKENS.operate);
    const get = async (path: string): Promise<{ status: number; body: Record<string, unknown> }> => {
      const res = await api.fetch(`${api.base}${path}`);
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    const send = async (path: string, body: unknown, method = 'POST'): Promise<{ status: number; body: Record<string, unknown> }> => {
      const res = await api.fetch(`${api.base}${path}`, json(body, method));
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };

    // A configured child: both configurations target it; the higher priority wins maxSpeed.
    const pump1 = await child(gateway.ports.broker, 'pump-1', { firmware: '1.0.0' });
    await waitFor('pump-1 desired', () => pump1.desired.some((d) => d.desired.maxSpeed === 20));
    expect(pump1.desired.at(-1)).toEqual({ version: 1, desired: { alarm: { high: 80 }, maxSpeed: 20, mode: 'auto' } });

    // A child never configured joins with its model in its birth: the configuration reaches it too.
    const pump7 = await child(gateway.ports.broker, 'pump-7', { model: 'P-3.1' });
    await waitFor('pump-7 desired', () => pump7.desired.some((d) => d.desired.maxSpeed === 20));
    expect(pump7.desired.at(-1)!.desired).toEqual({ maxSpeed: 20, mode: 'auto' });

    // The Modbus PLC's bound property: written (verified) and reported from the point's readings.
    await waitFor('plc speed written', async () => {
      const plcTwin = await get('/api/v1/devices/plc-1');
      return (plcTwin.body.reported as { drive?: { speed?: number } }).drive?.speed === 42.5;
    });

    // A direct edit of pump-1 sits above every configuration; explain shows who set what.
    const edit = await send('/api/v1/devices/pump-1/desired', { maxSpeed: 12 }, 'PATCH');
    expect(edit.status).toBe(200);
    expect(edit.body).toMatchObject({ version: 2, desired: { maxSpeed: 12 } });
    await waitFor('pump-1 patch', () => pump1.patches.some((p) => p.version === 2));
    expect(pump1.patches.find((p) => p.version === 2)).toEqual({ version: 2, from: 1, patch: { maxSpeed: 12 } });
    const explained = await get('/api/v1/devices/pump-1/explain');
    const props = explained.body.properties as Array<{ path: string; value: unknown; source: string; overrides: Array<{ source: string; value: unknown }> }>;
    expect(props.find((p) => p.path === 'maxSpeed')).toMatchObject({
      value: 12,
      source: 'direct',
      overrides: [
        { source: 'configuration:p31-speed', value: 20 },
        { source: 'configuration:line2', value: 15 },
      ],
    });
    expect(props.find((p) => p.path === 'alarm.high')).toMatchObject({ value: 80, source: 'configuration:line2' });

    // The child reports what it applied: the configuration counts it.
    await pump1.client.publishAsync(twinTopics.reported('pump-1'), JSON.stringify({ version: 2, reported: { maxSpeed: 12, mode: 'auto', alarm: { high: 80 } } }), { qos: 1 });
    await waitFor('status counts', async () => {
      const list = (await get('/api/v1/configurations')).body.configurations as Array<{ id: string; targeted: number; applied: number; pending: number; failed: number }>;
      const p31 = list.find((c) => c.id === 'p31-speed')!;
      return p31.targeted === 2 && p31.applied === 1 && p31.pending === 1;
    });

    // Bad input is refused by name.
    const bad = await send('/api/v1/devices/pump-1/desired', { 'max.speed': 1, list: [1, 2] }, 'PATCH');
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatch(/desired\.max\.speed: keys use letters/);
    expect(bad.body.error).toMatch(/desired\.list: arrays are not allowed/);
    expect((await get('/api/v1/devices/nope')).status).toBe(404);

    // A rule calls a method when its reading passes (the reading is the payload).
    await waitFor('the rule call', () => pump1.calls.some((c) => c.topic.endsWith('/cmd/start')));
    expect(pump1.calls.find((c) => c.topic.endsWith('/cmd/start'))!.body.payload).toMatchObject({ reading: { device: 'plc-1', point: 'run', value: true } });

    // Calls: answered; an offline device fails at once, or is called when it returns if asked to wait.
    const answered = await send('/api/v1/devices/pump-1/calls', { method: 'reboot', payload: { delayS: 1 }, timeoutMs: 5000 });
    expect(answered.status).toBe(200);
    expect(answered.body).toMatchObject({ status: 200, payload: { echo: { delayS: 1 }, method: 'reboot' } });
    expect((await send('/api/v1/devices/plc-1/calls', { method: 'reboot' })).status).toBe(400);
    await pump7.client.endAsync(); // clean goodbye without its will: say offline explicitly
    const pump7Offline = await mqtt.connectAsync(`mqtt://127.0.0.1:${gateway.ports.broker}`, { ...deviceCredentials('pump-7'), reconnectPeriod: 0 });
    await pump7Offline.publishAsync('outpost/v1/dev/pump-7/status', '{"state":"offline"}', { qos: 1, retain: true });
    await pump7Offline.endAsync();
    await waitFor('pump-7 offline', async () => ((await get('/api/v1/devices/pump-7')).body.online as boolean) === false);
    const offline = await send('/api/v1/devices/pump-7/calls', { method: 'ping' });
    expect(offline.status).toBe(409);
    const waiting = send('/api/v1/devices/pump-7/calls', { method: 'ping', wait: true, timeoutMs: 10_000 });
    const back = await child(gateway.ports.broker, 'pump-7', { model: 'P-3.1' });
    expect((await waiting).body).toMatchObject({ status: 200, payload: { method: 'ping' } });
    expect(back.calls.length).toBe(1);
    const silent = await child(gateway.ports.broker, 'pump-9', { model: 'X' }, false);
    const timedOut = await send('/api/v1/devices/pump-9/calls', { method: 'ping', timeoutMs: 300 });
    expect(timedOut.status).toBe(504);
    expect(silent.calls.length).toBe(1);

    // Tags set by an operator: the configuration that targets them reaches the device at once.
    expect(silent.desired.at(-1)?.desired.lamp).toBeUndefined();
    expect((await send('/api/v1/devices/pump-9/tags', { tags: { zone: 'A' } }, 'PUT')).status).toBe(200);
    await waitFor('zone A configuration on pump-9', () => silent.desired.at(-1)?.desired.lamp === 'on');
    const check = await send('/api/v1/configurations/check', { target: 'tags.zone = "A" or model = "P-3.1"', desired: { x: 1 } });
    expect(check.body).toEqual({ targeted: ['pump-1', 'pump-7', 'pump-9'] });
    const badTarget = await send('/api/v1/configurations/check', { target: 'model = = 1', desired: { x: 1 } });
    expect(badTarget.status).toBe(400);
    expect(badTarget.body.error).toMatch(/target: .*\(at character \d+\)/);

    // A child that left for good is removed (its retained document goes); a configured one is refused.
    const removed = await api.fetch(`${api.base}/api/v1/devices/pump-9`, { method: 'DELETE', headers: { 'content-type': 'application/json' } });
    expect(removed.status).toBe(200);
    expect((await get('/api/v1/devices/pump-9')).status).toBe(404);
    const configured = await api.fetch(`${api.base}/api/v1/devices/pump-1`, { method: 'DELETE', headers: { 'content-type': 'application/json' } });
    expect(configured.status).toBe(409);
    expect(((await configured.json()) as { error: string }).error).toBe('"pump-1" is in the site config: remove it there');
    await silent.client.endAsync(true);
    const again = await mqtt.connectAsync(`mqtt://127.0.0.1:${gateway.ports.broker}`, { ...deviceCredentials('pump-9'), reconnectPeriod: 0 });
    cleanup.push(() => again.endAsync(true));
    const retained: string[] = [];
    again.on('message', (topic) => retained.push(topic));
    await again.subscribeAsync('outpost/v1/dev/pump-9/desired', { qos: 1 });
    await sleep(300);
    expect(retained).toEqual([]);

    // The device list names each device with its configurations.
    const list = (await get('/api/v1/devices')).body.devices as Array<{ id: string; configurations: string[] }>;
    expect(list.map((d) => d.id)).toEqual(['plc-1', 'pump-1', 'pump-7', 'twins-gw']);
    expect(list.find((d) => d.id === 'pump-1')!.configurations).toEqual(['p31-speed', 'line2']);
  });
});
