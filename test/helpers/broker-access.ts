import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { AccessPolicy } from '../../runtime/broker/acl.js';
import { brokerSchema, type BrokerConfig } from '../../runtime/broker/config.js';
import type { BrokerAccess } from '../../runtime/broker/embedded-broker.js';
import { deriveDeviceKey } from '../../runtime/contracts/index.js';
import { identitiesSchema, type IdentitiesConfig } from '../../runtime/identity/config.js';
import { IdentityRegistry } from '../../runtime/identity/registry.js';

/** The enrollment group secret tests give their simulated devices (derived keys per device). */
export const TEST_GROUP_SECRET = 'outpost-test-group-secret-0001';

/** A device's MQTT credentials in the test group. */
export function deviceCredentials(id: string): { clientId: string; username: string; password: string } {
  return { clientId: id, username: id, password: deriveDeviceKey(TEST_GROUP_SECRET, id) };
}

/** Site config sections that let every test device (any id) in with its derived key. */
export const testIdentities = { groups: [{ name: 'test', devices: '*', secret: TEST_GROUP_SECRET }] };

/** Broker access as the gateway builds it, from config sections (defaults: the test group, default limits). */
export function brokerAccess(
  opts: { broker?: Partial<Parameters<typeof brokerSchema.parse>[0]>; identities?: Parameters<typeof identitiesSchema.parse>[0]; driven?: ReadonlyMap<string, string> } = {},
): BrokerAccess & { config: BrokerConfig; identities: IdentitiesConfig } {
  const config = brokerSchema.parse(opts.broker ?? {});
  const identities = identitiesSchema.parse(opts.identities ?? testIdentities);
  return {
    config,
    identities,
    registry: () =>
      new IdentityRegistry(identities, {
        driven: opts.driven ?? new Map(),
        anonymous: config.anonymous,
        maxClientIdBytes: config.limits.maxClientIdBytes,
        secret: Buffer.alloc(32, 7),
        now: () => Date.now(),
      }),
    policy: new AccessPolicy(config.grants),
    limits: config.limits,
  };
}

/**
 * Connects to `url`: resolves once connected, rejects with the broker's refusal (CONNACK) or when
 * the connection closes before one. `track` gets the client for the test's cleanup.
 */
export function attemptConnect(url: string, opts: IClientOptions, track: (c: MqttClient) => void): Promise<MqttClient> {
  const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 3000, ...opts });
  track(c);
  return new Promise((resolve, reject) => {
    c.once('connect', () => resolve(c));
    c.once('error', reject);
    c.once('close', () => reject(new Error('closed before CONNACK')));
  });
}
