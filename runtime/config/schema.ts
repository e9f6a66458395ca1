import { z } from 'zod';
import { cronProblem } from '../../cloud-bridge/sync-windows.js';

/**
 * The site config, validated once at the edge into typed objects with defaults filled.
 * Every field is documented in docs/config.md; keep the two in step.
 */
const id = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9_.-]+$/, 'only letters, digits, "_", "." and "-" are allowed');

const durationMs = z.number().int().positive();

export const pointSchema = z.strictObject({
  name: id,
  table: z.enum(['holding', 'input', 'coil', 'discrete']),
  address: z.number().int().min(0).max(65535),
  type: z.enum(['int16', 'uint16', 'int32', 'uint32', 'float32', 'bool']).default('uint16'),
  scale: z.number().finite().default(1),
  unit: z.string().max(32).optional(),
});

export const modbusDeviceSchema = z
  .strictObject({
    id,
    protocol: z.literal('modbus-tcp'),
    host: z.string().min(1),
    port: z.number().int().min(1).max(65535).default(502),
    unitId: z.number().int().min(0).max(255).default(1),
    pollIntervalMs: durationMs.default(1000),
    timeoutMs: durationMs.default(1000),
    /** Points whose addresses are at most this far apart share one request. */
    maxGap: z.number().int().min(0).max(100).default(10),
    points: z.array(pointSchema).min(1),
  })
  .superRefine((dev, ctx) => {
    const seen = new Set<string>();
    dev.points.forEach((p, i) => {
      if (seen.has(p.name)) {
        ctx.addIssue({ code: 'custom', path: ['points', i, 'name'], message: `duplicate point name "${p.name}"` });
      }
      seen.add(p.name);
      const bit = p.table === 'coil' || p.table === 'discrete';
      if (bit !== (p.type === 'bool')) {
        ctx.addIssue({
          code: 'custom',
          path: ['points', i, 'type'],
          message: bit ? `${p.table} points must have type bool` : `type bool needs table coil or discrete`,
        });
      }
    });
  });

export const mqttDeviceSchema = z.strictObject({
  id,
  protocol: z.literal('mqtt'),
});

export const deviceSchema = z.discriminatedUnion('protocol', [modbusDeviceSchema, mqttDeviceSchema]);

const match = z.strictObject({
  device: z.string().min(1).default('*'),
  point: z.string().min(1).default('*'),
});

export const filterRuleSchema = z
  .strictObject({
    id,
    type: z.literal('filter'),
    match: match.default({ device: '*', point: '*' }),
    /** Pass readings with min <= value <= max; readings with bad quality always pass. */
    min: z.number().finite().optional(),
    max: z.number().finite().optional(),
    route: z.literal('cloud').default('cloud'),
    /** Outbox stream the passing readings go to. */
    stream: id.default('telemetry'),
  })
  .refine((r) => r.min === undefined || r.max === undefined || r.min <= r.max, {
    message: 'min must not be greater than max',
    path: ['min'],
  });

export const windowRuleSchema = z.strictObject({
  id,
  type: z.literal('window'),
  match,
  /** Tumbling window length, aligned to multiples of the length since the epoch. */
  windowMs: durationMs.min(100),
  aggregates: z.array(z.enum(['avg', 'min', 'max', 'count'])).min(1),
  route: z.literal('cloud').default('cloud'),
  stream: id.default('telemetry'),
});

export const streamSchema = z.strictObject({
  name: id,
  /** 0 is the highest priority: drained first, dropped last when the storage quota is reached. */
  priority: z.number().int().min(0).max(9).default(5),
  /** This stream's byte budget; default: the whole storage quota. */
  quotaBytes: z.number().int().min(4096).optional(),
  /** Readings older than this are expired (counted) instead of sent. */
  ttlMs: durationMs.optional(),
  /** What happens when the stream is over its budget. */
  overflow: z.enum(['drop-oldest', 'reject-new']).default('drop-oldest'),
});

export const ruleSchema = z.discriminatedUnion('type', [filterRuleSchema, windowRuleSchema]);

export const configSchema = z
  .strictObject({
    gateway: z.strictObject({ id }),
    broker: z
      .strictObject({
        host: z.string().min(1).default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(1883),
        /** Accept telemetry from devices that are not listed under `devices`. */
        acceptUnknownDevices: z.boolean().default(true),
      })
      .default({ host: '127.0.0.1', port: 1883, acceptUnknownDevices: true }),
    http: z
      .strictObject({
        host: z.string().min(1).default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(8080),
      })
      .default({ host: '127.0.0.1', port: 8080 }),
    devices: z.array(deviceSchema).default([]),
    rules: z.array(ruleSchema).default([]),
    streams: z.array(streamSchema).min(1).default([{ name: 'telemetry', priority: 5, overflow: 'drop-oldest' }]),
    cloud: z.strictObject({
      url: z.string().regex(/^(mqtt|mqtts|tcp|ssl):\/\/[^\s]+$/, 'expected an mqtt://, mqtts://, tcp:// or ssl:// URL'),
      clientId: id.optional(),
      username: z.string().optional(),
      password: z.string().optional(),
      topicPrefix: z
        .string()
        .min(1)
        .regex(/^[^#+\s]+$/, 'must not contain wildcards or whitespace')
        .default('outpost'),
      /**
       * QoS of uplink messages: 1 (at least once; every broker) or 2 (no duplicates across link
       * drops while the broker keeps the session; Mosquitto, EMQX, HiveMQ).
       */
      qos: z.union([z.literal(1), z.literal(2)]).default(1),
      /**
       * Metered links: the link is up only inside these windows (a cron expression for the start,
       * node-cron syntax, and a length), and whenever a priority 0 stream holds readings.
       */
      syncWindows: z
        .array(
          z.strictObject({
            cron: z.string().superRefine((expr, ctx) => {
              const problem = cronProblem(expr);
              if (problem) ctx.addIssue({ code: 'custom', message: `invalid cron expression: ${problem}` });
            }),
            durationMs: durationMs.min(1000).max(7 * 86_400_000),
          }),
        )
        .default([]),
      /**
       * TLS for mqtts:// and ssl:// URLs: `ca` (PEM file of the CA that signed the broker's
       * certificate; default: the system's), `cert` and `key` (PEM files; mutual TLS),
       * `servername` (SNI / name to verify, when it differs from the URL's host).
       */
      tls: z
        .strictObject({
          ca: z.string().min(1).optional(),
          cert: z.string().min(1).optional(),
          key: z.string().min(1).optional(),
          servername: z.string().min(1).optional(),
          /** Never turn off outside a lab: false accepts any broker certificate. */
          rejectUnauthorized: z.boolean().default(true),
        })
        .refine((t) => (t.cert === undefined) === (t.key === undefined), { message: 'cert and key go together', path: ['cert'] })
        .optional(),
      /** MQTT protocol: 4 (3.1.1) or 5; with 5 the broker can refuse a single message by reason code. */
      protocolVersion: z.union([z.literal(4), z.literal(5)]).default(4),
      /**
       * Times a stream's oldest batch may fail (refused, or the connection dropped with it in
       * flight) before it is halved; a single reading that fails this often is dead-lettered.
       */
      maxAttempts: z.number().int().min(2).max(1000).default(8),
      /** Readings per uplink message. */
      batchSize: z.number().int().min(1).max(10000).default(500),
      /** Uplink messages awaiting PUBACK at once. */
      maxInFlight: z.number().int().min(1).max(1000).default(8),
      keepaliveS: z.number().int().min(5).max(3600).default(30),
      backoff: z
        .strictObject({ initialMs: durationMs.default(500), maxMs: durationMs.default(30000) })
        .default({ initialMs: 500, maxMs: 30000 }),
      /**
       * A batch that is not full waits until its oldest reading is this old, so that a metered
       * link carries fewer, larger, better-compressed messages. Priority 0 streams never wait.
       */
      lingerMs: z.number().int().min(0).max(3_600_000).default(1000),
      /**
       * While a backlog drains after an outage, live readings get this share of the link (0:
       * strictly oldest first, so every device's readings arrive in order).
       */
      liveShare: z.number().min(0).max(0.95).default(0),
      /** Uplink payloads: zlib-compressed JSON (`deflate`) or plain JSON (`none`). */
      compression: z.enum(['deflate', 'none']).default('deflate'),
      /** Uplink byte rate cap (payload bytes per second); none by default. */
      maxBytesPerS: z.number().int().min(1024).optional(),
      /**
       * Uplink payload bytes per UTC day; when spent, only streams of priority 0 are sent until
       * the next day. Survives restarts.
       */
      dailyBytes: z.number().int().min(65536).optional(),
      /**
       * How often the gateway reads its own interface table; when an address appears or changes
       * while it waits to reconnect, it reconnects at once instead of waiting out the backoff.
       * Sends nothing on the network. 0 turns it off.
       */
      netWatchMs: z.number().int().min(0).max(60_000).default(2000),
    }),
    storage: z.strictObject({
      path: z.string().min(1),
      /** Outbox byte quota; when full, the oldest queued readings are dropped and counted. */
      quotaBytes: z.number().int().min(65536).default(256 * 1024 * 1024),
      /**
       * Hard cap of the database file in bytes (optional). When the disk or this cap is full, no
       * reading is acknowledged; intake resumes by itself once the outbox drains.
       */
      maxDbBytes: z.number().int().min(1024 * 1024).optional(),
      /** NORMAL survives a process crash; FULL also survives power loss. */
      synchronous: z.enum(['normal', 'full']).default('normal'),
    }),
  })
  .superRefine((cfg, ctx) => {
    const devices = new Set<string>();
    cfg.devices.forEach((d, i) => {
      if (devices.has(d.id)) ctx.addIssue({ code: 'custom', path: ['devices', i, 'id'], message: `duplicate device id "${d.id}"` });
      devices.add(d.id);
    });
    const rules = new Set<string>();
    const streams = new Set<string>();
    cfg.streams.forEach((st, i) => {
      if (streams.has(st.name)) ctx.addIssue({ code: 'custom', path: ['streams', i, 'name'], message: `duplicate stream "${st.name}"` });
      streams.add(st.name);
    });
    cfg.rules.forEach((r, i) => {
      if (rules.has(r.id)) ctx.addIssue({ code: 'custom', path: ['rules', i, 'id'], message: `duplicate rule id "${r.id}"` });
      rules.add(r.id);
      if (!streams.has(r.stream)) {
        ctx.addIssue({ code: 'custom', path: ['rules', i, 'stream'], message: `no stream named "${r.stream}" under streams` });
      }
    });
  });

export type SiteConfig = z.output<typeof configSchema>;
export type SiteConfigInput = z.input<typeof configSchema>;
export type ModbusDeviceConfig = z.output<typeof modbusDeviceSchema>;
export type MqttDeviceConfig = z.output<typeof mqttDeviceSchema>;
export type PointConfig = z.output<typeof pointSchema>;
export type RuleConfig = z.output<typeof ruleSchema>;
export type CloudConfig = SiteConfig['cloud'];
export type StreamConfigEntry = z.output<typeof streamSchema>;
