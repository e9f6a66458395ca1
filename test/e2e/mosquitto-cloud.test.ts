import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, it } from 'vitest';
import { CloudConsumer } from '../../sim/cloud.js';
import { Mosquitto } from '../../sim/mosquitto.js';
import { cloudOutageScenario } from '../helpers/outage-scenario.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

describe('Debian Mosquitto as the cloud broker', () => {
  it.each([1, 2] as const)('delivers every reading across a Mosquitto restart at QoS %i (persistent consumer session, 0 lost after dedup)', async (qos) => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-mosq-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    // Fails (does not skip) when mosquitto is not installed: CI installs it.
    const broker = await Mosquitto.start({ dir, persistence: true });
    cleanup.push(() => broker.stop());
    const consumer = new CloudConsumer(broker.url, 'outpost', `cloud-consumer-${process.pid}-${qos}`);
    await consumer.start();
    cleanup.push(() => consumer.stop());
    await cloudOutageScenario({ url: broker.url, ledger: consumer.ledger, stop: () => broker.stop(), start: () => broker.start() }, qos);
  });
});
