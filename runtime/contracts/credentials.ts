import { createHmac } from 'node:crypto';

/**
 * A device's key derived from its enrollment group's secret, as Azure DPS group enrollment derives
 * device keys: base64url(HMAC-SHA256(groupSecret, deviceId)). The gateway keeps the group secret
 * (owner-only) and no per-device line; each device is provisioned with its own derived key (its
 * MQTT password, with its id as client id and username), so one leaked device key exposes that
 * device only. Public contract: docs/security.md.
 */
export function deriveDeviceKey(groupSecret: string | Buffer, deviceId: string): string {
  return createHmac('sha256', groupSecret).update(deviceId).digest('base64url');
}
