import { z } from 'zod';
import { LOCAL_PREFIX } from './topics.js';

/**
 * The public contract of twins, configurations and method calls (docs/devices.md, docs/topics.md):
 * topics between children and the gateway, topics between the gateway and the cloud, the payloads,
 * and the rule both sides use to resolve concurrent edits of a device's desired state. The
 * simulated cloud and children use this file and nothing else of the gateway.
 */

/** Topics of a child device's twin and calls, under its own subtree (docs/topics.md). */
export const twinTopics = {
  /** Retained full effective desired document, `{"version", "desired"}`. */
  desired: (device: string) => `${LOCAL_PREFIX}/${device}/desired`,
  /** Each change of it, `{"version", "from", "patch"}` (QoS 1, not retained). */
  desiredPatch: (device: string) => `${LOCAL_PREFIX}/${device}/desired/patch`,
  /** What the device publishes: `{"reported", "version"?, "rejected"?}`. */
  reported: (device: string) => `${LOCAL_PREFIX}/${device}/reported`,
  /** A method call to the device, `{"id", "payload", "deadline"}`. */
  call: (device: string, method: string) => `${LOCAL_PREFIX}/${device}/cmd/${method}`,
  /** The device's answer to call `id`, `{"status", "payload"?}`. */
  response: (device: string, id: string) => `${LOCAL_PREFIX}/${device}/response/${id}`,
};

/** The device id and what follows it when `topic` is under a device's subtree. */
export function parseDeviceTopic(topic: string): { device: string; rest: string } | undefined {
  if (!topic.startsWith(`${LOCAL_PREFIX}/`)) return undefined;
  const tail = topic.slice(LOCAL_PREFIX.length + 1);
  const slash = tail.indexOf('/');
  if (slash <= 0) return undefined;
  return { device: tail.slice(0, slash), rest: tail.slice(slash + 1) };
}

/** Cloud topics of twins, configurations and calls, per gateway (docs/topics.md). */
export const cloudTwinTopics = {
  /** Retained: the cloud's copy of a device's direct desired edits, `CloudDesired`. */
  desired: (prefix: string, gatewayId: string, device: string) => `${prefix}/v1/gw/${gatewayId}/twins/${device}/desired`,
  desiredFilter: (prefix: string, gatewayId: string) => `${prefix}/v1/gw/${gatewayId}/twins/+/desired`,
  /** Retained: one configuration, `CloudConfiguration`; an empty payload removes it. */
  configuration: (prefix: string, gatewayId: string, id: string) => `${prefix}/v1/gw/${gatewayId}/configurations/${id}`,
  configurationsFilter: (prefix: string, gatewayId: string) => `${prefix}/v1/gw/${gatewayId}/configurations/+`,
  /** Method calls from the cloud, `CloudCall` (QoS 1, not retained). */
  calls: (prefix: string, gatewayId: string) => `${prefix}/v1/gw/${gatewayId}/calls`,
};

/**
 * Records the gateway sends up with the readings (their `point`; `value` is JSON text): a
 * device's reported changes as a merge patch, its desired edits made at the edge with their
 * versions, its inventory entry, a configuration's counts, a call's answer.
 */
export const TWIN_POINTS = {
  reported: '$twin/reported',
  desired: '$twin/desired',
  inventory: '$inventory',
  configuration: (id: string) => `$configuration/${id}`,
  call: (id: string) => `$call/${id}`,
} as const;

/** Ids of configurations, methods and calls. */
export const nameSchema = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9_.-]+$/, 'only letters, digits, "_", "." and "-" are allowed');

/** How long a method call waits for the device's answer (API, rules, flows, the cloud alike). */
export const callTimeoutMsSchema = z.number().int().min(100).max(300_000);

/** A leaf path of a twin document: keys joined by ".". */
export const leafPathSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,4}$/, 'a path of keys (letters, digits, "_", "-") joined by "."');

export const scalarSchema = z.union([z.number().finite(), z.boolean(), z.string().max(1024), z.null()]);

/** One versioned leaf of a device's direct desired state; null value: no direct value (the configurations decide). */
export const versionedLeafSchema = z.strictObject({ value: scalarSchema, version: z.number().int().nonnegative() });
export type VersionedLeaf = z.output<typeof versionedLeafSchema>;

/** `{prefix}/v1/gw/{gw}/twins/{device}/desired`, retained: the cloud's direct desired edits of one device. */
export const cloudDesiredSchema = z.strictObject({
  v: z.literal(1),
  props: z.record(leafPathSchema, versionedLeafSchema).refine((p) => Object.keys(p).length <= 256, 'at most 256 properties'),
  /** Tags the cloud sets on the device (replacing what it set before); used by target conditions. */
  tags: z.record(z.string().regex(/^[A-Za-z0-9_-]{1,64}$/), z.union([z.string().max(256), z.number().finite(), z.boolean()])).optional(),
});
export type CloudDesired = z.output<typeof cloudDesiredSchema>;

/** What the gateway sends up for edits made at the edge (`$twin/desired` record). */
export type EdgeDesired = Record<string, VersionedLeaf>;

/**
 * The one conflict rule, the same on both sides (docs/devices.md, "Conflicts"): per leaf, the
 * higher version wins; at equal versions with different values, the edit made at the edge wins
 * (the site's operator has the machine in front of them). Every edit raises the leaf's version by
 * one from the version its author last saw, so two edits of one leaf made apart during an outage
 * get the same version, and the side that edited a leaf more often during it wins that leaf.
 */
export function resolveLeaf(edge: VersionedLeaf | undefined, cloud: VersionedLeaf | undefined): { leaf: VersionedLeaf; from: 'edge' | 'cloud' } | undefined {
  if (!edge) return cloud && { leaf: cloud, from: 'cloud' };
  if (!cloud) return { leaf: edge, from: 'edge' };
  return cloud.version > edge.version ? { leaf: cloud, from: 'cloud' } : { leaf: edge, from: 'edge' };
}

/**
 * A JSON merge patch (RFC 7396) applied to `doc`: null deletes, objects merge, anything else
 * replaces. Patches of desired and reported state use it on both sides of every link.
 */
export function applyMergePatch<T extends Record<string, unknown>>(doc: T, patch: Readonly<Record<string, unknown>>): T {
  const out: Record<string, unknown> = { ...doc };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else if (typeof v === 'object' && !Array.isArray(v)) {
      const held = out[k];
      out[k] = applyMergePatch(held !== null && typeof held === 'object' && !Array.isArray(held) ? (held as Record<string, unknown>) : {}, v as Record<string, unknown>);
    } else out[k] = v;
  }
  return out as T;
}

/** `{prefix}/v1/gw/{gw}/configurations/{id}`, retained. */
export const cloudConfigurationSchema = z.strictObject({
  v: z.literal(1),
  /** Raised by the cloud on every change; an older version than the gateway holds is ignored. */
  version: z.number().int().nonnegative(),
  target: z.string().min(1).max(1024),
  desired: z.record(z.string(), z.unknown()),
  priority: z.number().int().min(-1_000_000).max(1_000_000).default(0),
  labels: z.record(z.string().regex(/^[A-Za-z0-9_-]{1,64}$/), z.string().max(256)).default({}),
});

/** `{prefix}/v1/gw/{gw}/calls`: a method call from the cloud; the answer goes up as a `$call/{id}` record. */
export const cloudCallSchema = z.strictObject({
  id: nameSchema,
  device: nameSchema,
  method: nameSchema,
  payload: z.unknown().optional(),
  timeoutMs: callTimeoutMsSchema.default(30_000),
  /** Wait for an offline device until the deadline instead of failing at once. */
  wait: z.boolean().default(false),
});

/** What a child publishes on its `reported` topic. */
export const childReportedSchema = z.strictObject({
  /** A merge patch of the reported document (null deletes). */
  reported: z.record(z.string(), z.unknown()),
  /** The desired version the device has applied. */
  version: z.number().int().nonnegative().optional(),
  /** Desired properties it refused, path -> reason. */
  rejected: z.record(leafPathSchema, z.string().max(256)).optional(),
});

/** What a child answers a call with. */
export const childResponseSchema = z.strictObject({
  status: z.number().int().min(100).max(599),
  payload: z.unknown().optional(),
});

/** The call a child receives on `cmd/{method}`. */
export interface ChildCall {
  readonly id: string;
  readonly payload?: unknown;
  /** ms since the epoch after which nobody waits for the answer. */
  readonly deadline: number;
}

/** The full desired document a child receives (retained). */
export interface ChildDesired {
  readonly version: number;
  readonly desired: Record<string, unknown>;
}

/** A change of it: apply `patch` (RFC 7396) only when the document held is at version `from`. */
export interface ChildDesiredPatch {
  readonly version: number;
  readonly from: number;
  readonly patch: Record<string, unknown>;
}
