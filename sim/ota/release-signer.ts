import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { COMMAND_SIGNING_CONTEXT, SIGNING_CONTEXT, type SignedEnvelope, type SignedManifest } from '../../runtime/contracts/index.js';

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

  signText(payload: string, context = SIGNING_CONTEXT): string {
    return sign(null, Buffer.concat([Buffer.from(context), Buffer.from(payload, 'utf8')]), this.privateKey).toString('base64');
  }

  /** A rollout command as the cloud sends it: `{gateway, release, action, at}` signed under its own context. */
  signCommand(command: unknown): SignedEnvelope {
    const payload = JSON.stringify(command);
    return { payload, signatures: [{ keyId: this.keyId, sig: this.signText(payload, COMMAND_SIGNING_CONTEXT) }] };
  }
}
