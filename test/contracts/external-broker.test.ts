import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { externalBrokerSchema } from '../../runtime/broker/config.js';
import { ExternalBroker } from '../../runtime/broker/external-broker.js';
import { systemClock, type InboundPublish } from '../../runtime/contracts/index.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { Mosquitto } from '../../sim/mosquitto.js';
import { silentLogger } from '../helpers/fakes.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { noneLeftSince, openHandles } from './open-handles.js';

/**
 * The LocalBroker contract as it holds for an external site broker (Debian Mosquitto, persistence
 * on): the device's PUBACK is Mosquitto's, so what the embedded broker's suite proves towards the
 * device is proven here towards the gateway's session: a message whose interceptor has not
 * resolved is not acknowledged (the broker delivers it again, even across its own restart), a
 * rejected one comes again, a stop finishes what it took and leaves the rest in the session.
 */
const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function deferred(): { promise: Promise<void>; resolve: () => void; reject: (err: Error) => void } {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

async function siteBroker(): Promise<Mosquitto> {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-ext-contract-'));
  cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
  const broker = await Mosquitto.start({ dir, persistence: true });
  cleanup.push(() => broker.stop());
  return broker;
}

/** The gateway's side: started, with its interceptors registered by `setup`, then connected. */
async function gateway(broker: Mosquitto, setup: (b: ExternalBroker) => void = () => undefined): Promise<ExternalBroker> {
  const b = new ExternalBroker({ config: externalBrokerSchema.parse({ url: broker.url, backoff: { initialMs: 50, maxMs: 200 } }), gatewayId: 'contract-gw' });
  await b.start({ clock: systemClock, log: silentLogger, metrics: new PromMetrics() });
  setup(b);
  b.connect();
  cleanup.push(() => b.stop());
  await waitFor('the site broker link up', () => b.linkState === 'up', 10_000, 10);
  // The subscriptions are made right after CONNACK.
  await sleep(100);
  return b;
}

async function device(broker: Mosquitto, clientId: string, opts: IClientOptions = {}): Promise<MqttClient> {
  const client = await mqtt.connectAsync(broker.url, { clientId, reconnectPeriod: 0, ...opts });
  cleanup.push(() => client.endAsync(true));
  return client;
}

describe('local broker contract: ExternalBroker (Debian Mosquitto as the site broker)', () => {
  it('does not acknowledge a message before its interceptor resolved: the site broker delivers it again, across its own restart', async () => {
    const broker = await siteBroker();
    const commits = [deferred(), deferred()];
    const seen: InboundPublish[] = [];
    const gw = await gateway(broker, (b) =>
      b.intercept((msg) => {
        seen.push(msg);
        return commits[seen.length - 1]?.promise ?? Promise.resolve();
      }),
    );
    const dev = await device(broker, 'dev-1');
    await dev.publishAsync('outpost/v1/dev/dev-1/telemetry', '{"points":{"t":1}}', { qos: 1 });
    await waitFor('the interceptor', () => seen.length === 1);
    // MQTT does not carry the publisher: the site broker's ACL answers for it.
    expect(seen[0]).toMatchObject({ clientId: undefined, topic: 'outpost/v1/dev/dev-1/telemetry', qos: 1 });
    // The site broker goes down and comes back (a clean stop saves its sessions): the unacknowledged message comes again.
    await broker.restart();
    await waitFor('the message delivered again', () => seen.length === 2, 10_000);
    expect(seen[1]!.payload.toString()).toBe('{"points":{"t":1}}');
    commits[0]!.resolve();
    commits[1]!.resolve();
    await waitFor('acknowledged', () => (gw.status().siteBroker as { acknowledged: number }).acknowledged >= 1);
    await sleep(200);
    // Acknowledged now: another restart brings nothing back.
    await broker.restart();
    await waitFor('the site broker link up again', () => gw.linkState === 'up', 10_000, 10);
    await sleep(500);
    expect(seen).toHaveLength(2);
  });

  it('a rejected interceptor means no PUBACK: the connection closes and the site broker sends the message again', async () => {
    const broker = await siteBroker();
    const seen: string[] = [];
    let calls = 0;
    const gw = await gateway(broker, (b) => {
      b.intercept(() => {
        calls++;
        return calls === 1 ? Promise.reject(new Error('disk full')) : Promise.resolve();
      });
      b.observe((m) => seen.push(`${m.topic} ${m.payload.toString()}`));
    });
    const dev = await device(broker, 'dev-3');
    await dev.publishAsync('outpost/v1/dev/dev-3/telemetry', 'once', { qos: 1 });
    await waitFor('the second delivery', () => calls === 2, 10_000);
    await waitFor('observed', () => seen.length === 1);
    expect(seen).toEqual(['outpost/v1/dev/dev-3/telemetry once']);
    const s = gw.status().siteBroker as { connects: number; notAcknowledged: number; acknowledged: number };
    expect(s).toMatchObject({ notAcknowledged: 1, acknowledged: 1 });
    expect(s.connects).toBe(2);
  });

  it('acknowledges each of 500 messages in flight once, while their commits finish out of order', async () => {
    const broker = await siteBroker();
    const seen: string[] = [];
    // Commits finish out of order (the PUBACKs are still written in arrival order).
    const gw = await gateway(broker, (b) => b.intercept((msg) => new Promise((resolve) => setTimeout(() => {
      seen.push(msg.payload.toString());
      resolve();
    }, Math.floor(Math.random() * 20)))));
    const dev = await device(broker, 'dev-4');
    await Promise.all(Array.from({ length: 500 }, (_, i) => dev.publishAsync('outpost/v1/dev/dev-4/telemetry', String(i), { qos: 1 })));
    await waitFor('every message', () => seen.length === 500, 10_000);
    expect(new Set(seen).size).toBe(500);
    await waitFor('every PUBACK written', () => (gw.status().siteBroker as { acknowledged: number }).acknowledged === 500);
    // Nothing is left unacknowledged once the broker read the PUBACKs: a restart delivers nothing again.
    await sleep(300);
    await broker.restart();
    await sleep(1000);
    expect(seen).toHaveLength(500);
  });

  it('observers see telemetry at QoS 1 and 0, retained births and last wills', async () => {
    const broker = await siteBroker();
    const seen: Array<{ topic: string; payload: string }> = [];
    await gateway(broker, (b) => b.observe((m) => seen.push({ topic: m.topic, payload: m.payload.toString() })));
    const dev = await device(broker, 'dev-5');
    await dev.publishAsync('outpost/v1/dev/dev-5/telemetry', 'a', { qos: 1 });
    await dev.publishAsync('outpost/v1/dev/dev-5/status', '{"state":"online"}', { qos: 1, retain: true });
    await dev.publishAsync('outpost/v1/dev/dev-5/telemetry', 'b', { qos: 0 });
    const mortal = await device(broker, 'dev-6', { will: { topic: 'outpost/v1/dev/dev-6/status', payload: Buffer.from('{"state":"offline"}'), qos: 1, retain: true } });
    mortal.stream.destroy();
    await waitFor('the will', () => seen.some((m) => m.topic === 'outpost/v1/dev/dev-6/status'), 5000);
    await waitFor('the QoS 0 message', () => seen.some((m) => m.payload === 'b'));
    expect(seen).toEqual(
      expect.arrayContaining([
        { topic: 'outpost/v1/dev/dev-5/telemetry', payload: 'a' },
        { topic: 'outpost/v1/dev/dev-5/status', payload: '{"state":"online"}' },
        { topic: 'outpost/v1/dev/dev-5/telemetry', payload: 'b' },
        { topic: 'outpost/v1/dev/dev-6/status', payload: '{"state":"offline"}' },
      ]),
    );
  });

  it('stopIntake finishes and acknowledges the message being committed; what comes later waits in the session for the next run', async () => {
    const broker = await siteBroker();
    const commit = deferred();
    const first: string[] = [];
    const gw = await gateway(broker, (b) =>
      b.intercept((msg) => {
        first.push(msg.payload.toString());
        return commit.promise;
      }),
    );
    const dev = await device(broker, 'dev-7');
    await dev.publishAsync('outpost/v1/dev/dev-7/telemetry', 'taken', { qos: 1 });
    await waitFor('the interceptor', () => first.length === 1);
    let stopped = false;
    const stopping = gw.stopIntake().then(() => (stopped = true));
    await sleep(100);
    expect(stopped).toBe(false);
    commit.resolve();
    await stopping;
    await dev.publishAsync('outpost/v1/dev/dev-7/telemetry', 'later', { qos: 1 });
    const next: string[] = [];
    await gateway(broker, (b) =>
      b.intercept((msg) => {
        next.push(msg.payload.toString());
        return Promise.resolve();
      }),
    );
    await waitFor('the message published while the gateway was away', () => next.includes('later'), 5000);
    await sleep(200);
    expect(next).toEqual(['later']);
  });

  it('holds messages to children until the link is up, then publishes them', async () => {
    const broker = await siteBroker();
    const child = await device(broker, 'dev-8');
    const got: string[] = [];
    child.on('message', (topic, payload) => got.push(`${topic} ${payload.toString()}`));
    await child.subscribeAsync('outpost/v1/dev/dev-8/desired', { qos: 1 });
    const b = new ExternalBroker({ config: externalBrokerSchema.parse({ url: broker.url }), gatewayId: 'contract-gw' });
    await b.start({ clock: systemClock, log: silentLogger, metrics: new PromMetrics() });
    cleanup.push(() => b.stop());
    const published = b.publish('outpost/v1/dev/dev-8/desired', '{"version":1,"desired":{}}', 1, true);
    b.connect();
    await published;
    await waitFor('the message at the child', () => got.length === 1);
    expect(got).toEqual(['outpost/v1/dev/dev-8/desired {"version":1,"desired":{}}']);
    await b.stop();
    await expect(b.publish('outpost/v1/dev/dev-8/desired', '{}', 1, false)).rejects.toThrow(/stopped/);
  });

  it('a stop leaves no timer or socket behind, also while it waits to reconnect', async () => {
    const broker = await siteBroker();
    const before = openHandles();
    const b = new ExternalBroker({ config: externalBrokerSchema.parse({ url: broker.url, backoff: { initialMs: 5000, maxMs: 5000 } }), gatewayId: 'contract-gw' });
    await b.start({ clock: systemClock, log: silentLogger, metrics: new PromMetrics() });
    b.connect();
    await waitFor('up', () => b.linkState === 'up', 10_000, 10);
    await broker.stop();
    await waitFor('down, waiting to reconnect', () => b.linkState === 'down', 10_000, 10);
    await b.stop();
    await waitFor('the handles of before', () => noneLeftSince(before), 3000, 25, () => JSON.stringify({ before, after: openHandles() }));
  });
});
