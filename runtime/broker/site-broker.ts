import type { Component, LocalBroker } from '../contracts/index.js';

/**
 * The MQTT broker child devices talk to, as the gateway's parts use it: the embedded one
 * (./embedded-broker.ts) or an external site broker the gateway is a client of
 * (./external-broker.ts). Drivers intercept and observe what children publish (LocalBroker);
 * rules, twins and calls publish to children.
 */
export interface SiteBroker extends LocalBroker, Component {
  /** A message from the gateway itself to child devices (rule outputs, desired state, calls). */
  publish(topic: string, payload: string, qos: 0 | 1, retain: boolean): Promise<void>;
}
