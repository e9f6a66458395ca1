import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * SWUpdate images for the interoperability test, built the way SWUpdate wants them (see
 * ../shared facts in docs/ota.md): a CA and a signer certificate made by openssl, a libconfig
 * `sw-description` with one `rawfile` image written to `installPath`, its detached DER CMS
 * signature, and a cpio (crc) archive with the description first.
 */
export class SwuSigner {
  readonly caPem: string;
  private readonly signerCert: string;
  private readonly signerKey: string;

  private constructor(private readonly dir: string) {
    this.caPem = join(dir, 'ca.pem');
    this.signerCert = join(dir, 'signer.crt');
    this.signerKey = join(dir, 'signer.key');
  }

  /** A throwaway CA and a signing certificate it issued (keyUsage digitalSignature, EKU emailProtection). */
  static create(dir: string): SwuSigner {
    mkdirSync(dir, { recursive: true });
    const s = new SwuSigner(dir);
    const ossl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    ossl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '30', '-subj', '/CN=Outpost test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    ossl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'signer.key', '-out', 'signer.csr', '-subj', '/CN=Outpost test release signer');
    writeFileSync(join(dir, 'signer.ext'), 'keyUsage=digitalSignature\nextendedKeyUsage=emailProtection\nbasicConstraints=CA:FALSE\n');
    ossl('x509', '-req', '-in', 'signer.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'signer.crt', '-days', '30', '-extfile', 'signer.ext');
    return s;
  }

  /**
   * Builds `{name}.swu` in `out`: version, hardware revision, and one file with `content` that
   * SWUpdate's rawfile handler writes to `installPath`. With `corrupt`, the payload is altered
   * after signing (its sha256 no longer matches the signed description).
   */
  build(out: string, name: string, opts: { version: string; hardware: string; installPath: string; content: Buffer; corrupt?: boolean }): Buffer {
    const work = join(out, `${name}.d`);
    mkdirSync(work, { recursive: true });
    const sha = createHash('sha256').update(opts.content).digest('hex');
    const desc = `software =
{
  version = "${opts.version}";
  hardware-compatibility: [ "${opts.hardware}" ];
  files: (
    {
      filename = "payload.bin";
      path = "${opts.installPath}";
      sha256 = "${sha}";
      properties: { create-destination = "true"; };
    }
  );
};
`;
    writeFileSync(join(work, 'sw-description'), desc);
    execFileSync('openssl', ['cms', '-sign', '-in', 'sw-description', '-out', 'sw-description.sig', '-signer', this.signerCert, '-inkey', this.signerKey, '-outform', 'DER', '-nosmimecap', '-binary'], { cwd: work, stdio: 'pipe' });
    const payload = Buffer.from(opts.content);
    if (opts.corrupt) payload[0] = payload[0]! ^ 0xff;
    writeFileSync(join(work, 'payload.bin'), payload);
    const image = execFileSync('cpio', ['-o', '-H', 'crc', '--quiet'], { cwd: work, input: 'sw-description\nsw-description.sig\npayload.bin\n', maxBuffer: 1 << 30 });
    writeFileSync(join(out, `${name}.swu`), image);
    return readFileSync(join(out, `${name}.swu`));
  }
}
