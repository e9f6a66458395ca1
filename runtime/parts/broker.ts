import { EmbeddedBroker } from '../broker/embedded-broker.js';
import type { Component } from '../contracts/index.js';
import type { Part } from './site.js';

/** The embedded MQTT broker's core (aedes): drivers register their interceptors on it before devices connect. */
export const brokerPart: Part = {
  name: 'mqtt-broker',
  build(site) {
    const broker = new EmbeddedBroker();
    site.provide('localBroker', broker);
    return broker;
  },
};

/** The broker's TCP listener: child devices connect once everything that takes their data runs. */
class BrokerListener implements Component {
  readonly name = 'mqtt-listener';

  constructor(
    private readonly broker: EmbeddedBroker,
    private readonly host: string,
    private readonly port: number,
  ) {}

  async start(): Promise<void> {
    await this.broker.listen(this.host, this.port);
  }

  /** Intake stops first: no new connection, no new PUBLISH; what is in flight is finished by its owners. */
  async stop(): Promise<void> {
    await this.broker.stopIntake();
  }

  status(): Record<string, unknown> {
    return { ports: { broker: this.broker.listeningPort } };
  }
}

export const brokerListenerPart: Part = {
  name: 'mqtt-listener',
  build(site) {
    return new BrokerListener(site.get('localBroker'), site.config.broker.host, site.config.broker.port);
  },
};
