import { z } from 'zod';

/**
 * The signed release envelope the cloud sends (docs/ota.md): `payload` is the manifest's JSON
 * text, exactly the bytes that were signed, so nothing depends on how a JSON serializer orders
 * keys. Each signature is Ed25519 over SIGNING_CONTEXT followed by the payload's UTF-8 bytes
 * (domain separation: a signature made for something else with the same key never verifies as a
 * release).
 */
export const SIGNING_CONTEXT = 'outpost-release-v1\n';

export const signedManifestSchema = z.strictObject({
  payload: z.string().min(2).max(256 * 1024),
  signatures: z
    .array(z.strictObject({ keyId: z.string().min(1).max(64), sig: z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/, 'base64').max(200) }))
    .min(1)
    .max(8),
});
export type SignedManifest = z.output<typeof signedManifestSchema>;
