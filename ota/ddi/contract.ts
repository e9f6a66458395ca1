import { z } from 'zod';

/**
 * What the update server (hawkBit DDI v1, docs/ota.md) and the rollout engine tell each other:
 * the offers, the feedback bodies, and the deployment source the server asks.
 */

/** One artifact as a device may download it. */
export interface OfferedArtifact {
  readonly moduleId: number;
  readonly filename: string;
  readonly size: number;
  readonly sha256: string;
  readonly sha1: string;
  readonly md5: string;
}

export interface DdiOffer {
  readonly actionId: number;
  readonly name: string;
  readonly version: string;
  readonly artifact: OfferedArtifact;
  /** Outside the maintenance window: the device may download, not install. */
  readonly maintenanceWindow?: 'available' | 'unavailable' | undefined;
}

export const feedbackSchema = z.object({
  id: z.union([z.string().max(32), z.number()]).optional(),
  time: z.string().max(64).optional(),
  timestamp: z.number().optional(),
  status: z.object({
    execution: z.enum(['closed', 'proceeding', 'canceled', 'scheduled', 'rejected', 'resumed', 'downloaded', 'download']),
    result: z.object({
      finished: z.enum(['success', 'failure', 'none']),
      progress: z.object({ cnt: z.number().int().min(0), of: z.number().int().min(0) }).partial().optional(),
    }),
    code: z.number().int().optional(),
    details: z.array(z.string().max(4096)).max(200).optional(),
  }),
});
export type DdiFeedback = z.output<typeof feedbackSchema>;

export const configDataSchema = z.object({
  mode: z.enum(['merge', 'replace', 'remove']).optional(),
  data: z.record(z.string().max(128), z.string().max(1024)).refine((d) => Object.keys(d).length <= 100, 'at most 100 attributes'),
});

/** Checks that a request's Authorization header is the device's own credential. */
export interface DeviceAuthenticator {
  /** Undefined when it is; else the reason (a metrics label, never the token). */
  check(authorization: string | undefined, device: string): string | undefined;
}

/** What the rollout engine tells the update server. */
export interface DeploymentSource {
  /** The action the device should work on now, if any (full image or a delta for its version). */
  offer(device: string): DdiOffer | undefined;
  /** An action of the device that is to be cancelled (its rollout was aborted). */
  cancellation(device: string): number | undefined;
  /** Feedback for an action; false when the device has no such action. */
  feedback(device: string, actionId: number, fb: DdiFeedback): boolean;
  cancelFeedback(device: string, actionId: number, fb: DdiFeedback): boolean;
  configData(device: string, data: Readonly<Record<string, string>>): void;
  /** Where the bytes of an artifact offered to this device are, or undefined (not offered to it). */
  artifact(device: string, moduleId: number, filename: string): { path: string; sha256: string; md5: string; size: number } | undefined;
}

export interface DdiServerOptions {
  readonly tenant: string;
  /** Poll interval suggested to devices. */
  readonly pollSeconds: number;
  /**
   * How devices prove who they are (device-auth.ts), or `closed-network`: none, every client is
   * trusted as the device it names; then the server refuses to listen on a wildcard address.
   */
  readonly auth: DeviceAuthenticator | 'closed-network';
  /** Artifact transfers at once; more wait in line (up to maxQueued), beyond that 503. */
  readonly maxTransfers: number;
  readonly maxQueued?: number | undefined;
  /** Base URL devices use to reach this server (links in responses); default: the request's Host. */
  readonly publicUrl?: string | undefined;
  /** Artifact bytes kept in memory (1 MiB chunks, least recently used dropped); default 32 MiB, 0: none. */
  readonly chunkCacheBytes?: number | undefined;
  /** A transfer whose device takes longer than this to read one chunk is closed; default 5 min. */
  readonly stallMs?: number | undefined;
}
