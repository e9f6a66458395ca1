import { z } from 'zod';
import { durationMsSchema } from '../runtime/contracts/index.js';

const WILDCARD = ['', '0.0.0.0', '::', '[::]', '0:0:0:0:0:0:0:0', '::0', '*'];
const DEVICE_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

/** The update server child devices poll (hawkBit DDI), and how devices authenticate to it. */
const serverSchema = z
  .strictObject({
    /**
     * Listen address. Default with device authentication: every interface (`0.0.0.0`). Without
     * (`closedNetwork`) it is required and must name one address.
     */
    host: z.string().min(1).optional(),
    port: z.number().int().min(0).max(65535).default(8081),
    tenant: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/, 'letters, digits, "_", ".", ":", "-"').default('default'),
    pollSeconds: z.number().int().min(1).max(86_399).default(60),
    /** Device id -> SHA-256 (64 hex digits) of its `TargetToken` (`outpost ota new-token`, `outpost ota hash-token`). */
    targetTokenHashes: z
      .record(z.string().regex(DEVICE_ID, 'a device id'), z.string().regex(/^[0-9a-fA-F]{64}$/, 'the SHA-256 of the token as 64 hex digits (outpost ota hash-token)'))
      .optional(),
    /** Each device's token is base64url(HMAC-SHA256(groupSecret, deviceId)) (`outpost ota device-token`). */
    groupSecret: z.string().min(32, 'at least 32 characters (outpost ota new-token makes one)').max(1024).optional(),
    /** The group secret from a file (its first line), instead of in the config. */
    groupSecretFile: z.string().min(1).optional(),
    /**
     * No device authentication: the site network is closed and every client on it is trusted as
     * the device it names. Needs `host` set to one address.
     */
    closedNetwork: z.boolean().default(false),
    maxTransfers: z.number().int().min(1).max(10_000).default(64),
    /** Artifact bytes kept in memory for concurrent downloads (1 MiB chunks, least recently used dropped); 0: none. */
    chunkCacheBytes: z.number().int().min(0).max(1024 ** 3).default(32 * 1024 * 1024),
    /** The base URL devices reach this server at (for links), if not the Host they used. */
    publicUrl: z.url({ protocol: /^https?$/ }).optional(),
    /** Removed: clear tokens in the config (named in the error). */
    targetTokens: z.unknown().optional(),
    /** Removed: one token for every device (named in the error). */
    gatewayToken: z.unknown().optional(),
  })
  .superRefine((s, ctx) => {
    if (s.targetTokens !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['targetTokens'], message: 'tokens in clear are no longer accepted: list their SHA-256 under targetTokenHashes (outpost ota hash-token), or use groupSecret' });
    }
    if (s.gatewayToken !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['gatewayToken'], message: 'one token for every device lets any device speak for another: use targetTokenHashes or groupSecret' });
    }
    if (s.groupSecret !== undefined && s.groupSecretFile !== undefined) ctx.addIssue({ code: 'custom', path: ['groupSecretFile'], message: 'either groupSecret or groupSecretFile' });
    const authenticated = (s.targetTokenHashes !== undefined && Object.keys(s.targetTokenHashes).length > 0) || s.groupSecret !== undefined || s.groupSecretFile !== undefined;
    if (s.closedNetwork) {
      if (authenticated) ctx.addIssue({ code: 'custom', path: ['closedNetwork'], message: 'closedNetwork turns device authentication off: remove it, or remove targetTokenHashes and groupSecret' });
      if (s.host === undefined || WILDCARD.includes(s.host.trim())) {
        ctx.addIssue({ code: 'custom', path: ['host'], message: 'without device authentication (closedNetwork) the update server must listen on one named address of the closed network, not every interface' });
      }
    } else if (!authenticated) {
      ctx.addIssue({
        code: 'custom',
        path: [],
        message: 'devices must authenticate to the update server: set targetTokenHashes, groupSecret or groupSecretFile; or, on a closed site network only, closedNetwork: true with host set to one address',
      });
    }
  })
  .transform(({ targetTokens: _t, gatewayToken: _g, ...s }) => ({ ...s, host: s.host ?? '0.0.0.0' }));

/** Over-the-air updates: releases from the cloud, cached once, rolled out to child devices (docs/ota.md). */
export const otaSchema = z.strictObject({
  /**
   * Release and rollout command signing keys the gateway trusts: key id -> ed25519 public key
   * (PEM, or the raw 32 bytes in base64). A release or command must carry a valid signature by one of them.
   */
  trustedKeys: z.record(z.string().min(1).max(64), z.string().min(40).max(4096)).refine((k) => Object.keys(k).length > 0, 'at least one key'),
  /** Artifact cache directory; default: ota-cache/ beside the store. */
  cacheDir: z.string().min(1).optional(),
  /** Bytes the cache may hold; artifacts of finished or aborted releases are evicted first. */
  cacheBytes: z.number().int().min(1024 * 1024).default(2 * 1024 ** 3),
  server: serverSchema.prefault({}),
  /** Abort an artifact download when the origin sends nothing for this long (it resumes later). */
  fetchIdleTimeoutMs: durationMsSchema.min(1000).default(30_000),
});

export type OtaConfig = z.output<typeof otaSchema>;
