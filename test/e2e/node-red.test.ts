import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../runtime/config/load.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { SimCloud } from '../../sim/cloud.js';
import { profiles, SimModbusSlave } from '../../sim/modbus-slave.js';
import { pointEntries } from '../../sim/site.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { gatewayApi, type GatewayApi } from '../helpers/api.js';
import { SimTwinChild } from '../../sim/twin-child.js';
import { deviceCredentials, testIdentities } from '../helpers/broker-access.js';
import { twinTopics } from '../../runtime/contracts/index.js';

const require = createRequire(import.meta.url);
const bcrypt = require('bcryptjs') as { hashSync(p: string, rounds: number): string };

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function token(api: GatewayApi, password: string): Promise<string> {
  const res = await api.fetch(`${api.base}/red/auth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ client_id: 'node-red-admin', grant_type: 'password', scope: '*', username: 'admin', password }),
  });
  if (res.status !== 200) throw new Error(`token: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { access_token: string }).access_token;
}

describe('Node-RED hosted by the gateway', () => {
  it('a flow deployed through the admin API sends readings to the cloud through the outbox, across a cloud outage, nothing lost', async () => {
    const cloud = await SimCloud.start();
    cleanup.push(() => cloud.stop());
    const meter = await SimModbusSlave.start({ points: profiles.energyMeter() });
    cleanup.push(() => meter.stop());
    const dir = mkdtempSync(join(tmpdir(), 'outpost-nr-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const config = parseConfig({
      gateway: { id: 'nr-gw' },
      broker: { host: '127.0.0.1', port: 0 },
      http: { host: '127.0.0.1', port: 0, admin: { username: 'admin', passwordHash: bcrypt.hashSync('s3cret', 8) } },
      nodeRed: { enabled: true },
      devices: [{ id: 'meter-1', protocol: 'modbus-tcp', host: meter.host, port: meter.port, pollIntervalMs: 100, points: pointEntries(meter.points) }],
      streams: [{ name: 'telemetry' }, { name: 'flows', priority: 3 }],
      cloud: { url: cloud.url, backoff: { initialMs: 100, maxMs: 500 } },
      storage: { path: join(dir, 'o.db') },
    });
    const logFile = join(dir, 'gateway.log');
    const gateway = await Gateway.start(config, { log: createLogger({ level: 'warn', destination: logFile }) });
    cleanup.push(() => gateway.stop());
    // The editor's own login, over the API's TLS (certificate pinned); no API token.
    const api = gatewayApi(gateway.ports.http, dir, undefined);
    const { base, fetch } = api;

    // The editor and its API are behind the admin credentials.
    expect((await fetch(`${base}/red/flows`)).status).toBe(401);
    expect((await fetch(`${base}/red/auth/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ client_id: 'node-red-admin', grant_type: 'password', scope: '*', username: 'admin', password: 'wrong' }) })).status).toBe(403);
    const auth = { authorization: `Bearer ${await token(api, 's3cret')}` };
    const nodes = (await (await fetch(`${base}/red/nodes`, { headers: { ...auth, accept: 'application/json' } })).json()) as Array<{ types: string[]; enabled: boolean }>;
    const types = nodes.filter((n) => n.enabled).flatMap((n) => n.types);
    expect(types).toEqual(expect.arrayContaining(['outpost in', 'outpost out', 'outpost window', 'outpost write', 'outpost twin', 'outpost call']));

    const flow = [
      { id: 't1', type: 'tab', label: 'power to cloud' },
      { id: 'in1', z: 't1', type: 'outpost in', device: 'meter-1', point: 'power', wires: [['out1', 'fn1']] },
      { id: 'out1', z: 't1', type: 'outpost out', stream: 'flows', wires: [[]] },
      // Node-RED's own warnings reach the gateway's log.
      { id: 'fn1', z: 't1', type: 'function', name: 'warner', func: "if (!context.get('w')) { context.set('w', 1); node.warn('flow warning 42'); } return null;", outputs: 1, wires: [[]] },
    ];
    const deploy = await fetch(`${base}/red/flows`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json', 'Node-RED-API-Version': 'v2', 'Node-RED-Deployment-Type': 'full' },
      body: JSON.stringify({ flows: flow }),
    });
    expect(deploy.status).toBe(200);
    await waitFor('flow readings in the cloud', () => cloud.ledger.unique > 5, 15_000);

    // Cloud away for 2 s: the flow's readings wait in the outbox.
    await cloud.stop();
    await sleep(2000);
    await cloud.start();
    await sleep(1000);
    // Stop the gateway, letting the uplink drain, then compare what the flow committed with what the cloud got.
    await gateway.stop({ drainMs: 10_000 });
    const stats = gateway.status().outbox.streams.find((s) => s.stream === 'flows')!;
    expect(stats.produced).toBeGreaterThan(20);
    expect(stats.depth).toBe(0);
    expect(stats.delivered).toBe(stats.produced);
    // (The gateway's own records, inventory and twins, arrive too: not readings of the flow.)
    expect(cloud.ledger.unique - cloud.ledger.records).toBe(stats.produced);
    // Only the flow sent anything (no rules): every reading in the cloud is a power reading of meter-1.
    expect(cloud.ledger.byDevice.get('meter-1')).toBeGreaterThanOrEqual(stats.produced);
    await waitFor('the flow warning in the gateway log', () => existsSync(logFile) && readFileSync(logFile, 'utf8').includes('node-red: flow warning 42'), 5000);
    const line = readFileSync(logFile, 'utf8').split('\n').find((l) => l.includes('flow warning 42'))!;
    expect(JSON.parse(line)).toMatchObject({ level: 40, component: 'node-red', node: 'fn1', type: 'function', name: 'warner' });
  });

  it('a flow patches a child\'s desired state (outpost twin) and calls its method (outpost call) when a reading arrives', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-nr-twin-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const config = parseConfig({
      gateway: { id: 'nr-twin-gw' },
      broker: { host: '127.0.0.1', port: 0, acceptUnknownDevices: true },
      identities: testIdentities,
      http: { host: '127.0.0.1', port: 0, admin: { username: 'admin', passwordHash: bcrypt.hashSync('s3cret', 8) } },
      nodeRed: { enabled: true },
      cloud: { url: 'mqtt://127.0.0.1:9' },
      storage: { path: join(dir, 'o.db') },
    });
    const gateway = await Gateway.start(config, { log: createLogger({ level: 'silent' }) });
    cleanup.push(() => gateway.stop());
    const child = new SimTwinChild({ url: `mqtt://127.0.0.1:${gateway.ports.broker}`, deviceId: 'pump-1', password: deviceCredentials('pump-1').password, attributes: { model: 'P-3.1' } });
    await child.start();
    cleanup.push(() => child.kill());
    const api = gatewayApi(gateway.ports.http, dir, undefined);
    const auth = { authorization: `Bearer ${await token(api, 's3cret')}` };
    // A temperature over 50 from the pump: lower its max speed and call its cooling routine.
    const flow = [
      { id: 't1', type: 'tab', label: 'cool down' },
      { id: 'in1', z: 't1', type: 'outpost in', device: 'pump-1', point: 'temperature', wires: [['sw1']] },
      { id: 'sw1', z: 't1', type: 'switch', property: 'payload', rules: [{ t: 'gt', v: '50', vt: 'num' }], checkall: 'true', outputs: 1, wires: [['fn1', 'call1']] },
      { id: 'fn1', z: 't1', type: 'function', func: 'msg.payload = { maxSpeed: 10 }; msg.topic = msg.reading.device; return msg;', outputs: 1, wires: [['twin1']] },
      { id: 'twin1', z: 't1', type: 'outpost twin', action: 'patch', wires: [[]] },
      { id: 'call1', z: 't1', type: 'outpost call', device: 'pump-1', method: 'cool', timeoutMs: 5000, wires: [[]] },
    ];
    const deploy = await api.fetch(`${api.base}/red/flows`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json', 'Node-RED-API-Version': 'v2', 'Node-RED-Deployment-Type': 'full' },
      body: JSON.stringify({ flows: flow }),
    });
    expect(deploy.status).toBe(200);
    await sleep(500);
    // The child sends its temperature as telemetry.
    await child.telemetry({ temperature: 61 });
    await waitFor('the desired state from the flow', () => child.desired.maxSpeed === 10, 10_000);
    await waitFor('the call from the flow', () => child.calls.length === 1, 10_000);
    expect(child.calls[0]).toMatchObject({ payload: 61 });
  });
  it('flows triggered through the admin API: outpost twin patches and reads a child\'s desired state, outpost call gets a raw MQTT child\'s answer, a call without answer reaches a Catch node', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-nr-call-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const config = parseConfig({
      gateway: { id: 'nr-call-gw' },
      broker: { host: '127.0.0.1', port: 0 },
      identities: testIdentities,
      http: { host: '127.0.0.1', port: 0, admin: { username: 'admin', passwordHash: bcrypt.hashSync('s3cret', 8) } },
      nodeRed: { enabled: true },
      devices: [{ id: 'pump-2', protocol: 'mqtt' }],
      cloud: { url: 'mqtt://127.0.0.1:9' },
      storage: { path: join(dir, 'o.db') },
    });
    const gateway = await Gateway.start(config, { log: createLogger({ level: 'silent' }) });
    cleanup.push(() => gateway.stop());

    // The child speaks the device protocol itself (docs/devices.md): desired documents in, calls answered by id.
    const child = await mqtt.connectAsync(`mqtt://127.0.0.1:${gateway.ports.broker}`, { ...deviceCredentials('pump-2'), reconnectPeriod: 0 });
    cleanup.push(() => child.endAsync(true));
    const desired: Array<Record<string, unknown>> = [];
    const methods: string[] = [];
    child.on('message', (topic, payload) => {
      if (payload.length === 0) return;
      const body = JSON.parse(payload.toString()) as { id: string; payload?: { minutes?: number }; desired?: Record<string, unknown> };
      if (topic === twinTopics.desired('pump-2') && body.desired) desired.push(body.desired);
      const method = topic.startsWith('outpost/v1/dev/pump-2/cmd/') ? topic.split('/').at(-1)! : undefined;
      if (method) methods.push(method);
      // "hang" is never answered: the flow's call times out.
      if (method === 'cool') void child.publishAsync(twinTopics.response('pump-2', body.id), JSON.stringify({ status: 202, payload: { coolingFor: body.payload?.minutes } }), { qos: 1 });
    });
    await child.subscribeAsync(['outpost/v1/dev/pump-2/desired/#', 'outpost/v1/dev/pump-2/cmd/#'], { qos: 1 });
    await child.publishAsync('outpost/v1/dev/pump-2/status', JSON.stringify({ state: 'online', attributes: { model: 'P-4' } }), { qos: 1, retain: true });
    // The inventory: the gateway itself and pump-2.
    await waitFor('pump-2 online', () => gateway.status().devices.online === 2, 5000, 50, () => JSON.stringify(gateway.status().devices));

    const api = gatewayApi(gateway.ports.http, dir, undefined);
    const auth = { authorization: `Bearer ${await token(api, 's3cret')}` };
    // What a node received, kept in global context as JSON and read back through the admin API.
    const keep = (key: string, expr: string): string => `global.set('${key}', JSON.stringify(${expr})); return msg;`;
    const inject = (id: string, payload: string, wire: string): Record<string, unknown> => ({
      id, z: 't1', type: 'inject', props: [{ p: 'payload' }, { p: 'topic', vt: 'str' }], payload, payloadType: 'json', topic: 'pump-2', repeat: '', once: false, wires: [[wire]],
    });
    const flow = [
      { id: 't1', type: 'tab', label: 'pump-2' },
      inject('inj-patch', '{"maxSpeed":10,"mode":"eco"}', 'patch1'),
      { id: 'patch1', z: 't1', type: 'outpost twin', action: 'patch', wires: [['keep-patch']] },
      { id: 'keep-patch', z: 't1', type: 'function', func: keep('patched', 'msg.payload'), outputs: 1, wires: [['get1']] },
      { id: 'get1', z: 't1', type: 'outpost twin', action: 'get', wires: [['keep-twin']] },
      { id: 'keep-twin', z: 't1', type: 'function', func: keep('twin', '{ desired: msg.payload.desired, direct: Object.keys(msg.payload.direct) }'), outputs: 1, wires: [[]] },
      inject('inj-bad', '{"speeds":[1,2]}', 'patch1'),
      inject('inj-call', '{"minutes":5}', 'call1'),
      { id: 'call1', z: 't1', type: 'outpost call', method: 'cool', timeoutMs: 5000, wait: false, wires: [['keep-answer']] },
      { id: 'keep-answer', z: 't1', type: 'function', func: keep('answer', '{ payload: msg.payload, status: msg.status, ms: msg.ms }'), outputs: 1, wires: [[]] },
      inject('inj-hang', '{}', 'call2'),
      { id: 'call2', z: 't1', type: 'outpost call', method: 'hang', timeoutMs: 500, wait: false, wires: [['keep-never']] },
      { id: 'keep-never', z: 't1', type: 'function', func: keep('never', 'msg.payload'), outputs: 1, wires: [[]] },
      { id: 'catch1', z: 't1', type: 'catch', scope: ['call2', 'patch1'], uncaught: false, wires: [['keep-caught']] },
      { id: 'keep-caught', z: 't1', type: 'function', func: "const all = JSON.parse(global.get('caught') || '[]'); all.push(msg.error.source.id + ': ' + msg.error.message); global.set('caught', JSON.stringify(all)); return msg;", outputs: 1, wires: [[]] },
    ];
    const deploy = await api.fetch(`${api.base}/red/flows`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json', 'Node-RED-API-Version': 'v2', 'Node-RED-Deployment-Type': 'full' },
      body: JSON.stringify({ flows: flow }),
    });
    expect(deploy.status).toBe(200);
    const press = async (id: string): Promise<void> => {
      // The inject node's button, as the editor presses it; 404 until the deployed flow has started.
      await waitFor(`inject ${id}`, async () => (await api.fetch(`${api.base}/red/inject/${id}`, { method: 'POST', headers: auth })).status === 200, 5000);
    };
    const kept = async (key: string): Promise<unknown> => {
      const res = await api.fetch(`${api.base}/red/context/global/${key}`, { headers: auth });
      // An unset key comes back as {msg: "(undefined)", format: "undefined"}.
      const body = (await res.json()) as { msg?: string; format?: string };
      return body.format?.startsWith('string') ? JSON.parse(body.msg!) : undefined;
    };

    await press('inj-patch');
    await waitFor('the patch result in the flow', async () => (await kept('twin')) !== undefined, 5000);
    const patched = (await kept('patched')) as { version: number; desired: Record<string, unknown> };
    expect(patched.desired).toEqual({ maxSpeed: 10, mode: 'eco' });
    expect(await kept('twin')).toEqual({ desired: { version: patched.version, document: { maxSpeed: 10, mode: 'eco' } }, direct: ['maxSpeed', 'mode'] });
    await waitFor('the desired document at the child', () => desired.at(-1)?.maxSpeed === 10, 5000);

    await press('inj-call');
    await waitFor('the answer in the flow', async () => (await kept('answer')) !== undefined, 5000);
    expect(await kept('answer')).toMatchObject({ payload: { coolingFor: 5 }, status: 202, ms: expect.any(Number) as unknown });

    // Errors reach Catch nodes as the gateway words them (Node-RED puts the error's name first).
    await press('inj-hang');
    await waitFor('the timeout at the Catch node', async () => ((await kept('caught')) as string[] | undefined)?.length === 1, 5000);
    await press('inj-bad');
    await waitFor('the refused patch at the Catch node', async () => ((await kept('caught')) as string[] | undefined)?.length === 2, 5000);
    expect(await kept('caught')).toEqual(['call2: CallError: no answer from "pump-2" within 500 ms', 'patch1: RegistryError: desired.speeds: arrays are not allowed in twin documents (use an object keyed by position)']);
    expect(desired.at(-1)).toEqual({ maxSpeed: 10, mode: 'eco' });
    expect(await kept('never')).toBeUndefined();
    expect(methods).toEqual(['cool', 'hang']);
  }, 20_000);
});
