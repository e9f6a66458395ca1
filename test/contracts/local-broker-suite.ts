import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import type { InboundPublish, LocalBroker } from '../../runtime/contracts/index.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { noneLeftSince, openHandles } from './open-handles.js';

/** A local broker started and listening on 127.0.0.1, on a port of its own. */
export interface LocalBrokerUnderTest {
  readonly broker: LocalBroker;
  /** mqtt://127.0.0.1:port */
  readonly url: string;
  /** Ends the live connections and refuses new ones; the broker's core stays. */
  stopIntake(): Promise<void>;
  /** Ends everything the broker holds. */
  close(): Promise<void>;
  /** What a device with this client id connects with (its credentials). */
  credentials(clientId: string): IClientOptions;
}

type Observed = { readonly topic: string; readonly payload: string; readonly retain: boolean };

/** A promise settled from outside, as an interceptor that commits slowly or fails would return. */
function deferred(): { promise: Promise<void>; resolve: () => void; reject: (err: Error) => void } {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * The LocalBroker contract (runtime/contracts/local-broker.ts), written once and run for every
 * implementation, with real mqtt.js devices connected over TCP: interceptors before the PUBACK,
 * a refusal closing the connection so the device resends, observers seeing every delivered
 * message, $SYS refused, and the intake and close of a component.
 */
export function localBrokerSuite(name: string, start: () => Promise<LocalBrokerUnderTest>): void {
  describe(`local broker contract: ${name}`, () => {
    const cleanup: Array<() => Promise<unknown>> = [];
    afterEach(async () => {
      for (const f of cleanup.splice(0).reverse()) await f();
    });

    async function broker(): Promise<LocalBrokerUnderTest> {
      const b = await start();
      cleanup.push(() => b.close());
      return b;
    }

    async function device(b: LocalBrokerUnderTest, clientId: string, opts: IClientOptions = {}): Promise<MqttClient> {
      const client = await mqtt.connectAsync(b.url, { ...b.credentials(clientId), reconnectPeriod: 0, ...opts });
      cleanup.push(() => client.endAsync(true));
      return client;
    }

    function observed(b: LocalBrokerUnderTest): Observed[] {
      const seen: Observed[] = [];
      b.broker.observe((m) => seen.push({ topic: m.topic, payload: m.payload.toString(), retain: m.retain }));
      return seen;
    }

    it('runs the interceptor before the PUBACK, which waits for its promise', async () => {
      const b = await broker();
      const commit = deferred();
      const seen: InboundPublish[] = [];
      b.broker.intercept((msg) => {
        seen.push(msg);
        return commit.promise;
      });
      const dev = await device(b, 'dev-1');
      let acked = false;
      const publishing = dev.publishAsync('outpost/v1/dev/dev-1/telemetry', '{"points":{"t":1}}', { qos: 1 }).then(() => {
        acked = true;
      });
      await waitFor('the interceptor', () => seen.length === 1);
      expect(seen[0]).toMatchObject({ clientId: 'dev-1', topic: 'outpost/v1/dev/dev-1/telemetry', qos: 1 });
      expect(seen[0]!.payload.toString()).toBe('{"points":{"t":1}}');
      await sleep(150);
      expect(acked).toBe(false);
      commit.resolve();
      await publishing;
      expect(acked).toBe(true);
    });

    it('waits for every interceptor before the PUBACK', async () => {
      const b = await broker();
      const first = deferred();
      const second = deferred();
      b.broker.intercept(() => first.promise);
      b.broker.intercept(() => second.promise);
      const dev = await device(b, 'dev-2');
      let acked = false;
      const publishing = dev.publishAsync('outpost/v1/dev/dev-2/x', 'x', { qos: 1 }).then(() => {
        acked = true;
      });
      second.resolve();
      await sleep(150);
      expect(acked).toBe(false);
      first.resolve();
      await publishing;
    });

    it('a rejected interceptor means no PUBACK: the connection closes, and the device sends the message again after reconnecting', async () => {
      const b = await broker();
      const seen = observed(b);
      let calls = 0;
      b.broker.intercept(() => {
        calls++;
        return calls === 1 ? Promise.reject(new Error('disk full')) : Promise.resolve();
      });
      const dev = await device(b, 'dev-3', { reconnectPeriod: 50 });
      let closes = 0;
      dev.on('close', () => closes++);
      await dev.publishAsync('outpost/v1/dev/dev-3/telemetry', 'once', { qos: 1 });
      // The PUBACK came for the second copy only.
      expect(calls).toBe(2);
      expect(closes).toBeGreaterThanOrEqual(1);
      expect(seen.filter((m) => m.topic === 'outpost/v1/dev/dev-3/telemetry')).toEqual([{ topic: 'outpost/v1/dev/dev-3/telemetry', payload: 'once', retain: false }]);
    });

    it('observers see every delivered message: a publish, a retained message, and a last will no interceptor sees', async () => {
      const b = await broker();
      const seen = observed(b);
      const intercepted: string[] = [];
      b.broker.intercept((msg) => {
        intercepted.push(msg.topic);
        return Promise.resolve();
      });
      const dev = await device(b, 'dev-4');
      await dev.publishAsync('outpost/v1/dev/dev-4/telemetry', 'a', { qos: 1 });
      await dev.publishAsync('outpost/v1/dev/dev-4/status', '{"state":"online"}', { qos: 1, retain: true });
      await dev.publishAsync('outpost/v1/dev/dev-4/telemetry', 'b', { qos: 0 });
      const mortal = await device(b, 'dev-5', { will: { topic: 'outpost/v1/dev/dev-5/status', payload: Buffer.from('{"state":"offline"}'), qos: 1, retain: true } });
      // The device vanishes without a DISCONNECT: the broker publishes its will.
      mortal.stream.destroy();
      await waitFor('the will', () => seen.some((m) => m.topic === 'outpost/v1/dev/dev-5/status'));
      await waitFor('the QoS 0 message', () => seen.some((m) => m.payload === 'b'));
      expect(seen).toEqual(
        expect.arrayContaining([
          { topic: 'outpost/v1/dev/dev-4/telemetry', payload: 'a', retain: false },
          { topic: 'outpost/v1/dev/dev-4/status', payload: '{"state":"online"}', retain: true },
          { topic: 'outpost/v1/dev/dev-4/telemetry', payload: 'b', retain: false },
          { topic: 'outpost/v1/dev/dev-5/status', payload: '{"state":"offline"}', retain: true },
        ]),
      );
      expect(intercepted).not.toContain('outpost/v1/dev/dev-5/status');
      expect(seen.every((m) => !m.topic.startsWith('$SYS'))).toBe(true);
    });

    it('delivers a last will to observers even while interceptors refuse every message', async () => {
      const b = await broker();
      const seen = observed(b);
      b.broker.intercept(() => Promise.reject(new Error('store unavailable')));
      const mortal = await device(b, 'dev-10', { will: { topic: 'outpost/v1/dev/dev-10/status', payload: Buffer.from('{"state":"offline"}'), qos: 1, retain: true } });
      mortal.stream.destroy();
      await waitFor('the will', () => seen.some((m) => m.topic === 'outpost/v1/dev/dev-10/status'), 3000);
    });

    it('refuses a publish to $SYS: no interceptor, no observer, no PUBACK', async () => {
      const b = await broker();
      const seen = observed(b);
      const intercepted: string[] = [];
      b.broker.intercept((msg) => {
        intercepted.push(msg.topic);
        return Promise.resolve();
      });
      const dev = await device(b, 'dev-6');
      let acked = false;
      const closed = new Promise<void>((resolve) => dev.once('close', () => resolve()));
      dev.publish('$SYS/broker/uptime', 'forged', { qos: 1 }, (err) => {
        if (!err) acked = true;
      });
      await closed;
      await sleep(100);
      expect(acked).toBe(false);
      expect(intercepted).toEqual([]);
      expect(seen.filter((m) => m.payload === 'forged')).toEqual([]);
    });

    it('stopIntake ends live connections and refuses new ones', async () => {
      const b = await broker();
      const dev = await device(b, 'dev-7');
      const closed = new Promise<void>((resolve) => dev.once('close', () => resolve()));
      await b.stopIntake();
      await closed;
      await expect(mqtt.connectAsync(b.url, { ...b.credentials('dev-8'), reconnectPeriod: 0, connectTimeout: 2000 })).rejects.toThrow();
    });

    it('close ends every connection and leaves no timer or socket behind', async () => {
      const before = openHandles();
      const b = await start();
      const dev = await mqtt.connectAsync(b.url, { ...b.credentials('dev-9'), reconnectPeriod: 0 });
      await dev.publishAsync('outpost/v1/dev/dev-9/x', 'x', { qos: 1, retain: true });
      const closed = new Promise<void>((resolve) => dev.once('close', () => resolve()));
      await b.close();
      await closed;
      await dev.endAsync(true);
      await waitFor('the handles of before', () => noneLeftSince(before), 3000, 25, () => JSON.stringify({ before, after: openHandles() }));
    });
  });
}
