import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../runtime/config/load.js';
import { localTopics, type Component } from '../../runtime/contracts/index.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { PARTS } from '../../runtime/parts/index.js';
import type { Part } from '../../runtime/parts/site.js';
import { SimCloud } from '../../sim/cloud.js';
import { profiles, SimModbusSlave } from '../../sim/modbus-slave.js';
import { pointEntries } from '../../sim/site.js';
import { ReleaseSigner } from '../../sim/ota/release-signer.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { deviceCredentials, testIdentities } from '../helpers/broker-access.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** A part that records its lifecycle in `log`, and fails to start when told to. */
function recording(name: string, log: string[], failStart = false): Part {
  return {
    name,
    build: (): Component => ({
      name,
      start: async () => {
        await sleep(1);
        if (failStart) throw new Error(`${name}: port in use`);
        log.push(`start ${name}`);
      },
      stop: async (opts) => {
        await sleep(1);
        log.push(`stop ${name}${opts?.drainMs ? ` drain ${opts.drainMs}` : ''}`);
      },
      status: () => ({ [name]: 'ok' }),
    }),
  };
}

const minimal = (dir: string): ReturnType<typeof parseConfig> =>
  parseConfig({ gateway: { id: 'life-gw' }, cloud: { url: 'mqtt://127.0.0.1:1' }, storage: { path: join(dir, 'outpost.db') } });

/** Live handles that keep this process alive (ref'd timers, sockets, servers), counted by kind. */
function handles(): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of process.getActiveResourcesInfo()) m.set(r, (m.get(r) ?? 0) + 1);
  return m;
}

describe('one lifecycle for every part', () => {
  it('starts the parts in list order, stops them in reverse, and a status is the sections they report', async () => {
    const log: string[] = [];
    const gw = await Gateway.start(minimal('/nonexistent'), { parts: ['a', 'b', 'c'].map((n) => recording(n, log)), log: createLogger({ level: 'silent' }) });
    expect(gw.status()).toMatchObject({ gateway: 'life-gw', a: 'ok', b: 'ok', c: 'ok' });
    await gw.stop({ drainMs: 5 });
    await gw.stop();
    expect(log).toEqual(['start a', 'start b', 'start c', 'stop c drain 5', 'stop b drain 5', 'stop a drain 5']);
  });

  it('stops what already started, in reverse, when a part fails to start, and says why', async () => {
    const log: string[] = [];
    const parts = [recording('a', log), recording('b', log), recording('c', log, true), recording('d', log)];
    await expect(Gateway.start(minimal('/nonexistent'), { parts, log: createLogger({ level: 'silent' }) })).rejects.toThrow('c: port in use');
    expect(log).toEqual(['start a', 'start b', 'stop b', 'stop a']);
  });

  it('lists every part of the gateway once, the store first and intake last', () => {
    const names = PARTS.map((p) => p.name);
    expect(new Set(names).size).toBe(names.length);
    expect(names[0]).toBe('store');
    expect(names.indexOf('mqtt-listener')).toBeGreaterThan(names.indexOf('drivers'));
    expect(names.indexOf('uplink')).toBeLessThan(names.indexOf('rules'));
  });

  it('leaves nothing that keeps the process alive once a whole gateway stopped (Modbus, MQTT children, OTA, uplink)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-life-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const cloud = await SimCloud.start();
    cleanup.push(() => cloud.stop());
    const plc = await SimModbusSlave.start({ points: profiles.plc() });
    cleanup.push(() => plc.stop());
    const signer = ReleaseSigner.generate('k1');
    await sleep(50);
    const before = handles();

    const config = parseConfig({
      gateway: { id: 'life-gw' },
      broker: { host: '127.0.0.1', port: 0, acceptUnknownDevices: true },
      identities: testIdentities,
      http: { host: '127.0.0.1', port: 0 },
      devices: [{ id: 'plc-1', protocol: 'modbus-tcp', host: plc.host, port: plc.port, pollIntervalMs: 100, points: pointEntries(plc.points) }],
      rules: [{ id: 'all', type: 'filter', match: { device: '*', point: '*' } }],
      cloud: { url: cloud.url, lingerMs: 0, syncWindows: [{ cron: '* * * * * *', durationMs: 60_000 }], backoff: { initialMs: 100, maxMs: 500 } },
      storage: { path: join(dir, 'outpost.db') },
      ota: { trustedKeys: { k1: signer.publicKeyPem }, server: { host: '127.0.0.1', port: 0, tenant: 't', closedNetwork: true } },
    });
    const gateway = await Gateway.start(config, { log: createLogger({ level: 'silent' }) });
    const child = await mqtt.connectAsync(`mqtt://127.0.0.1:${gateway.ports.broker}`, { ...deviceCredentials('pump-1'), reconnectPeriod: 0 });
    for (let i = 0; i < 5; i++) await child.publishAsync(localTopics.telemetry('pump-1'), JSON.stringify({ points: { flow: i } }), { qos: 1 });
    await waitFor('readings at the cloud', () => (cloud.ledger.byDevice.get('plc-1') ?? 0) > 0 && (cloud.ledger.byDevice.get('pump-1') ?? 0) === 5, 15_000);
    const ddi = await fetch(`http://127.0.0.1:${gateway.ports.ota}/t/controller/v1/valve-1`);
    expect(ddi.status).toBe(200);
    expect(handles().size).toBeGreaterThan(0);

    await gateway.stop({ drainMs: 2000 });
    await child.endAsync(true);
    // What the gateway opened is closed: no kind of handle is more numerous than before it started.
    const noMore = (): boolean => [...handles()].every(([kind, n]) => n <= (before.get(kind) ?? 0));
    await waitFor('no more handles than before', noMore, 5_000, 50, () => JSON.stringify({ before: [...before], after: [...handles()] }));
  });
});
