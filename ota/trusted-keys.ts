import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { SIGNING_CONTEXT, type SignedManifest } from '../runtime/contracts/index.js';

/** Trusted release signing keys: id → ed25519 public key (PEM or raw 32 bytes as base64). */
export class TrustedKeys {
  private readonly keys = new Map<string, KeyObject>();

  constructor(keys: Readonly<Record<string, string>>) {
    for (const [keyId, text] of Object.entries(keys)) {
      const key = text.includes('-----BEGIN')
        ? createPublicKey(text)
        : createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(text, 'base64').toString('base64url') }, format: 'jwk' });
      if (key.asymmetricKeyType !== 'ed25519') throw new Error(`release key "${keyId}" is ${key.asymmetricKeyType ?? 'not an asymmetric key'}, not ed25519`);
      this.keys.set(keyId, key);
    }
  }

  get size(): number {
    return this.keys.size;
  }

  /** True when one of the signatures is by a trusted key and verifies over the context and payload. */
  verify(signed: SignedManifest, context = SIGNING_CONTEXT): boolean {
    const message = Buffer.concat([Buffer.from(context), Buffer.from(signed.payload, 'utf8')]);
    return signed.signatures.some((s) => {
      const key = this.keys.get(s.keyId);
      return key !== undefined && verify(null, message, key, Buffer.from(s.sig, 'base64'));
    });
  }
}
