import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { CloudConsumer } from '../../sim/cloud.js';
import { Mosquitto } from '../../sim/mosquitto.js';
import { deviceCredentials } from '../helpers/broker-access.js';
import { startSiteAndGateway } from '../helpers/site-gateway.js';
import { waitFor } from '../helpers/wait.js';

/** Characters deflate cannot shrink much, as a serial number dump or a base64 blob would be. */
const noise = (n: number): string => Array.from({ length: n }, (_, i) => String.fromCharCode(33 + ((i * 7919 + ((i * i) % 97)) % 90))).join('');

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

describe('a reading over the cloud broker’s message size limit (Mosquitto, MQTT 5)', () => {
  it('is isolated and dead-lettered within seconds, status says the link is failing meanwhile, and the stream goes on', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-poison-mq-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    // Mosquitto answers a PUBLISH over message_size_limit with a PUBACK of reason code 0x95, which
    // MQTT 5 does not allow in a PUBACK: the client library rejects the packet as malformed.
    const broker = await Mosquitto.start({ dir, extra: ['message_size_limit 600'] });
    cleanup.push(() => broker.stop());
    const consumer = new CloudConsumer(broker.url, 'outpost', 'poison-mq-consumer');
    await consumer.start();
    cleanup.push(() => consumer.stop());
    // As the issue found it: MQTT 5, maxAttempts 2, every other uplink setting at its default.
    const sg = await startSiteAndGateway(broker.url, { meters: 0, boilers: 0, children: 3, childIntervalMs: 100, pollIntervalMs: 1000 }, undefined, {
      protocolVersion: 5,
      maxAttempts: 2,
      batchSize: 500,
      // Batches go as soon as readings come, so that several are in flight when the refusal comes.
      lingerMs: 0,
      backoff: { initialMs: 500, maxMs: 30_000 },
    });
    cleanup.push(() => sg.close());
    await waitFor('readings at the cloud', () => consumer.ledger.uniqueFrom('e2e-gw') > 10, 15_000);

    const poisoner = mqtt.connect(`mqtt://127.0.0.1:${sg.gateway.ports.broker}`, deviceCredentials('poisoner'));
    cleanup.push(() => poisoner.endAsync().then(() => undefined));
    await poisoner.publishAsync('outpost/v1/dev/poisoner/telemetry', JSON.stringify({ id: 'p1', points: { note: noise(1000), ok: 1 } }), { qos: 1 });
    const t0 = Date.now();
    const links = new Set<string>();
    await waitFor(
      'the bad reading dead-lettered',
      () => {
        links.add(sg.gateway.status().link);
        return sg.gateway.status().outbox.deadLettered === 1;
      },
      60_000,
      20,
      () => JSON.stringify({ outbox: sg.gateway.status().outbox, link: sg.gateway.status().link }),
    );
    const isolatedInMs = Date.now() - t0;
    expect(links.has('failing')).toBe(true);
    // The stream goes on, the good point of the same message included, and the link is up again.
    const before = consumer.ledger.uniqueFrom('e2e-gw');
    await waitFor('more readings after the dead letter', () => consumer.ledger.uniqueFrom('e2e-gw') > before + 10, 15_000);
    await waitFor('the good point of the message', () => consumer.ledger.has('poisoner:p1:ok'), 15_000);
    expect(consumer.ledger.has('poisoner:p1:note')).toBe(false);
    await waitFor('link up', () => sg.gateway.status().link === 'up', 10_000, 50, () => JSON.stringify({ link: sg.gateway.status().link, uplink: sg.gateway.status().uplink, outbox: sg.gateway.status().outbox }));
    // Only the bad reading: the records of the other stream (twins) that were in flight when the
    // connection broke are not dead-lettered for it.
    expect(sg.gateway.status().outbox.deadLettered).toBe(1);
    // A bound a test can hold on a loaded machine; the figure itself is in the note of the issue.
    expect(isolatedInMs).toBeLessThan(30_000);
    console.log(`poison isolated and dead-lettered in ${isolatedInMs} ms`);
  }, 120_000);
});
