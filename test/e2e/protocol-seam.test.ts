import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { builtinProtocols } from '../../drivers/index.js';
import { ConfigError, parseConfig } from '../../runtime/config/load.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { ProtocolRegistry } from '../../runtime/protocols.js';
import { SimCloud } from '../../sim/cloud.js';
import { RegisterFiles } from '../fixtures/protocols/register-file/driver.js';
import { registerFileProtocol } from '../fixtures/protocols/register-file/protocol.js';
import { waitFor } from '../helpers/wait.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/**
 * The protocol seam, end to end: a protocol the gateway does not ship (test/fixtures/protocols/
 * register-file) joins it through the registry with one line, and its devices are validated,
 * polled, forwarded to the cloud and written by rules and the API like any other.
 */
describe('a protocol added through the registry', () => {
  const plant = new RegisterFiles();
  // The one registry line.
  const protocols = new ProtocolRegistry([...builtinProtocols, registerFileProtocol(plant)]);

  const site = (cloudUrl: string, dir: string, points: unknown[]): Record<string, unknown> => ({
    gateway: { id: 'seam-gw' },
    broker: { host: '127.0.0.1', port: 0 },
    http: { host: '127.0.0.1', port: 0 },
    devices: [{ id: 'tank-1', protocol: 'register-file', pollIntervalMs: 50, points }],
    rules: [
      { id: 'all', type: 'filter', match: { device: '*', point: '*' } },
      // The valve follows the level: open (1) above 10 m.
      { id: 'valve', type: 'filter', match: { device: 'tank-1', point: 'level' }, set: { value: 'value > 10 ? 1 : 0' }, route: 'write', write: { device: 'tank-1', point: 'valve', minIntervalMs: 0 } },
    ],
    cloud: { url: cloudUrl, lingerMs: 0, backoff: { initialMs: 100, maxMs: 1000 } },
    storage: { path: join(dir, 'outpost.db') },
  });

  it('is validated by its own schema, refused by path when wrong, unknown to a gateway without it', () => {
    const dir = '/nonexistent';
    const good = [{ name: 'level', address: 0 }, { name: 'valve', address: 1, writable: true }];
    expect(parseConfig(site('mqtt://127.0.0.1:1', dir, good), 'site', protocols).devices[0]).toMatchObject({ protocol: 'register-file', pollIntervalMs: 50 });
    const problems = (points: unknown[], registry = protocols): readonly string[] => {
      try {
        parseConfig(site('mqtt://127.0.0.1:1', dir, points), 'site', registry);
      } catch (err) {
        if (err instanceof ConfigError) return err.problems;
        throw err;
      }
      return [];
    };
    expect(problems([{ name: 'level', address: 300 }])).toEqual(expect.arrayContaining([expect.stringMatching(/^devices\[0\]\.points\[0\]\.address: /)]));
    expect(problems([{ name: 'level', address: 0 }, { name: 'valve', address: 1 }])).toEqual(['rules[1].write.point: point "valve" of "tank-1" is not writable (set writable: true)']);
    // Without the registry line, the protocol does not exist.
    expect(problems(good, new ProtocolRegistry(builtinProtocols))).toEqual([expect.stringMatching(/^devices\[0\]/)]);
  });

  it('runs in a gateway: readings reach the cloud, a rule writes through its write capability, and so does the API', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-seam-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const cloud = await SimCloud.start();
    cleanup.push(() => cloud.stop());
    plant.set('tank-1', 'level', 4);
    plant.set('tank-1', 'valve', 0);
    const config = parseConfig(site(cloud.url, dir, [{ name: 'level', address: 0, unit: 'm' }, { name: 'valve', address: 1, writable: true }]), 'site', protocols);
    const gateway = await Gateway.start(config, { protocols, log: createLogger({ level: 'silent' }) });
    cleanup.push(() => gateway.stop());

    await waitFor('tank readings at the cloud', () => (cloud.ledger.byDevice.get('tank-1') ?? 0) >= 10, 15_000);
    expect(gateway.status().drivers.map((d) => d.name)).toEqual(['mqtt:children', 'register-file']);

    // The level rises: the rule opens the valve, through the driver's write (read back).
    plant.set('tank-1', 'level', 12);
    await waitFor('the rule to open the valve', () => plant.get('tank-1', 'valve') === 1, 10_000);
    expect(await gateway.metrics.total('outpost_actuations_total')).toBeGreaterThan(0);

    // The API writes through the same capability, and refuses what the driver refuses.
    const api = `http://127.0.0.1:${gateway.ports.http}/api/v1/devices/tank-1/points`;
    const post = (point: string, value: unknown): Promise<Response> =>
      fetch(`${api}/${point}/write`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ value }) });
    plant.set('tank-1', 'level', 5);
    await waitFor('the rule to close the valve', () => plant.get('tank-1', 'valve') === 0, 10_000);
    const res = await post('valve', 1);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ device: 'tank-1', point: 'valve', value: 1, readBack: 1 });
    const refused = await post('level', 3);
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as { error: string }).error).toMatch(/not writable/);
  });
});
