import { z } from 'zod';
import type { Quality, Value } from './envelope.js';

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

/**
 * The device id when `topic` is exactly `outpost/v1/dev/{device}/{kind}` with a non-empty device
 * of one level, else undefined. Runs for every message the broker takes (the intake and the device
 * registry observe every publish), so it compares in place rather than splitting the topic.
 */
function localDevice(topic: string, kind: string): string | undefined {
  const start = LOCAL_PREFIX.length + 1;
  const end = topic.length - kind.length - 1;
  if (end <= start || topic.charCodeAt(start - 1) !== 0x2f || topic.charCodeAt(end) !== 0x2f || !topic.startsWith(LOCAL_PREFIX) || !topic.endsWith(kind)) return undefined;
  const device = topic.slice(start, end);
  return device.includes('/') ? undefined : device;
}

/** Returns the device id when `topic` is a child's status topic, else undefined. */
export function parseStatusTopic(topic: string): string | undefined {
  return localDevice(topic, 'status');
}

/** Returns the device id when `topic` is a telemetry topic, else undefined. */
export function parseTelemetryTopic(topic: string): string | undefined {
  return localDevice(topic, 'telemetry');
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

/** One point of a child's telemetry, its value and quality as the schema normalizes them. */
export interface ChildPoint {
  readonly point: string;
  readonly value: Value;
  readonly quality: Quality;
}

const POINT_NAME = /^[A-Za-z0-9_.:-]+$/;
const MESSAGE_ID = /^[A-Za-z0-9_.:-]+$/;

function fastScalar(v: unknown): boolean {
  return v === null || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v)) || (typeof v === 'string' && v.length <= 1024);
}

/**
 * The common shapes of child telemetry checked without zod (the intake's hot path: zod costs
 * several allocations per field), returning the points normalized, or undefined when the payload
 * is anything but plainly valid: then `childTelemetrySchema` decides, and names what is wrong.
 * Never accepts what the schema refuses (test/unit/topics.test.ts compares both on generated
 * payloads); it may pass on what the schema accepts.
 */
export function fastChildTelemetry(json: unknown): { id?: number | string; ts?: number; points: ChildPoint[] } | undefined {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) return undefined;
  const o = json as Record<string, unknown>;
  let keys = 0;
  for (const k in o) {
    if (k !== 'id' && k !== 'ts' && k !== 'points') return undefined;
    keys++;
  }
  if (keys !== Object.keys(o).length) return undefined;
  const { id, ts, points } = o;
  if (id !== undefined && !(typeof id === 'number' ? Number.isSafeInteger(id) && id >= 0 : typeof id === 'string' && id.length >= 1 && id.length <= 64 && MESSAGE_ID.test(id))) return undefined;
  if (ts !== undefined && !(typeof ts === 'number' && Number.isSafeInteger(ts) && ts > 0)) return undefined;
  if (points === null || typeof points !== 'object' || Array.isArray(points) || Object.getPrototypeOf(points) !== Object.prototype || Object.hasOwn(points, '__proto__')) return undefined;
  const out: ChildPoint[] = [];
  for (const point in points) {
    if (!Object.hasOwn(points, point) || point.length > 128 || !POINT_NAME.test(point)) return undefined;
    const v = (points as Record<string, unknown>)[point];
    if (v !== null && typeof v === 'object') {
      if (Array.isArray(v)) return undefined;
      const p = v as Record<string, unknown>;
      let n = 0;
      for (const k in p) {
        if (k !== 'value' && k !== 'quality') return undefined;
        n++;
      }
      if (!('value' in p) || !fastScalar(p.value)) return undefined;
      const quality = p.quality === undefined && !('quality' in p) ? 'good' : p.quality;
      if (quality !== 'good' && quality !== 'bad' && quality !== 'stale') return undefined;
      if (n !== Object.keys(p).length) return undefined;
      out.push({ point, value: p.value as Value, quality });
    } else {
      if (!fastScalar(v)) return undefined;
      out.push({ point, value: v as Value, quality: 'good' });
    }
    if (out.length > 1000) return undefined;
  }
  if (out.length === 0) return undefined;
  return { ...(id !== undefined ? { id: id as number | string } : {}), ...(ts !== undefined ? { ts: ts } : {}), points: out };
}

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
