import mqtt from 'mqtt';
import { describe, expect, it } from 'vitest';
import { EmbeddedBroker } from '../../runtime/broker/embedded-broker.js';
import { systemClock } from '../../runtime/contracts/index.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { silentLogger } from '../helpers/fakes.js';
import { waitFor } from '../helpers/wait.js';
import { brokerAccess, deviceCredentials } from '../helpers/broker-access.js';

async function started(): Promise<{ broker: EmbeddedBroker; url: string }> {
  const broker = new EmbeddedBroker(brokerAccess({ broker: { grants: [{ identities: ['panel', 'late'], subscribe: ['site/#'] }] } }));
  await broker.start({ clock: systemClock, log: silentLogger, metrics: new PromMetrics() });
  const port = await broker.listen('127.0.0.1', 0);
  return { broker, url: `mqtt://127.0.0.1:${port}` };
}

describe('embedded broker', () => {
  it('delivers what the gateway publishes (rule outputs) to subscribers, retained when asked', async () => {
    const { broker, url } = await started();
    try {
      const sub = await mqtt.connectAsync(url, { ...deviceCredentials('panel'), reconnectPeriod: 0 });
      const got: string[] = [];
      sub.on('message', (t, p, packet) => got.push(`${t} ${p.toString()}${packet.retain ? ' retained' : ''}`));
      await sub.subscribeAsync('site/#', { qos: 1 });
      await broker.publish('site/pump-1/flow', '{"value":3}', 1, false);
      await waitFor('the output', () => got.length === 1);
      await broker.publish('site/pump-1/state', 'on', 1, true);
      await waitFor('the second', () => got.length === 2);
      const late = await mqtt.connectAsync(url, { ...deviceCredentials('late'), reconnectPeriod: 0 });
      const retained: string[] = [];
      late.on('message', (t, p, packet) => retained.push(`${t} ${p.toString()} ${String(packet.retain)}`));
      await late.subscribeAsync('site/#', { qos: 1 });
      await waitFor('the retained message', () => retained.length === 1);
      expect(got).toEqual(['site/pump-1/flow {"value":3}', 'site/pump-1/state on']);
      expect(retained).toEqual(['site/pump-1/state on true']);
      await sub.endAsync();
      await late.endAsync();
    } finally {
      await broker.close();
    }
  });

  it('reports its connected children and its port in its status', async () => {
    const { broker, url } = await started();
    try {
      expect(broker.status()).toEqual({ children: { connected: 0 } });
      const c = await mqtt.connectAsync(url, { ...deviceCredentials('child-1'), reconnectPeriod: 0 });
      await waitFor('one child', () => broker.connectedClients === 1);
      expect(broker.status()).toEqual({ children: { connected: 1 } });
      expect(broker.listeningPort).toBe(Number(new URL(url).port));
      await c.endAsync();
    } finally {
      await broker.close();
    }
  });

  it('holds nothing that keeps the process alive once closed, and closing twice is harmless', async () => {
    const before = process.getActiveResourcesInfo().filter((r) => r.startsWith('TCP')).length;
    const { broker, url } = await started();
    const c = await mqtt.connectAsync(url, { ...deviceCredentials('child-2'), reconnectPeriod: 0 });
    c.on('error', () => undefined);
    await broker.close();
    await broker.close();
    c.end(true);
    await waitFor('the sockets closed', () => process.getActiveResourcesInfo().filter((r) => r.startsWith('TCP')).length <= before, 5000);
    expect(broker.status()).toEqual({ children: { connected: 0 } });
  });
});
