import semver from 'semver';
import { z } from 'zod';
import { compileGlob, cronProblem, signedManifestSchema, SIGNING_CONTEXT, type SignedManifest, errorMessage } from '../runtime/contracts/index.js';
import type { TrustedKeys } from './trusted-keys.js';

export { SIGNING_CONTEXT, signedManifestSchema, type SignedManifest };
export { TrustedKeys } from './trusted-keys.js';

/**
 * Release manifests: what the cloud tells a gateway to fetch and roll out (docs/ota.md). A
 * manifest travels as a signed envelope (runtime/contracts/release.ts).
 */

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'sha256 as 64 lowercase hex digits');
const id = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'letters, digits, ".", "_" and "-", at most 64, not starting with a symbol');
const version = z.string().refine((v) => semver.valid(v) === v, 'a semantic version such as 2.1.0');
const glob = z.string().min(1).max(128).regex(/^[A-Za-z0-9_.:*?-]+$/, 'device id pattern: letters, digits, "_", ".", ":", "-", "*" and "?"');

export const artifactSchema = z.strictObject({
  /** File name offered to devices (some agents need a suffix, e.g. `.swu`). Never used as a path. */
  name: z.string().min(1).max(128).regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'a plain file name (letters, digits, ".", "_", "-")'),
  url: z.url({ protocol: /^https?$/ }),
  size: z.number().int().positive().max(16 * 1024 ** 3),
  sha256: sha256Hex,
});
export type ArtifactRef = z.output<typeof artifactSchema>;

const phaseSchema = z.strictObject({
  /** Cumulative share of the targeted devices (percent) that this phase brings up to. */
  share: z.number().gt(0).max(100),
  /** Wait after the phase's devices finished before the next phase starts. */
  waitMs: z.number().int().min(0).max(30 * 24 * 3600_000).default(0),
});

export const rolloutPlanSchema = z
  .strictObject({
    phases: z.array(phaseSchema).min(1).max(20),
    /** A phase whose failed share of its devices exceeds this (0–1) halts the rollout. */
    failureThreshold: z.number().min(0).max(1).default(0.2),
    /** Attempts after the first for a device that failed; a device that succeeded is never retried. */
    maxRetries: z.number().int().min(0).max(20).default(2),
    /** Devices get new work only while this node-cron expression matches (minute resolution). */
    maintenanceWindow: z
      .string()
      .min(1)
      .max(128)
      .superRefine((expr, ctx) => {
        const problem = cronProblem(expr);
        if (problem) ctx.addIssue({ code: 'custom', message: `invalid cron expression: ${problem}` });
      })
      .optional(),
  })
  .superRefine((plan, ctx) => {
    let last = 0;
    plan.phases.forEach((p, i) => {
      if (p.share <= last) ctx.addIssue({ code: 'custom', path: ['phases', i, 'share'], message: `shares must grow from phase to phase (${p.share} after ${last})` });
      last = p.share;
    });
    if (last !== 100) ctx.addIssue({ code: 'custom', path: ['phases', plan.phases.length - 1, 'share'], message: 'the last phase must reach 100' });
  });
export type RolloutPlan = z.output<typeof rolloutPlanSchema>;

export const manifestSchema = z.strictObject({
  /** Unique name of this release. */
  release: id,
  /** What it installs: releases of one product are ordered by version (anti-rollback). */
  product: id,
  version,
  issuedAt: z.number().int().positive(),
  /**
   * Required. Past this time (ms since the epoch) the release is refused at intake and not
   * started; a rollout under way when it passes offers no new device (docs/ota.md).
   */
  expiresAt: z.number().int().positive(),
  target: z.strictObject({
    /**
     * The gateways (ids, or patterns of the gateways of a site) the release is for: a release
     * signed for another gateway and replayed on this one's topic is refused.
     */
    gateways: z
      .array(glob.refine((g) => /[^*?]/.test(g), 'must name gateways (a pattern of only "*" and "?" binds to none)'))
      .min(1)
      .max(1000),
    /** Device id patterns; a device is targeted when one matches. */
    devices: z.array(glob).min(1).max(1000),
  }),
  artifact: artifactSchema,
  /** Smaller artifacts that turn an installed `from` version into this one. */
  deltas: z
    .array(z.strictObject({ from: version, artifact: artifactSchema }))
    .max(50)
    .default([])
    .refine((ds) => new Set(ds.map((d) => d.from)).size === ds.length, 'one delta per from-version'),
  rollout: rolloutPlanSchema,
}).refine((m) => m.expiresAt > m.issuedAt, { path: ['expiresAt'], message: 'must be after issuedAt' });
export type Manifest = z.output<typeof manifestSchema>;

/** Why a manifest was refused: the `reason` is stable (metrics label, cloud report). */
export class ManifestRefused extends Error {
  constructor(
    readonly reason: 'malformed' | 'unsigned' | 'bad-signature' | 'invalid' | 'expired' | 'wrong-gateway' | 'rollback' | 'conflict',
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'ManifestRefused';
  }
}

function issues(err: z.ZodError): string {
  return err.issues.map((i) => `${i.path.join('.') || '(manifest)'}: ${i.message}`).join('; ');
}

/**
 * The manifest inside a signed envelope, once its signature verified, its content is valid, it
 * is for this gateway and not expired at `now` (0: not checked, for a release accepted before).
 * Throws ManifestRefused naming what was wrong. The signature is checked before the payload is
 * parsed: nothing from an unsigned payload is interpreted.
 */
export function openManifest(raw: unknown, keys: TrustedKeys, now: number, gatewayId: string): Manifest {
  const env = signedManifestSchema.safeParse(raw);
  if (!env.success) {
    const unsigned = raw !== null && typeof raw === 'object' && !('signatures' in raw);
    throw new ManifestRefused(unsigned ? 'unsigned' : 'malformed', unsigned ? 'release is not signed (no "signatures")' : `release envelope: ${issues(env.error)}`);
  }
  if (!keys.verify(env.data)) {
    const ids = env.data.signatures.map((s) => s.keyId).join(', ');
    throw new ManifestRefused('bad-signature', `no valid signature by a trusted key (signed by: ${ids})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(env.data.payload);
  } catch (err) {
    throw new ManifestRefused('malformed', `release payload is not JSON: ${errorMessage(err)}`, { cause: err });
  }
  const m = manifestSchema.safeParse(json);
  if (!m.success) throw new ManifestRefused('invalid', `release manifest: ${issues(m.error)}`);
  if (!m.data.target.gateways.some((g) => compileGlob(g)(gatewayId))) {
    throw new ManifestRefused('wrong-gateway', `release ${m.data.release} is for gateways ${m.data.target.gateways.join(', ')}, not for this gateway "${gatewayId}"`);
  }
  if (now > 0 && m.data.expiresAt <= now) {
    throw new ManifestRefused('expired', `release ${m.data.release} expired at ${new Date(m.data.expiresAt).toISOString()}`);
  }
  return m.data;
}

/** `a` is older than `b` (semantic version order). */
export function olderThan(a: string, b: string): boolean {
  return semver.lt(a, b);
}
