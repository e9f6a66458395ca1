import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../runtime/config/load.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { SimCloud } from '../../sim/cloud.js';
import { forwardAll } from '../helpers/site-gateway.js';
import { waitFor } from '../helpers/wait.js';
import { deviceCredentials, testIdentities } from '../helpers/broker-access.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function gatewayWithPump(): Promise<{ gateway: Gateway; cloud: SimCloud; url: string }> {
  const cloud = await SimCloud.start();
  cleanup.push(() => cloud.stop());
  const dir = mkdtempSync(join(tmpdir(), 'outpost-child-'));
  cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
  const config = parseConfig({
    gateway: { id: 'child-gw' },
    broker: { host: '127.0.0.1', port: 0, acceptUnknownDevices: false, grants: [{ identities: ['hmi'], subscribe: ['outpost/v1/dev/+/status'] }, { identities: ['operator'], publish: ['outpost/v1/dev/+/cmd'] }] },
    identities: testIdentities,
    http: { host: '127.0.0.1', port: 0 },
    devices: [{ id: 'pump-1', protocol: 'mqtt', points: { flow: { type: 'number', min: 0, max: 100, unit: 'm3/h' }, running: { type: 'boolean' } } }],
    rules: forwardAll,
    cloud: { url: cloud.url, lingerMs: 0, backoff: { initialMs: 100, maxMs: 1000 } },
    storage: { path: join(dir, 'o.db') },
  });
  const gateway = await Gateway.start(config, { log: createLogger({ level: 'silent' }) });
  cleanup.push(() => gateway.stop());
  return { gateway, cloud, url: `mqtt://127.0.0.1:${gateway.ports.broker}` };
}

async function connect(url: string, opts: mqtt.IClientOptions): Promise<MqttClient> {
  const c = await mqtt.connectAsync(url, { reconnectPeriod: 0, ...opts });
  cleanup.push(() => c.endAsync(true));
  return c;
}

describe('MQTT child device contract on the embedded broker', () => {
  it('birth, telemetry checked against the declared schema, and a last will that turns the points stale', async () => {
    const { gateway, cloud, url } = await gatewayWithPump();
    const status = 'outpost/v1/dev/pump-1/status';
    const pump = await connect(url, { ...deviceCredentials('pump-1'), will: { topic: status, payload: Buffer.from('{"state":"offline"}'), qos: 1, retain: true } });
    await pump.publishAsync(status, '{"state":"online"}', { qos: 1, retain: true });
    await pump.publishAsync('outpost/v1/dev/pump-1/telemetry', JSON.stringify({ id: 1, points: { flow: 12.5, running: true } }), { qos: 1 });
    // Out of range: acknowledged, refused, counted; nothing stored.
    await pump.publishAsync('outpost/v1/dev/pump-1/telemetry', JSON.stringify({ id: 2, points: { flow: 500 } }), { qos: 1 });
    // Readings only: the gateway's own records ($inventory, $twin: the device registry's) go up
    // whenever the outbox is idle, 250 ms apart, and are not what this test counts.
    const readings = (): number => cloud.ledger.unique - cloud.ledger.records;
    await waitFor('good readings at the cloud', () => readings() === 2);
    const intake = gateway.status().drivers.find((d) => d.name === 'mqtt:children')!;
    expect(intake).toMatchObject({ accepted: 1, rejected: 1, online: ['pump-1'] });

    // The device dies without DISCONNECT: the broker publishes its will.
    pump.stream.destroy();
    await waitFor('stale readings at the cloud', () => (cloud.ledger.stale.get('pump-1') ?? 0) === 2, 5000);
    expect(gateway.status().drivers.find((d) => d.name === 'mqtt:children')).toMatchObject({ offline: ['pump-1'] });
    expect(readings()).toBe(4);

    // Retained: a new subscriber (a local HMI) learns the device is offline.
    const hmi = await connect(url, deviceCredentials('hmi'));
    const retained = new Promise<{ payload: string; retain: boolean }>((resolve) =>
      hmi.on('message', (_t, payload, packet) => resolve({ payload: payload.toString(), retain: packet.retain })),
    );
    await hmi.subscribeAsync(status, { qos: 1 });
    expect(await retained).toEqual({ payload: '{"state":"offline"}', retain: true });
  });

  it('keeps QoS 1 messages for a persistent session while the device is away (MQTT 3.1.1 clean session 0)', async () => {
    const { url } = await gatewayWithPump();
    const cmd = 'outpost/v1/dev/pump-1/cmd';
    const first = await connect(url, { ...deviceCredentials('pump-1'), clean: false });
    await first.subscribeAsync(cmd, { qos: 1 });
    await first.endAsync();
    const operator = await connect(url, deviceCredentials('operator'));
    await operator.publishAsync(cmd, '{"run":false}', { qos: 1 });
    // The listener is in place before the session resumes: the queued message follows the CONNACK.
    const back = mqtt.connect(url, { ...deviceCredentials('pump-1'), clean: false, reconnectPeriod: 0 });
    cleanup.push(() => back.endAsync(true));
    const got = await new Promise<{ payload: string; sessionPresent: boolean }>((resolve) => {
      let sessionPresent = false;
      back.on('connect', (ack) => (sessionPresent = ack.sessionPresent));
      back.on('message', (_t, payload) => resolve({ payload: payload.toString(), sessionPresent }));
    });
    expect(got).toEqual({ payload: '{"run":false}', sessionPresent: true });
  });

  it('refuses an MQTT 5 client at CONNECT with a clear reason (the embedded broker speaks 3.1.1)', async () => {
    const { url } = await gatewayWithPump();
    await expect(mqtt.connectAsync(url, { ...deviceCredentials('pump-9'), protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000 })).rejects.toThrow(/Unacceptable protocol version/);
  });
});
