import { z } from 'zod';

/**
 * The signed envelopes the cloud sends (docs/ota.md): releases and rollout commands. `payload` is
 * the JSON text exactly as signed, so nothing depends on how a JSON serializer orders keys. Each
 * signature is Ed25519 over a signing context followed by the payload's UTF-8 bytes (domain
 * separation: a signature made for something else with the same key, a command for a release or
 * a release for a command, never verifies).
 */
export const SIGNING_CONTEXT = 'outpost-release-v1\n';
/** Signing context of rollout commands (pause, resume, abort). */
export const COMMAND_SIGNING_CONTEXT = 'outpost-rollout-command-v1\n';

export const signedManifestSchema = z.strictObject({
  payload: z.string().min(2).max(256 * 1024),
  signatures: z
    .array(z.strictObject({ keyId: z.string().min(1).max(64), sig: z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/, 'base64').max(200) }))
    .min(1)
    .max(8),
});
export type SignedManifest = z.output<typeof signedManifestSchema>;
/** A rollout command travels in the same envelope as a release, under COMMAND_SIGNING_CONTEXT. */
export type SignedEnvelope = SignedManifest;
