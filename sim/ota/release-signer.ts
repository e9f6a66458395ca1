import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { SIGNING_CONTEXT, type SignedManifest } from '../../runtime/contracts/index.js';

/** The cloud's side of release signing, for the sim cloud and tests: an ed25519 key and its id. */
export class ReleaseSigner {
  readonly publicKeyPem: string;

  constructor(
    readonly keyId: string,
    private readonly privateKey: KeyObject,
    publicKey: KeyObject,
  ) {
    this.publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
  }

  static generate(keyId = 'release-key-1'): ReleaseSigner {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    return new ReleaseSigner(keyId, privateKey, publicKey);
  }

  /** Signs the manifest's JSON text (any JSON-serializable value, valid or not: tests need both). */
  sign(manifest: unknown): SignedManifest {
    const payload = JSON.stringify(manifest);
    return { payload, signatures: [{ keyId: this.keyId, sig: this.signText(payload) }] };
  }

  signText(payload: string): string {
    return sign(null, Buffer.concat([Buffer.from(SIGNING_CONTEXT), Buffer.from(payload, 'utf8')]), this.privateKey).toString('base64');
  }
}
