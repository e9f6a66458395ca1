import mqtt from 'mqtt';
import { describe, expect, it } from 'vitest';
import type { InboundPublish, LocalBroker } from '../../runtime/contracts/index.js';
import { sleep, waitFor } from '../helpers/wait.js';

/** A local broker listening on 127.0.0.1 (port 0), as one implementation gives it to the suite. */
export interface BrokerUnderTest {
  readonly broker: LocalBroker;
  readonly url: string;
  /** Stops taking connections and messages (the gateway's first step when it stops). */
  stopIntake(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The LocalBroker contract (runtime/contracts/local-broker.ts): what drivers rely on to acknowledge
 * a child's message only once it is stored. Run by every implementation.
 */
export function localBrokerSuite(name: string, make: () => Promise<BrokerUnderTest>): void {
  describe(`local broker contract: ${name}`, { timeout: 20_000 }, () => {
    async function withBroker(fn: (b: BrokerUnderTest) => Promise<void>): Promise<void> {
      const b = await make();
      try {
        await fn(b);
      } finally {
        await b.close();
      }
    }

    it('sends the PUBACK only after every interceptor resolved', async () => {
      await withBroker(async (b) => {
        let stored = false;
        b.broker.intercept(async (msg) => {
          if (msg.topic !== 'outpost/v1/dev/d1/telemetry') return;
          await sleep(200);
          stored = true;
        });
        const seen: InboundPublish[] = [];
        b.broker.intercept((msg) => {
          seen.push(msg);
          return Promise.resolve();
        });
        const c = await mqtt.connectAsync(b.url, { clientId: 'd1', reconnectPeriod: 0 });
        await c.publishAsync('outpost/v1/dev/d1/telemetry', '{"points":{"a":1}}', { qos: 1 });
        expect(stored).toBe(true);
        expect(seen.map((m) => [m.clientId, m.topic, m.payload.toString(), m.qos])).toEqual([['d1', 'outpost/v1/dev/d1/telemetry', '{"points":{"a":1}}', 1]]);
        await c.endAsync();
      });
    });

    it('does not acknowledge what an interceptor refused: the connection closes and the device sends it again', async () => {
      await withBroker(async (b) => {
        let calls = 0;
        b.broker.intercept(() => (++calls === 1 ? Promise.reject(new Error('disk full')) : Promise.resolve()));
        const c = mqtt.connect(b.url, { clientId: 'd2', reconnectPeriod: 100, clean: false });
        c.on('error', () => undefined);
        let closed = 0;
        c.on('close', () => closed++);
        await new Promise<void>((resolve) => c.once('connect', () => resolve()));
        await c.publishAsync('outpost/v1/dev/d2/telemetry', '{"points":{"a":1}}', { qos: 1 });
        expect(closed).toBeGreaterThan(0);
        expect(calls).toBe(2);
        await c.endAsync();
      });
    });

    it('shows observers every delivered message, retained ones and the last will of a device that dropped off', async () => {
      await withBroker(async (b) => {
        const seen: string[] = [];
        b.broker.observe((m) => seen.push(`${m.topic} ${m.payload.toString()}${m.retain ? ' retained' : ''}`));
        const will = { topic: 'outpost/v1/dev/d3/status', payload: Buffer.from('{"state":"offline"}'), qos: 1 as const, retain: true };
        const c = await mqtt.connectAsync(b.url, { clientId: 'd3', reconnectPeriod: 0, will });
        await c.publishAsync('outpost/v1/dev/d3/status', '{"state":"online"}', { qos: 1, retain: true });
        await c.publishAsync('outpost/v1/dev/d3/telemetry', '{"points":{"a":1}}', { qos: 1 });
        c.stream.destroy();
        await waitFor('the last will', () => seen.some((s) => s.includes('offline')));
        expect(seen).toEqual([
          'outpost/v1/dev/d3/status {"state":"online"} retained',
          'outpost/v1/dev/d3/telemetry {"points":{"a":1}}',
          'outpost/v1/dev/d3/status {"state":"offline"} retained',
        ]);
        c.end(true);
      });
    });

    it('refuses a publish to $SYS topics', async () => {
      await withBroker(async (b) => {
        const seen: string[] = [];
        b.broker.observe((m) => seen.push(m.topic));
        b.broker.intercept((m) => {
          seen.push(`intercepted ${m.topic}`);
          return Promise.resolve();
        });
        const c = mqtt.connect(b.url, { clientId: 'd4', reconnectPeriod: 0 });
        c.on('error', () => undefined);
        await new Promise<void>((resolve) => c.once('connect', () => resolve()));
        c.publish('$SYS/broker/uptime', '1', { qos: 1 });
        await sleep(300);
        expect(seen).toEqual([]);
        c.end(true);
      });
    });

    it('ends live connections and refuses new ones once intake stopped', async () => {
      await withBroker(async (b) => {
        const c = mqtt.connect(b.url, { clientId: 'd5', reconnectPeriod: 0 });
        c.on('error', () => undefined);
        await new Promise<void>((resolve) => c.once('connect', () => resolve()));
        const closed = new Promise<void>((resolve) => c.once('close', () => resolve()));
        await b.stopIntake();
        await closed;
        await expect(mqtt.connectAsync(b.url, { clientId: 'd6', reconnectPeriod: 0, connectTimeout: 1000 })).rejects.toThrow();
        c.end(true);
      });
    });
  });
}
