import { EmbeddedBroker } from '../../runtime/broker/embedded-broker.js';
import { systemClock } from '../../runtime/contracts/index.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { silentLogger } from '../helpers/fakes.js';
import { localBrokerSuite } from './local-broker-suite.js';
import { brokerAccess, deviceCredentials } from '../helpers/broker-access.js';

localBrokerSuite('EmbeddedBroker (aedes)', async () => {
  const broker = new EmbeddedBroker(brokerAccess());
  await broker.start({ clock: systemClock, log: silentLogger, metrics: new PromMetrics() });
  const port = await broker.listen('127.0.0.1', 0);
  return {
    broker,
    url: `mqtt://127.0.0.1:${port}`,
    stopIntake: () => broker.stopIntake(),
    close: () => broker.stop(),
    credentials: deviceCredentials,
  };
});
