import { z } from 'zod';

/**
 * Public MQTT contracts (docs/topics.md). Local topics are between child devices and the
 * gateway's broker; cloud topics are between the gateway and the cloud broker. Both are scoped
 * by the publishing identity (device id, gateway id) so that ACLs can be written per identity.
 */
export const LOCAL_PREFIX = 'outpost/v1/dev';

export const localTopics = {
  telemetry: (deviceId: string) => `${LOCAL_PREFIX}/${deviceId}/telemetry`,
  /** Birth and last will: retained `{"state":"online"|"offline"}`. */
  status: (deviceId: string) => `${LOCAL_PREFIX}/${deviceId}/status`,
  /** Subscription filter for every device's telemetry. */
  telemetryFilter: `${LOCAL_PREFIX}/+/telemetry`,
  /** A device's own subtree: it may publish under it and nowhere else (docs/security.md). */
  subtree: (deviceId: string) => `${LOCAL_PREFIX}/${deviceId}/#`,
  /** What a device may subscribe to of its own: commands, desired state, updates. */
  deviceInbox: (deviceId: string) => [`${LOCAL_PREFIX}/${deviceId}/cmd/#`, `${LOCAL_PREFIX}/${deviceId}/desired/#`, `${LOCAL_PREFIX}/${deviceId}/update/#`],
};

/** A child device's birth (`online`) or last will / clean goodbye (`offline`). */
export const childStatusSchema = z.strictObject({
  state: z.enum(['online', 'offline']),
  ts: z.number().int().positive().optional(),
  /**
   * In a birth: what the device is (`model`, `firmware`, anything else it wants to be targeted
   * by), kept in the inventory and used by configurations' target conditions (docs/devices.md).
   */
  attributes: z
    .record(z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'attribute names use letters, digits, "_" and "-"'), z.union([z.string().max(256), z.number().finite(), z.boolean()]))
    .refine((a) => Object.keys(a).length <= 32, 'at most 32 attributes')
    .optional(),
});

/** Returns the device id when `topic` is a child's status topic, else undefined. */
export function parseStatusTopic(topic: string): string | undefined {
  const parts = topic.split('/');
  if (parts.length !== 5 || `${parts[0]}/${parts[1]}/${parts[2]}` !== LOCAL_PREFIX || parts[4] !== 'status') return undefined;
  return parts[3] === '' ? undefined : parts[3];
}

/** Returns the device id when `topic` is a telemetry topic, else undefined. */
export function parseTelemetryTopic(topic: string): string | undefined {
  const parts = topic.split('/');
  if (parts.length !== 5 || `${parts[0]}/${parts[1]}/${parts[2]}` !== LOCAL_PREFIX || parts[4] !== 'telemetry') {
    return undefined;
  }
  return parts[3] === '' ? undefined : parts[3];
}

export const cloudTopics = {
  telemetry: (prefix: string, gatewayId: string) => `${prefix}/v1/gw/${gatewayId}/telemetry`,
  /** Retained `{"state":"online"|"offline"}`; `offline` is also the gateway's last will. */
  status: (prefix: string, gatewayId: string) => `${prefix}/v1/gw/${gatewayId}/status`,
  telemetryFilter: (prefix: string) => `${prefix}/v1/gw/+/telemetry`,
  /** Retained signed release envelopes, one topic per release (docs/ota.md). */
  release: (prefix: string, gatewayId: string, release: string) => `${prefix}/v1/gw/${gatewayId}/releases/${release}`,
  releasesFilter: (prefix: string, gatewayId: string) => `${prefix}/v1/gw/${gatewayId}/releases/+`,
  /** Rollout commands `{"action":"pause"|"resume"|"abort","at":ms}`, retained per release. */
  rolloutCommand: (prefix: string, gatewayId: string, release: string) => `${prefix}/v1/gw/${gatewayId}/rollouts/${release}/command`,
  rolloutCommandsFilter: (prefix: string, gatewayId: string) => `${prefix}/v1/gw/${gatewayId}/rollouts/+/command`,
  /** Signed site configs `{payload, signatures}` (retained; docs/topics.md, runtime/parts/config.ts). */
  config: (prefix: string, gatewayId: string) => `${prefix}/v1/gw/${gatewayId}/config`,
  /** Identity commands `{"action":"revoke","id":DEVICE,"reason"?:TEXT}` (docs/security.md). */
  identityCommands: (prefix: string, gatewayId: string) => `${prefix}/v1/gw/${gatewayId}/identities/command`,
};

const scalar = z.union([z.number().finite(), z.boolean(), z.string().max(1024), z.null()]);
const pointName = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9_.:-]+$/, 'point names use letters, digits, "_", ".", ":" and "-"');

/**
 * What a child device publishes on its telemetry topic (JSON, QoS 1 for guaranteed intake).
 * `id`: optional message id unique per device; when given, reading ids derive from it so a
 * retransmitted message deduplicates in the cloud. `ts`: observation time in ms since the epoch
 * (default: arrival time). `points`: name -> value, or `{value, quality}`.
 */
export const childTelemetrySchema = z.strictObject({
  id: z.union([z.number().int().nonnegative(), z.string().min(1).max(64).regex(/^[A-Za-z0-9_.:-]+$/)]).optional(),
  ts: z.number().int().positive().optional(),
  points: z.preprocess(
    (raw, ctx) => {
      // zod's record parser skips an own key named __proto__ (JSON.parse makes one) without an
      // issue; such a point must be refused with a reason, not lost silently.
      if (raw !== null && typeof raw === 'object' && Object.hasOwn(raw, '__proto__')) {
        ctx.issues.push({ code: 'custom', message: 'the point name "__proto__" is reserved', input: raw, path: ['__proto__'] });
      }
      return raw;
    },
    z
      // The object form first: zod tries a union's options in order, and an option that fails
      // costs little unless every option fails (then each issue gets its message). A scalar
      // first would fail four ways for every {value, quality} point.
      .record(pointName, z.union([z.strictObject({ value: scalar, quality: z.enum(['good', 'bad', 'stale']).default('good') }), scalar]))
      .refine((p) => Object.keys(p).length > 0, 'at least one point is required')
      .refine((p) => Object.keys(p).length <= 1000, 'at most 1000 points per message'),
  ),
});
export type ChildTelemetry = z.output<typeof childTelemetrySchema>;

export const envelopeSchema = z.strictObject({
  id: z.string().min(1),
  device: z.string().min(1),
  point: z.string().min(1),
  // Readings carry strings of at most 1024 characters; the gateway's own `$` records (twins,
  // inventory, call answers: runtime/contracts/twins.ts) carry JSON text of at most 64 KiB.
  value: z.union([z.number().finite(), z.boolean(), z.string().max(64 * 1024), z.null()]),
  quality: z.enum(['good', 'bad', 'stale']),
  ts: z.number(),
  seq: z.number(),
  rule: z.string().optional(),
  unit: z.string().optional(),
});

/** One uplink message: a batch of readings, each carrying its own id for deduplication. */
export const uplinkBatchSchema = z.strictObject({
  v: z.literal(1),
  gateway: z.string().min(1),
  sentAt: z.number(),
  readings: z.array(envelopeSchema),
});
export type UplinkBatch = z.output<typeof uplinkBatchSchema>;
