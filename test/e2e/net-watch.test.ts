import type { NetworkInterfaceInfo } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { outboxMigrations, SqliteOutbox } from '../../cloud-bridge/outbox.js';
import { Uplink } from '../../cloud-bridge/uplink.js';
import { makeEnvelope, systemClock } from '../../runtime/contracts/index.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { migrate, openDatabase } from '../../runtime/store/database.js';
import { runtimeMigrations } from '../../runtime/store/runtime-schema.js';
import { cloudBehindDeadLink } from '../helpers/cloud-behind-link.js';
import { silentLogger } from '../helpers/fakes.js';
import { uplinkOptions } from '../helpers/uplink-options.js';
import { sleep, waitFor } from '../helpers/wait.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const iface = (address: string): NodeJS.Dict<NetworkInterfaceInfo[]> => ({
  lo: [{ address: '127.0.0.1', netmask: '255.0.0.0', family: 'IPv4', mac: '00:00:00:00:00:00', internal: true, cidr: '127.0.0.1/8' }],
  wwan0: [{ address, netmask: '255.255.255.0', family: 'IPv4', mac: '02:00:00:00:00:01', internal: false, cidr: `${address}/24` }],
});

describe('reconnect when the host network changes', () => {
  it('ends the backoff wait the moment an interface gets an address, and drains at once', async () => {
    const { dir, cloud, link } = await cloudBehindDeadLink('netwatch', cleanup);
    const db = openDatabase({ path: join(dir, 'o.db'), synchronous: 'normal' });
    cleanup.push(() => Promise.resolve(db.close()));
    migrate(db, 'runtime', runtimeMigrations);
    migrate(db, 'outbox', outboxMigrations);
    const outbox = new SqliteOutbox(db, 64 * 2 ** 20, new PromMetrics());
    db.transaction(() =>
      outbox.append(
        Array.from({ length: 50 }, (_, i) => ({
          stream: 'telemetry',
          envelope: makeEnvelope({ id: `r${i}`, device: 'd', point: 'p', value: i, quality: 'good', ts: i, seq: i }),
        })),
        Date.now(),
      ),
    )();
    outbox.committed();
    let addresses = iface('10.64.0.7');
    const uplink = new Uplink(
      uplinkOptions(link.url, {
        gatewayId: 'gw-net',
        clientId: 'gw-net',
        batchSize: 100,
        // Ten minutes, and the jitter always near its ceiling: only a network change ends the wait.
        backoff: { initialMs: 600_000, maxMs: 600_000 },
        random: () => 0.999,
        compression: 'deflate',
        maxAttempts: 8,
        netWatchMs: 50,
        interfaces: () => addresses,
      }),
      outbox,
      systemClock,
      silentLogger,
      new PromMetrics(),
    );
    cleanup.push(() => uplink.stop());
    await uplink.start();
    await waitFor('the first attempt to fail', () => uplink.linkState === 'down', 5000, 10);

    // The path to the cloud heals, but nothing on the host changed: the uplink keeps waiting.
    link.restore();
    await sleep(1500);
    expect(uplink.linkState).toBe('down');
    expect(cloud.ledger.unique).toBe(0);

    // The modem comes back with a new address: reconnect and drain without waiting.
    const changed = Date.now();
    addresses = iface('10.64.0.9');
    await waitFor('the backlog at the cloud', () => cloud.ledger.unique === 50, 5000, 10);
    expect(Date.now() - changed).toBeLessThan(2000);
    expect(uplink.linkState).toBe('up');
    await waitFor('the acknowledged backlog to leave the outbox', () => outbox.stats().depth === 0, 5000, 10);

    // A change while the path is still broken costs one attempt, then the backoff holds again.
    link.down();
    await waitFor('the link to drop', () => uplink.linkState === 'down', 5000, 10);
    const attempts = link.connections + link.refused;
    addresses = iface('10.64.0.11');
    await sleep(1000);
    expect(link.connections + link.refused - attempts).toBe(1);
    expect(uplink.linkState).toBe('down');
  }, 30_000);
});
