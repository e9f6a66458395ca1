import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { builtinProtocols } from '../../drivers/index.js';
import { ConfigError, parseConfig } from '../../runtime/config/load.js';
import type { SiteConfigInput } from '../../runtime/config/schema.js';
import { decodeUplinkPayload, uplinkBatchSchema, type Envelope } from '../../runtime/contracts/index.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { ProtocolRegistry } from '../../runtime/protocols.js';
import { SimCloud } from '../../sim/cloud.js';
import { registerFileProtocol } from '../fixtures/protocols/register-file/protocol.js';
import { RegisterFiles } from '../fixtures/protocols/register-file/register-file.js';
import { waitFor } from '../helpers/wait.js';
import { gatewayApi, json, TEST_API_TOKENS, TEST_TOKENS, type GatewayApi } from '../helpers/api.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/**
 * A site with one device of the test-only protocol: a boiler whose register file holds temp,
 * setpoint and valve; a rule writes the temperature plus one degree to `ruleWrites`.
 */
function siteConfig(cloudUrl: string, storage: string, opts: { tempAddress?: number; ruleWrites?: string } = {}): SiteConfigInput {
  return {
    gateway: { id: 'seam-gw' },
    broker: { host: '127.0.0.1', port: 0 },
    http: { host: '127.0.0.1', port: 0, tokens: TEST_API_TOKENS },
    devices: [
      {
        id: 'boiler-1',
        protocol: 'register-file',
        file: 'boiler',
        pollIntervalMs: 100,
        points: [
          { name: 'temp', address: opts.tempAddress ?? 0 },
          { name: 'setpoint', address: 1, writable: true },
          { name: 'valve', address: 2, writable: true },
        ],
      },
    ],
    rules: [
      { id: 'all', type: 'filter', match: { device: '*', point: '*' } },
      // The measured temperature plus one degree becomes the setpoint, written through the driver.
      { id: 'follow', type: 'filter', match: { device: 'boiler-1', point: 'temp' }, set: { value: 'value + 1' }, route: 'write', write: { device: 'boiler-1', point: opts.ruleWrites ?? 'setpoint', minIntervalMs: 0, sources: ['boiler-1'] } },
    ],
    cloud: { url: cloudUrl, batchSize: 100, backoff: { initialMs: 100, maxMs: 1000 } },
    storage: { path: storage },
  };
}

function problems(raw: unknown, registry?: ProtocolRegistry): string[] {
  try {
    parseConfig(raw, 'site.yaml', registry);
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  return [];
}

/** Every reading the cloud receives, decoded as a cloud consumer would. */
async function cloudReadings(cloud: SimCloud): Promise<Envelope[]> {
  const readings: Envelope[] = [];
  const client = await mqtt.connectAsync(cloud.url, { clientId: 'seam-watcher', reconnectPeriod: 0 });
  cleanup.push(() => client.endAsync());
  client.on('message', (_topic, payload) => readings.push(...uplinkBatchSchema.parse(decodeUplinkPayload(payload)).readings));
  await client.subscribeAsync('outpost/v1/gw/+/telemetry', { qos: 1 });
  return readings;
}

async function write(api: GatewayApi, device: string, point: string, value: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await api.fetch(`${api.base}/api/v1/devices/${device}/points/${point}/write`, json({ value }));
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('a protocol added through the registry alone (test/fixtures/protocols/register-file)', () => {
  it('validates its device entries with its own schema once registered, naming a bad field by its path', () => {
    const files = new RegisterFiles();
    const registry = new ProtocolRegistry([...builtinProtocols, registerFileProtocol(files)]);
    const raw = siteConfig('mqtt://127.0.0.1:9', '/tmp/seam.db');

    const config = parseConfig(raw, 'site.yaml', registry);
    // Defaults filled by the protocol's schema.
    expect(config.devices[0]).toMatchObject({ id: 'boiler-1', protocol: 'register-file', points: [{ name: 'temp', address: 0, writable: false }, { writable: true }, { writable: true }] });

    const bad = siteConfig('mqtt://127.0.0.1:9', '/tmp/seam.db', { tempAddress: 999 });
    expect(problems(bad, registry)).toEqual([expect.stringMatching(/^devices\[0\]\.points\[0\]\.address: .*<=255/)]);

    // The rule's write target is checked against the protocol's points and their writability.
    const readOnly = siteConfig('mqtt://127.0.0.1:9', '/tmp/seam.db', { ruleWrites: 'temp' });
    expect(problems(readOnly, registry)).toEqual(['rules[1].write.point: point "temp" of "boiler-1" is not writable (set writable: true)']);

    // Without the registration the same device entry is unknown.
    expect(problems(raw)).toEqual([expect.stringMatching(/^devices\[0\]\.protocol: /)]);
  });

  it('runs in the gateway: its readings reach the cloud, a rule writes one of its points and the API another', async () => {
    const files = new RegisterFiles();
    const boiler = files.file('boiler');
    boiler.set(0, 21.5);
    const registry = new ProtocolRegistry([...builtinProtocols, registerFileProtocol(files)]);
    const cloud = await SimCloud.start();
    cleanup.push(() => cloud.stop());
    const atCloud = await cloudReadings(cloud);
    const dir = mkdtempSync(join(tmpdir(), 'outpost-seam-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));

    const config = parseConfig(siteConfig(cloud.url, join(dir, 'o.db')), 'site.yaml', registry);
    const gateway = await Gateway.start(config, { protocols: registry, log: createLogger({ level: 'silent' }) });
    cleanup.push(() => gateway.stop());
    const api = gatewayApi(gateway.ports.http, dir, TEST_TOKENS.operate);

    await waitFor('the boiler temperature at the cloud', () => atCloud.some((r) => r.device === 'boiler-1' && r.point === 'temp' && r.value === 21.5 && r.quality === 'good'));
    expect(gateway.status().drivers).toContainEqual(expect.objectContaining({ name: 'register-file' }));

    // Rule route write: temp + 1 lands in the setpoint register, and follows the temperature.
    await waitFor('the rule to write the setpoint', () => boiler.get(1) === 22.5);
    boiler.set(0, 30);
    await waitFor('the rule to follow the temperature', () => boiler.get(1) === 31);

    // The local API writes through the same capability, with the value read back.
    expect(await write(api, 'boiler-1', 'valve', 55)).toEqual({ status: 200, body: { device: 'boiler-1', point: 'valve', value: 55, readBack: 55 } });
    expect(boiler.get(2)).toBe(55);
    expect(await write(api, 'boiler-1', 'temp', 1)).toMatchObject({ status: 400, body: { error: expect.stringMatching(/not writable/) as unknown } });
    expect(await write(api, 'boiler-1', 'nope', 1)).toMatchObject({ status: 404 });
    boiler.unreachable = true;
    expect(await write(api, 'boiler-1', 'valve', 60)).toMatchObject({ status: 502, body: { error: expect.stringMatching(/does not answer/) as unknown } });
    // Its points go stale at the cloud while it does not answer.
    await waitFor('stale boiler readings at the cloud', () => atCloud.some((r) => r.device === 'boiler-1' && r.quality === 'stale'));
  });
});
