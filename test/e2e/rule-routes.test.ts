import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../runtime/config/load.js';
import type { Envelope } from '../../runtime/contracts/index.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { profiles, SimModbusSlave } from '../../sim/modbus-slave.js';
import { pointEntries } from '../../sim/site.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { deviceCredentials, testIdentities } from '../helpers/broker-access.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function actuations(gateway: Gateway): Promise<Record<string, number>> {
  const r: Record<string, number> = {};
  for (const m of (await gateway.metrics.text()).matchAll(/^outpost_actuations_total\{[^}]*outcome="(\w+)"[^}]*\} (\d+)$/gm)) r[m[1]!] = (r[m[1]!] ?? 0) + Number(m[2]);
  return r;
}

describe('rule routes to the local broker and to Modbus writes', () => {
  it('a reading drives a PLC setpoint through the write guard; the setpoint as read back is published on a local topic', async () => {
    const plc = await SimModbusSlave.start({ points: profiles.plc() });
    cleanup.push(() => plc.stop());
    const dir = mkdtempSync(join(tmpdir(), 'outpost-routes-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const config = parseConfig({
      gateway: { id: 'routes-gw' },
      broker: { host: '127.0.0.1', port: 0, grants: [{ identities: ['watcher'], subscribe: ['#'] }] },
      identities: testIdentities,
      http: { host: '127.0.0.1', port: 0 },
      devices: [{ id: 'plc-1', protocol: 'modbus-tcp', host: plc.host, port: plc.port, pollIntervalMs: 100, points: pointEntries(plc.points) }],
      rules: [
        // The measured speed, rounded to 0.5 Hz, becomes the setpoint: at most one write per 400 ms.
        { id: 'follow', type: 'filter', match: { device: 'plc-1', point: 'speed' }, set: { value: '$round(value * 2) / 2' }, route: 'modbus', write: { device: 'plc-1', point: 'speed-setpoint', minIntervalMs: 400, sources: ['plc-1'] } },
        { id: 'share', type: 'filter', match: { topic: 'plc-1/speed-setpoint' }, route: 'mqtt', mqtt: { topic: 'site/{device}/{point}', qos: 1 } },
      ],
      cloud: { url: 'mqtt://127.0.0.1:9' },
      storage: { path: join(dir, 'o.db') },
    });
    const gateway = await Gateway.start(config, { log: createLogger({ level: 'silent' }) });
    cleanup.push(() => gateway.stop());
    const local = await mqtt.connectAsync(`mqtt://127.0.0.1:${gateway.ports.broker}`, { ...deviceCredentials('watcher'), reconnectPeriod: 0 });
    cleanup.push(() => local.endAsync());
    const seen: Array<{ topic: string; reading: Envelope }> = [];
    local.on('message', (topic, payload) => seen.push({ topic, reading: JSON.parse(payload.toString()) as Envelope }));
    await local.subscribeAsync('site/#', { qos: 1 });

    const t0 = Date.now();
    await waitFor('three rule writes', async () => ((await actuations(gateway)).written ?? 0) >= 3, 10_000);
    await sleep(500);
    const elapsed = Date.now() - t0;
    const a = await actuations(gateway);
    // ~10 speed readings a second against one write per 400 ms: the guard coalesced the rest.
    expect(a.written).toBeLessThanOrEqual(Math.ceil(elapsed / 400) + 1);
    expect((a.coalesced ?? 0) + (a.unchanged ?? 0)).toBeGreaterThan(0);
    expect(a.failed ?? 0).toBe(0);
    // What the PLC holds now is what the rule wrote: a multiple of 0.5 Hz, published on the local topic.
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((s) => s.topic === 'site/plc-1/speed-setpoint' && s.reading.device === 'plc-1' && s.reading.point === 'speed-setpoint')).toBe(true);
    const last = seen.at(-1)!.reading.value as number;
    expect(Math.abs(last * 2 - Math.round(last * 2))).toBeLessThan(1e-9);
    expect(last).toBeGreaterThanOrEqual(40);
    expect(last).toBeLessThanOrEqual(50);
  });
});
