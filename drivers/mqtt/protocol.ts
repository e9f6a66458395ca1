import type { ProtocolEntry } from '../../runtime/contracts/index.js';
import { ChildIntake, DEFAULT_MAX_TRACKED } from './child-intake.js';
import { mqttDeviceSchema, type MqttDeviceConfig } from './config.js';

/**
 * MQTT child devices on the gateway's own broker (or on an external site broker it subscribes to). One driver takes every child's telemetry, also
 * when no device is listed (devices announce themselves unless `broker.acceptUnknownDevices` is off).
 */
export const mqttChildren: ProtocolEntry<MqttDeviceConfig> = {
  protocol: 'mqtt',
  schema: mqttDeviceSchema,
  capabilities: { write: false, brokerIdentity: true },
  points: (d) => Object.keys(d.points ?? {}).map((name) => ({ name, writable: false })),
  create: (devices, env) => [
    new ChildIntake(env.localBroker, {
      devices: new Map(devices.map((d) => [d.id, { points: d.points, strict: d.strict }])),
      acceptUnknownDevices: env.acceptUnknownDevices,
      otherDevices: env.otherDevices,
      maxTracked: Math.max(DEFAULT_MAX_TRACKED, env.maxChildren ?? 0),
    }),
  ],
};
