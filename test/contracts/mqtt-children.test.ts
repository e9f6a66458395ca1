import mqtt, { type MqttClient } from 'mqtt';
import { mqttChildren } from '../../drivers/mqtt/protocol.js';
import { EmbeddedBroker } from '../../runtime/broker/embedded-broker.js';
import { localTopics, systemClock } from '../../runtime/contracts/index.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { silentLogger } from '../helpers/fakes.js';
import { driverContractSuite, type DriverHarness } from './driver-suite.js';

/**
 * A child device on the gateway's embedded broker: it publishes telemetry every 50 ms with a last
 * will; "unreachable" is the device dropping off the network (its will turns its points stale).
 */
async function child(): Promise<DriverHarness> {
  const broker = new EmbeddedBroker();
  await broker.start({ clock: systemClock, log: silentLogger, metrics: new PromMetrics() });
  const port = await broker.listen('127.0.0.1', 0);
  let client: MqttClient | undefined;
  let timer: NodeJS.Timeout | undefined;
  let n = 0;
  const gone = (): void => {
    clearInterval(timer);
    // No DISCONNECT: the broker publishes the will.
    client?.stream.destroy();
    client?.end(true);
    client = undefined;
  };
  return {
    entry: mqttChildren,
    env: { localBroker: broker, acceptUnknownDevices: false },
    device: 'pump-1',
    devices: [{ id: 'pump-1', protocol: 'mqtt', points: { flow: { type: 'number', min: 0 } } }],
    reachable: async () => {
      const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
        clientId: 'pump-1',
        reconnectPeriod: 0,
        will: { topic: localTopics.status('pump-1'), payload: Buffer.from('{"state":"offline"}'), qos: 1, retain: true },
      });
      c.on('error', () => undefined);
      await c.publishAsync(localTopics.status('pump-1'), '{"state":"online"}', { qos: 1, retain: true });
      client = c;
      timer = setInterval(() => {
        c.publishAsync(localTopics.telemetry('pump-1'), JSON.stringify({ id: ++n, points: { flow: n } }), { qos: 1 }).catch(() => undefined);
      }, 50);
    },
    unreachable: async () => {
      gone();
      await Promise.resolve();
    },
    close: async () => {
      gone();
      await broker.close();
    },
  };
}

driverContractSuite('mqtt children', child);
