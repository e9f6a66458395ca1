import { generateKeyPairSync, sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ManifestRefused, openManifest, TrustedKeys, type Manifest } from '../../ota/manifest.js';
import { ReleaseSigner } from '../../sim/ota/release-signer.js';

const NOW = Date.UTC(2026, 10, 25);
const GW = 'plant-7-gw1';
const hex = (c: string): string => c.repeat(64);

function manifest(over: Partial<Record<keyof Manifest, unknown>> = {}): Record<string, unknown> {
  return {
    release: 'pump-fw-2.1.0',
    product: 'pump-fw',
    version: '2.1.0',
    issuedAt: NOW - 1000,
    expiresAt: NOW + 86_400_000,
    target: { gateways: [GW], devices: ['pump-*'] },
    artifact: { name: 'pump-fw-2.1.0.swu', url: 'http://127.0.0.1:1/a/pump.swu', size: 1000, sha256: hex('a') },
    deltas: [{ from: '2.0.0', artifact: { name: 'pump-fw-2.0.0-2.1.0.swu', url: 'http://127.0.0.1:1/a/d.swu', size: 100, sha256: hex('b') } }],
    rollout: { phases: [{ share: 5, waitMs: 1000 }, { share: 25 }, { share: 100 }], failureThreshold: 0.2, maxRetries: 2 },
    ...over,
  };
}

function refusal(f: () => unknown): ManifestRefused {
  try {
    f();
  } catch (err) {
    if (err instanceof ManifestRefused) return err;
    throw err;
  }
  throw new Error('not refused');
}

describe('release manifests', () => {
  const signer = ReleaseSigner.generate('cloud-1');
  const keys = new TrustedKeys({ 'cloud-1': signer.publicKeyPem });

  it('opens a manifest signed by a trusted key, with defaults filled', () => {
    const m = openManifest(signer.sign(manifest()), keys, NOW, GW);
    expect(m.release).toBe('pump-fw-2.1.0');
    expect(m.rollout.phases.map((p) => [p.share, p.waitMs])).toEqual([[5, 1000], [25, 0], [100, 0]]);
    expect(m.deltas[0]!.from).toBe('2.0.0');
  });

  it('accepts a raw 32-byte public key in base64 as well as PEM', () => {
    const der = Buffer.from(signer.publicKeyPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    const raw = new TrustedKeys({ 'cloud-1': der.subarray(der.length - 32).toString('base64') });
    expect(openManifest(signer.sign(manifest()), raw, NOW, GW).version).toBe('2.1.0');
  });

  it('refuses an unsigned release', () => {
    expect(refusal(() => openManifest({ payload: JSON.stringify(manifest()) }, keys, NOW, GW)).reason).toBe('unsigned');
    expect(refusal(() => openManifest(manifest(), keys, NOW, GW)).reason).toBe('unsigned');
  });

  it('refuses a payload changed after signing, a signature by an unknown key, and a signature made for other data', () => {
    const signed = signer.sign(manifest());
    const tampered = { ...signed, payload: signed.payload.replace('"size":1000', '"size":1001') };
    expect(refusal(() => openManifest(tampered, keys, NOW, GW)).reason).toBe('bad-signature');
    const other = ReleaseSigner.generate('cloud-1');
    const e = refusal(() => openManifest(other.sign(manifest()), keys, NOW, GW));
    expect(e.reason).toBe('bad-signature');
    expect(e.message).toContain('cloud-1');
    // The same key's signature over the bare payload (made for something else) does not verify.
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const own = new ReleaseSigner('k2', privateKey, publicKey);
    const keys2 = new TrustedKeys({ k2: own.publicKeyPem });
    const payload = JSON.stringify(manifest());
    expect(openManifest({ payload, signatures: [{ keyId: 'k2', sig: own.signText(payload) }] }, keys2, NOW, GW).version).toBe('2.1.0');
    const bare = { payload, signatures: [{ keyId: 'k2', sig: sign(null, Buffer.from(payload), privateKey).toString('base64') }] };
    expect(refusal(() => openManifest(bare, keys2, NOW, GW)).reason).toBe('bad-signature');
  });

  it('names what is wrong in a signed but invalid manifest', () => {
    const bad = signer.sign(manifest({ version: 'two', artifact: { name: '../../etc/passwd', url: 'file:///etc/passwd', size: -1, sha256: 'xyz' } }));
    const e = refusal(() => openManifest(bad, keys, NOW, GW));
    expect(e.reason).toBe('invalid');
    for (const field of ['version', 'artifact.name', 'artifact.url', 'artifact.size', 'artifact.sha256']) expect(e.message).toContain(field);
  });

  it('checks the rollout plan: growing shares ending at 100', () => {
    const e = refusal(() => openManifest(signer.sign(manifest({ rollout: { phases: [{ share: 50 }, { share: 20 }] } })), keys, NOW, GW));
    expect(e.message).toContain('rollout.phases.1.share');
    expect(e.message).toContain('the last phase must reach 100');
    const w = refusal(() => openManifest(signer.sign(manifest({ rollout: { phases: [{ share: 100 }], maintenanceWindow: '* 2-4 *' } })), keys, NOW, GW));
    expect(w.reason).toBe('invalid');
    expect(w.message).toContain('rollout.maintenanceWindow: invalid cron expression');
    expect(openManifest(signer.sign(manifest({ rollout: { phases: [{ share: 100 }], maintenanceWindow: '* 2-4 * * *' } })), keys, NOW, GW).rollout.maintenanceWindow).toBe('* 2-4 * * *');
  });

  it('refuses an expired release and a payload that is not JSON', () => {
    expect(refusal(() => openManifest(signer.sign(manifest({ expiresAt: NOW - 1 })), keys, NOW, GW)).reason).toBe('expired');
    const text = 'not json';
    expect(refusal(() => openManifest({ payload: text, signatures: [{ keyId: 'cloud-1', sig: signer.signText(text) }] }, keys, NOW, GW)).reason).toBe('malformed');
  });

  it('refuses a release for another gateway, naming both, and one that names no gateway', () => {
    const e = refusal(() => openManifest(signer.sign(manifest({ target: { gateways: ['plant-9-gw1'], devices: ['pump-*'] } })), keys, NOW, GW));
    expect(e.reason).toBe('wrong-gateway');
    expect(e.message).toContain('plant-9-gw1');
    expect(e.message).toContain(GW);
    // A site's gateways by pattern.
    expect(openManifest(signer.sign(manifest({ target: { gateways: ['plant-7-*'], devices: ['pump-*'] } })), keys, NOW, GW).version).toBe('2.1.0');
    const none = refusal(() => openManifest(signer.sign(manifest({ target: { devices: ['pump-*'] } })), keys, NOW, GW));
    expect([none.reason, none.message]).toEqual(['invalid', expect.stringContaining('target.gateways')]);
    expect(refusal(() => openManifest(signer.sign(manifest({ target: { gateways: ['*'], devices: ['pump-*'] } })), keys, NOW, GW)).message).toContain('must name gateways');
  });

  it('refuses a release without an expiry, or expiring before its issue', () => {
    const noExpiry = manifest();
    delete noExpiry.expiresAt;
    const e = refusal(() => openManifest(signer.sign(noExpiry), keys, NOW, GW));
    expect([e.reason, e.message]).toEqual(['invalid', expect.stringContaining('expiresAt')]);
    expect(refusal(() => openManifest(signer.sign(manifest({ expiresAt: NOW - 2000 })), keys, NOW, GW)).message).toContain('expiresAt: must be after issuedAt');
  });

  it('refuses keys that are not ed25519', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    expect(() => new TrustedKeys({ old: rsa })).toThrow(/not ed25519/);
  });
});
