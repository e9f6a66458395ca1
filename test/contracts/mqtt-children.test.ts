import mqtt, { type MqttClient } from 'mqtt';
import { mqttChildren } from '../../drivers/mqtt/protocol.js';
import { EmbeddedBroker } from '../../runtime/broker/embedded-broker.js';
import { localTopics, systemClock } from '../../runtime/contracts/index.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { silentLogger } from '../helpers/fakes.js';
import { driverContract } from './driver-suite.js';
import { brokerAccess, deviceCredentials } from '../helpers/broker-access.js';

/**
 * A child device on the gateway's broker (a real mqtt.js client): birth message, telemetry every
 * 100 ms at QoS 1, and a last will that says `offline`.
 */
class Child {
  private client: MqttClient | undefined;
  private timer: NodeJS.Timeout | undefined;
  private n = 0;

  constructor(
    private readonly url: string,
    readonly id: string,
  ) {}

  async connect(): Promise<void> {
    const client = await mqtt.connectAsync(this.url, {
      ...deviceCredentials(this.id),
      reconnectPeriod: 0,
      will: { topic: localTopics.status(this.id), payload: Buffer.from(JSON.stringify({ state: 'offline' })), qos: 1, retain: true },
    });
    client.on('error', () => undefined);
    this.client = client;
    await client.publishAsync(localTopics.status(this.id), JSON.stringify({ state: 'online' }), { qos: 1, retain: true });
    this.timer = setInterval(() => {
      const points = { temp: 20 + (this.n++ % 5), running: true };
      client.publish(localTopics.telemetry(this.id), JSON.stringify({ points }), { qos: 1 }, () => undefined);
    }, 100);
  }

  /** Gone without a goodbye, as a device that loses power: the broker publishes its will. */
  async crash(): Promise<void> {
    clearInterval(this.timer);
    const client = this.client;
    this.client = undefined;
    if (client) await client.endAsync(true);
  }
}

driverContract('mqtt children (drivers/mqtt/child-intake.ts) on the embedded broker', {
  neverReached: 'unknown',
  async setup({ reachable }) {
    const broker = new EmbeddedBroker(brokerAccess());
    await broker.start({ clock: systemClock, log: silentLogger, metrics: new PromMetrics() });
    const port = await broker.listen('127.0.0.1', 0);
    const child = new Child(`mqtt://127.0.0.1:${port}`, 'child-1');
    if (reachable) await child.connect();
    return {
      protocol: mqttChildren,
      env: { localBroker: broker, acceptUnknownDevices: false, otherDevices: new Set<string>() },
      device: child.id,
      devices: [{ id: child.id, protocol: 'mqtt', points: { temp: { type: 'number' }, running: { type: 'boolean' } } }],
      reachable: () => child.connect(),
      unreachable: () => child.crash(),
      close: async () => {
        await child.crash();
        await broker.close();
      },
    };
  },
});
