import { z } from 'zod';
import { durationMsSchema } from '../runtime/contracts/index.js';

/** Over-the-air updates: releases from the cloud, cached once, rolled out to child devices (docs/ota.md). */
export const otaSchema = z
  .strictObject({
    /**
     * Release signing keys the gateway trusts: key id -> ed25519 public key (PEM, or the raw
     * 32 bytes in base64). A release must carry a valid signature by one of them.
     */
    trustedKeys: z.record(z.string().min(1).max(64), z.string().min(40).max(4096)).refine((k) => Object.keys(k).length > 0, 'at least one key'),
    /** Artifact cache directory; default: ota-cache/ beside the store. */
    cacheDir: z.string().min(1).optional(),
    /** Bytes the cache may hold; artifacts of finished or aborted releases are evicted first. */
    cacheBytes: z.number().int().min(1024 * 1024).default(2 * 1024 ** 3),
    /** The update server child devices poll (hawkBit DDI). */
    server: z
      .strictObject({
        host: z.string().min(1).default('0.0.0.0'),
        port: z.number().int().min(0).max(65535).default(8081),
        tenant: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/, 'letters, digits, "_", ".", ":", "-"').default('default'),
        pollSeconds: z.number().int().min(1).max(86_399).default(60),
        /** Accepted from every device as `Authorization: GatewayToken …`. */
        gatewayToken: z.string().min(8).optional(),
        /** Per device `Authorization: TargetToken …`. Without any token, devices are not authenticated. */
        targetTokens: z.record(z.string().min(1), z.string().min(8)).optional(),
        maxTransfers: z.number().int().min(1).max(10_000).default(64),
        /** Artifact bytes kept in memory for concurrent downloads (1 MiB chunks, least recently used dropped); 0: none. */
        chunkCacheBytes: z.number().int().min(0).max(1024 ** 3).default(32 * 1024 * 1024),
        /** The base URL devices reach this server at (for links), if not the Host they used. */
        publicUrl: z.url({ protocol: /^https?$/ }).optional(),
      })
      .default({ host: '0.0.0.0', port: 8081, tenant: 'default', pollSeconds: 60, maxTransfers: 64, chunkCacheBytes: 32 * 1024 * 1024 }),
    /** Abort an artifact download when the origin sends nothing for this long (it resumes later). */
    fetchIdleTimeoutMs: durationMsSchema.min(1000).default(30_000),
  });

export type OtaConfig = z.output<typeof otaSchema>;
