import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Who a request to the update server comes from: hawkBit DDI's `Authorization: TargetToken …`,
 * checked against the controller id in the request's path, so a device's token opens that
 * device's resources and no other's. No token sits in clear in the config:
 *
 * - `tokenHashes`: device id -> SHA-256 (hex) of its token. Tokens are random and long (256 bits
 *   from `outpost ota new-token`), so a fast hash is enough: there is nothing to guess.
 * - `groupSecret`: each device's token is base64url(HMAC-SHA256(groupSecret, deviceId)), as Azure
 *   DPS derives device keys from a group enrollment key; a fleet needs no config line per device,
 *   and a token is worth one device id only.
 *
 * A device listed in `tokenHashes` is checked against its hash only (its derived token is not
 * accepted): that is how one device of a group gets a token of its own, e.g. after a leak.
 * There is no gateway token (one secret for every device would let any device speak for another).
 */

export type AuthRefusal = 'no-token' | 'bad-scheme' | 'wrong-token' | 'other-device';

export interface DeviceAuthOptions {
  /** Device id -> lowercase hex SHA-256 of its target token. */
  readonly tokenHashes?: Readonly<Record<string, string>> | undefined;
  /** Secret from which every device's token derives. */
  readonly groupSecret?: string | undefined;
}

/** The SHA-256 of a token, as `tokenHashes` holds it. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** The target token of a device under a group secret: base64url(HMAC-SHA256(secret, deviceId)). */
export function deriveDeviceToken(groupSecret: string, deviceId: string): string {
  return createHmac('sha256', groupSecret).update(deviceId, 'utf8').digest('base64url');
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

const TOKEN = /^TargetToken (\S{1,512})$/;

/**
 * Derived tokens kept per device id: every request of a device (each range of a download) is
 * checked, and the HMAC is the same each time. Bounded: past this many ids the map starts again.
 */
const DERIVED_KEPT = 4096;

export class DeviceAuth {
  private readonly hashes: ReadonlyMap<string, string>;
  /** Hash -> device, to tell "another device's token" from a wrong one (a 403, not a 401). */
  private readonly owners: ReadonlyMap<string, string>;
  private readonly groupSecret: string | undefined;
  private readonly derived = new Map<string, string>();

  constructor(opts: DeviceAuthOptions) {
    this.hashes = new Map(Object.entries(opts.tokenHashes ?? {}).map(([d, h]) => [d, h.toLowerCase()]));
    this.owners = new Map([...this.hashes].map(([d, h]) => [h, d]));
    this.groupSecret = opts.groupSecret;
    if (this.hashes.size === 0 && this.groupSecret === undefined) throw new Error('device authentication needs token hashes or a group secret');
  }

  /** Undefined when the header proves the request comes from `device`; else why not. */
  check(authorization: string | undefined, device: string): AuthRefusal | undefined {
    if (authorization === undefined || authorization === '') return 'no-token';
    const m = TOKEN.exec(authorization);
    if (!m) return 'bad-scheme';
    const token = m[1]!;
    const own = this.hashes.get(device);
    if (own !== undefined) {
      if (same(hashToken(token), own)) return undefined;
    } else if (this.groupSecret !== undefined && same(token, this.derivedToken(this.groupSecret, device))) {
      return undefined;
    }
    const owner = this.owners.get(hashToken(token));
    return owner !== undefined && owner !== device ? 'other-device' : 'wrong-token';
  }

  private derivedToken(groupSecret: string, device: string): string {
    let t = this.derived.get(device);
    if (t === undefined) {
      if (this.derived.size >= DERIVED_KEPT) this.derived.clear();
      t = deriveDeviceToken(groupSecret, device);
      this.derived.set(device, t);
    }
    return t;
  }
}
