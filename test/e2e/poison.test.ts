import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { CloudConsumer } from '../../sim/cloud.js';
import { Mosquitto } from '../../sim/mosquitto.js';
import { CLI } from '../helpers/gateway-process.js';
import { startSiteAndGateway } from '../helpers/site-gateway.js';
import { waitFor } from '../helpers/wait.js';
import { deviceCredentials } from '../helpers/broker-access.js';
import { TEST_TOKENS } from '../helpers/api.js';

const exec = promisify(execFile);
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

describe('a reading the cloud broker refuses', () => {
  it('goes to the dead-letter table after repeated failures without blocking its stream, and can be listed and replayed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-poison-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    // A broker that refuses messages over 1,000 bytes (MQTT 5 reason code; mqtt.js drops the connection):
    // any batch with the reading of 1,000 characters below, even alone (about 1,050 bytes as
    // uncompressed columns, 1,200 as JSON), and none of the others (batches of 4 readings).
    const broker = await Mosquitto.start({ dir, extra: ['message_size_limit 1000'] });
    cleanup.push(() => broker.stop());
    const consumer = new CloudConsumer(broker.url, 'outpost', 'poison-consumer');
    await consumer.start();
    cleanup.push(() => consumer.stop());
    const sg = await startSiteAndGateway(broker.url, { meters: 0, boilers: 0, children: 2, childIntervalMs: 50, pollIntervalMs: 1000 }, undefined, {
      protocolVersion: 5,
      compression: 'none',
      batchSize: 4,
      maxAttempts: 3,
      backoff: { initialMs: 50, maxMs: 200 },
    });
    cleanup.push(() => sg.close());
    await waitFor('readings at the cloud', () => consumer.ledger.uniqueFrom('e2e-gw') > 50);

    // One child sends a reading too large for the broker, then carries on as usual.
    const poisoner = mqtt.connect(`mqtt://127.0.0.1:${sg.gateway.ports.broker}`, deviceCredentials('poisoner'));
    cleanup.push(() => poisoner.endAsync().then(() => undefined));
    await poisoner.publishAsync(
      'outpost/v1/dev/poisoner/telemetry',
      JSON.stringify({ id: 'p1', points: { blob: Array.from({ length: 1000 }, (_, i) => String.fromCharCode(33 + ((i * 7919) % 90))).join('').slice(0, 1024) + 'x'.repeat(0), ok: 1 } }),
      { qos: 1 },
    );
    await waitFor('the bad reading dead-lettered', () => sg.gateway.status().outbox.deadLettered === 1, 15_000, 25, () => JSON.stringify({ s: sg.gateway.status().outbox, link: sg.gateway.status().link, c: consumer.ledger.unique }));
    // The stream went on: everything else arrives, including the good point of the same message.
    const before = consumer.ledger.uniqueFrom('e2e-gw');
    await waitFor('more readings after the dead letter', () => consumer.ledger.uniqueFrom('e2e-gw') > before + 50, 15_000);
    await waitFor('the good point of the message', () => consumer.ledger.has('poisoner:p1:ok'), 15_000);
    expect(consumer.ledger.has('poisoner:p1:blob')).toBe(false);

    // As an operator runs it: the token in the environment, the gateway's certificate pinned.
    const conn = ['--url', `https://127.0.0.1:${sg.gateway.ports.http}`, '--ca', join(sg.dir, 'http.crt')];
    const env = { ...process.env, OUTPOST_TOKEN: TEST_TOKENS.operate };
    const list = JSON.parse((await exec(process.execPath, [CLI, 'dead-letters', ...conn], { env })).stdout) as {
      count: number;
      items: Array<{ id: number; stream: string; reason: string; reading: { id: string } }>;
    };
    expect(list.count).toBe(1);
    expect(list.items[0]).toMatchObject({ stream: 'telemetry', reading: { id: 'poisoner:p1:blob' } });
    expect(list.items[0]!.reason).toMatch(/connection lost|refused|protocol error from the cloud broker/);

    const replay = JSON.parse((await exec(process.execPath, [CLI, 'dead-letters', ...conn, '--replay', '--ids', String(list.items[0]!.id)], { env })).stdout) as {
      replayed: number;
    };
    expect(replay.replayed).toBe(1);
    // Still too large: it fails again and comes back to the dead-letter table, counted again.
    await waitFor('dead-lettered again', () => sg.gateway.status().outbox.deadLettered === 2, 30_000);
    const s = sg.gateway.status().outbox;
    expect(s.replayed).toBe(1);
    expect(s.appended + s.replayed).toBe(s.delivered + s.expired + s.dropped + s.deadLettered + s.depth);
  });
});
