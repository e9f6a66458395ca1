import { webcrypto, X509Certificate, createPrivateKey } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { writeOwnerOnly } from './secret-files.js';

/**
 * X.509 for the gateway's TLS listeners: a self-signed server certificate made on first start when
 * none is configured, and a site CA that issues device client certificates (mTLS). node:crypto
 * reads certificates but cannot make them; @peculiar/x509 (WebCrypto) does, loaded only when a
 * certificate is made. Keys are ECDSA P-256.
 */
const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 86_400_000;

export interface PemPair {
  readonly cert: string;
  readonly key: string;
}

async function lib(): Promise<typeof import('@peculiar/x509')> {
  const x509 = await import('@peculiar/x509');
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  return x509;
}

function serial(): string {
  // Positive, 16 bytes (RFC 5280 §4.1.2.2: at most 20 octets, non-negative).
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0] = (b[0] ?? 0) & 0x7f;
  return Buffer.from(b).toString('hex');
}

function keyPem(der: ArrayBuffer): string {
  return createPrivateKey({ key: Buffer.from(der), format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }).toString();
}

/** "CN=x" with characters that would change the name's structure refused. */
function cn(name: string): string {
  if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(name)) throw new Error(`certificate name "${name}": use letters, digits, "_", ".", ":" and "-" (at most 64)`);
  return `CN=${name}`;
}

type X509 = typeof import('@peculiar/x509');

/** A new key pair and a certificate for it signed by itself, valid from yesterday for `days`. */
async function selfSignedWith(name: string, days: number, extensions: (x509: X509, keys: webcrypto.CryptoKeyPair) => Promise<unknown[]>): Promise<PemPair> {
  const x509 = await lib();
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: cn(name),
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + days * DAY),
    keys,
    signingAlgorithm: ALG,
    extensions: (await extensions(x509, keys)) as Parameters<typeof x509.X509CertificateGenerator.createSelfSigned>[0]['extensions'],
  });
  return { cert: cert.toString('pem'), key: keyPem(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)) };
}

/** SHA-256 fingerprint of a PEM certificate, as `AB:CD:…`. */
export function fingerprint(certPem: string): string {
  return new X509Certificate(certPem).fingerprint256;
}

/** A self-signed server certificate for `hosts` (DNS names and IP addresses), valid `days`. */
export async function selfSigned(name: string, hosts: readonly string[], days = 825): Promise<PemPair> {
  const names = hosts.map((h) => (isIP(h) ? { type: 'ip' as const, value: h } : { type: 'dns' as const, value: h }));
  return selfSignedWith(name, days, (x509) =>
    Promise.resolve([
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(names),
    ]),
  );
}

/** A certificate authority (self-signed, may sign end-entity certificates only). */
export async function createCa(name: string, days = 3650): Promise<PemPair> {
  return selfSignedWith(name, days, async (x509, keys) => [
    new x509.BasicConstraintsExtension(true, 0, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ]);
}

/**
 * A client certificate for `identity` (its CN, and a DNS SAN of the same name) signed by `ca`.
 * `server: true` makes a server certificate instead (for `hosts`).
 */
export async function issue(ca: PemPair, identity: string, opts: { days?: number; server?: boolean; hosts?: readonly string[] } = {}): Promise<PemPair> {
  const x509 = await lib();
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const caCert = new x509.X509Certificate(ca.cert);
  const caKey = await webcrypto.subtle.importKey('pkcs8', createPrivateKey(ca.key).export({ format: 'der', type: 'pkcs8' }), ALG, false, ['sign']);
  const now = Date.now();
  const sans = opts.server ? (opts.hosts ?? [identity]).map((h) => (isIP(h) ? { type: 'ip' as const, value: h } : { type: 'dns' as const, value: h })) : [{ type: 'dns' as const, value: identity }];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: cn(identity),
    issuer: caCert.subject,
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + (opts.days ?? 825) * DAY),
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: ALG,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([opts.server ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension(sans),
    ],
  });
  return { cert: cert.toString('pem'), key: keyPem(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)) };
}

/**
 * The listener's certificate: the configured files when given, else `<dir>/<name>.crt|.key`,
 * made self-signed on first start (owner-only) and reused after. `created` says whether it was
 * made now, so the caller prints its fingerprint for clients to pin.
 */
export async function serverCertificate(opts: {
  readonly certFile?: string | undefined;
  readonly keyFile?: string | undefined;
  readonly dir: string;
  readonly name: string;
  readonly hosts: readonly string[];
}): Promise<PemPair & { readonly fingerprint: string; readonly created: boolean; readonly certFile: string }> {
  if (opts.certFile && opts.keyFile) {
    const cert = readFileSync(opts.certFile, 'utf8');
    return { cert, key: readFileSync(opts.keyFile, 'utf8'), fingerprint: fingerprint(cert), created: false, certFile: opts.certFile };
  }
  const certFile = `${opts.dir}/${opts.name}.crt`;
  const keyFile = `${opts.dir}/${opts.name}.key`;
  if (existsSync(certFile) && existsSync(keyFile)) {
    const cert = readFileSync(certFile, 'utf8');
    return { cert, key: readFileSync(keyFile, 'utf8'), fingerprint: fingerprint(cert), created: false, certFile };
  }
  const pair = await selfSigned(opts.name, opts.hosts);
  writeOwnerOnly(keyFile, pair.key);
  writeOwnerOnly(certFile, pair.cert);
  return { ...pair, fingerprint: fingerprint(pair.cert), created: true, certFile };
}
