import { z } from 'zod';
import { cronProblem } from '../../cloud-bridge/sync-windows.js';
import { compileExpression } from '../../rules/expression.js';
import { READING_FIELDS } from '../../rules/filter.js';
import { topicFilterProblem } from '../../rules/glob.js';
import { AGGREGATES } from '../../rules/types.js';
import { MAX_WINDOW_VALUES } from '../../rules/window.js';

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

const bitTable = (t: string): boolean => t === 'coil' || t === 'discrete';
const registerWidth: Record<string, number> = { int32: 2, uint32: 2, float32: 2, int64: 4, uint64: 4, float64: 4 };

export const pointSchema = z
  .strictObject({
    name: id,
    table: z.enum(['holding', 'input', 'coil', 'discrete']),
    /** Zero-based protocol address (register 40001 is holding address 0). */
    address: z.number().int().min(0).max(65535),
    type: z.enum(['int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64', 'float32', 'float64', 'bool', 'string']).default('uint16'),
    /** Byte order of multi-register values: ABCD (big-endian), CDAB (word swap), BADC (byte swap), DCBA. */
    order: z.enum(['ABCD', 'CDAB', 'BADC', 'DCBA']).default('ABCD'),
    /** Engineering value = raw × scale + offset. */
    scale: z.number().finite().refine((v) => v !== 0, 'scale must not be 0').default(1),
    offset: z.number().finite().default(0),
    unit: z.string().min(1).max(32).optional(),
    /** Type bool in a holding or input register: bit 0 (least significant) to 15. */
    bit: z.number().int().min(0).max(15).optional(),
    /** Type string: length in registers (two characters each). */
    length: z.number().int().min(1).max(125).optional(),
    /** Poll interval of this point; default: the device's pollIntervalMs. */
    intervalMs: durationMs.min(10).optional(),
    /** Report by exception: a value that moved less than this from the last reported one is not reported. */
    deadband: z
      .strictObject({ absolute: z.number().finite().positive().optional(), percent: z.number().finite().positive().max(100).optional() })
      .refine((d) => d.absolute !== undefined || d.percent !== undefined, 'give absolute, percent or both')
      .optional(),
    /** With a deadband or for unchanged values: report anyway after this long without a report. */
    maxSilenceMs: durationMs.optional(),
    /** May be written through the API and CLI (holding registers and coils only). */
    writable: z.boolean().default(false),
  })
  .superRefine((p, ctx) => {
    if (bitTable(p.table) !== (p.type === 'bool' && p.bit === undefined)) {
      if (bitTable(p.table)) ctx.addIssue({ code: 'custom', path: ['type'], message: `${p.table} points must have type bool` });
      else if (p.type === 'bool') ctx.addIssue({ code: 'custom', path: ['bit'], message: 'type bool in a register needs bit (0-15)' });
    }
    if (p.bit !== undefined && p.type !== 'bool') ctx.addIssue({ code: 'custom', path: ['bit'], message: 'bit is only for type bool' });
    if (p.type === 'string' && p.length === undefined) ctx.addIssue({ code: 'custom', path: ['length'], message: 'type string needs length (registers)' });
    if (p.length !== undefined && p.type !== 'string') ctx.addIssue({ code: 'custom', path: ['length'], message: 'length is only for type string' });
    const width = p.type === 'string' ? (p.length ?? 1) : (registerWidth[p.type] ?? 1);
    if (p.address <= 65535 && p.address + width > 65536) ctx.addIssue({ code: 'custom', path: ['address'], message: `${p.type} at ${p.address} runs past address 65535` });
    if (p.writable && !(p.table === 'holding' || p.table === 'coil')) {
      ctx.addIssue({ code: 'custom', path: ['writable'], message: `${p.table} points are read-only in Modbus` });
    }
    if (p.writable && p.type === 'string' && (p.length ?? 0) > 123) {
      ctx.addIssue({ code: 'custom', path: ['length'], message: 'a writable string is at most 123 registers (one write multiple registers request)' });
    }
    if (p.writable && p.table === 'holding' && p.type === 'bool') {
      ctx.addIssue({ code: 'custom', path: ['writable'], message: 'a bit of a register cannot be written on its own' });
    }
  });

const modbusCommon = {
  id,
  /** Unit id (slave address); behind a serial-to-Ethernet gateway, the serial device's address. */
  unitId: z.number().int().min(0).max(255).default(1),
  pollIntervalMs: durationMs.min(10).default(1000),
  /** Per request; a device that does not answer in time holds the bus for at most this long. */
  timeoutMs: durationMs.max(60_000).default(1000),
  /** Extra attempts after a corrupt or busy answer (a timeout is never retried in the same poll). */
  retries: z.number().int().min(0).max(5).default(1),
  /** Points whose addresses are at most this far apart share one request. */
  maxGap: z.number().int().min(0).max(100).default(10),
  /** After `failures` polls in a row without an answer the device is left alone for `openMs` (doubling to `maxOpenMs`) before one probe. */
  breaker: z
    .strictObject({ failures: z.number().int().min(1).max(100).default(2), openMs: durationMs.default(5000), maxOpenMs: durationMs.default(60_000) })
    .default({ failures: 2, openMs: 5000, maxOpenMs: 60_000 }),
  points: z.array(pointSchema).min(1),
};

function uniquePointNames(dev: { points: readonly { name: string }[] }, ctx: z.RefinementCtx): void {
  const seen = new Set<string>();
  dev.points.forEach((p, i) => {
    if (seen.has(p.name)) ctx.addIssue({ code: 'custom', path: ['points', i, 'name'], message: `duplicate point name "${p.name}"` });
    seen.add(p.name);
  });
}

export const modbusDeviceSchema = z
  .strictObject({
    ...modbusCommon,
    /** modbus-tcp: MBAP framing; modbus-rtu-tcp: RTU frames over TCP (serial-to-Ethernet gateways in transparent mode). */
    protocol: z.enum(['modbus-tcp', 'modbus-rtu-tcp']),
    host: z.string().min(1),
    port: z.number().int().min(1).max(65535).default(502),
  })
  .superRefine(uniquePointNames);

export const modbusRtuDeviceSchema = z
  .strictObject({
    ...modbusCommon,
    protocol: z.literal('modbus-rtu'),
    /** Serial device, e.g. /dev/ttyUSB0. Devices on the same path share the bus. */
    path: z.string().min(1),
    baudRate: z.number().int().min(300).max(921_600).default(9600),
    parity: z.enum(['none', 'even', 'odd']).default('none'),
    dataBits: z.union([z.literal(7), z.literal(8)]).default(8),
    stopBits: z.union([z.literal(1), z.literal(2)]).default(1),
  })
  .superRefine(uniquePointNames);

/** What one point of an MQTT child device may carry (docs/config.md). */
export const childPointSpecSchema = z
  .strictObject({
    type: z.enum(['number', 'boolean', 'string']),
    min: z.number().finite().optional(),
    max: z.number().finite().optional(),
    /** Allowed values of a string point. */
    enum: z.array(z.string().min(1).max(1024)).min(1).optional(),
    unit: z.string().min(1).max(32).optional(),
  })
  .superRefine((p, ctx) => {
    if ((p.min !== undefined || p.max !== undefined) && p.type !== 'number') ctx.addIssue({ code: 'custom', path: ['min'], message: 'min/max are for type number' });
    if (p.enum !== undefined && p.type !== 'string') ctx.addIssue({ code: 'custom', path: ['enum'], message: 'enum is for type string' });
    if (p.min !== undefined && p.max !== undefined && p.min > p.max) ctx.addIssue({ code: 'custom', path: ['min'], message: 'min must not be greater than max' });
  });

export const mqttDeviceSchema = z.strictObject({
  id,
  protocol: z.literal('mqtt'),
  /**
   * The device's payload schema: its points and what each may carry. Without it, any point with
   * any scalar value is taken.
   */
  points: z.record(z.string().regex(/^[A-Za-z0-9_.:-]{1,128}$/, 'point names use letters, digits, "_", ".", ":" and "-"'), childPointSpecSchema).optional(),
  /** With `points`: refuse a message that carries a point not declared there (default), or take it as is. */
  strict: z.boolean().default(true),
});

export const deviceSchema = z.discriminatedUnion('protocol', [modbusDeviceSchema, modbusRtuDeviceSchema, mqttDeviceSchema]);

const match = z.strictObject({
  device: z.string().min(1).default('*'),
  point: z.string().min(1).default('*'),
  /** An MQTT topic filter over `{device}/{point}`, e.g. `+/temp` or `boiler-1/#`. */
  topic: z
    .string()
    .min(1)
    .superRefine((t, ctx) => {
      const problem = topicFilterProblem(t);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    })
    .optional(),
});

/** A JSONata expression over a reading's fields, compiled here so that a bad one is refused with its position. */
const expression = z
  .string()
  .min(1)
  .superRefine((text, ctx) => {
    try {
      compileExpression(text, READING_FIELDS);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
    }
  });

const deadband = z
  .strictObject({ absolute: z.number().finite().positive().optional(), percent: z.number().finite().positive().max(100).optional() })
  .refine((d) => d.absolute !== undefined || d.percent !== undefined, 'give absolute, percent or both');

export const filterRuleSchema = z
  .strictObject({
    id,
    type: z.literal('filter'),
    match: match.default({ device: '*', point: '*' }),
    /** Pass readings with min <= value <= max; readings with bad quality always pass. */
    min: z.number().finite().optional(),
    max: z.number().finite().optional(),
    /** JSONata expression: the reading passes when it is true. */
    where: expression.optional(),
    /** JSONata expressions for the passed reading's new value, point name and unit. */
    set: z.strictObject({ value: expression.optional(), point: expression.optional(), unit: expression.optional() }).optional(),
    /** Readings whose quality is not good: pass untouched, drop, or filter them like good ones. */
    bad: z.enum(['pass', 'drop', 'filter']).default('pass'),
    /** What deadband, changeOfValue and rateLimit keep their memory per. */
    groupBy: z.array(z.enum(['device', 'point', 'unit'])).default(['device', 'point']),
    deadband: deadband.optional(),
    changeOfValue: z.boolean().default(false),
    rateLimit: z.strictObject({ count: z.number().int().positive().default(1), perMs: durationMs }).optional(),
    /** cloud (outbox), alert (an alert reading to the outbox), mqtt (local broker), modbus (a write). */
    route: z.enum(['cloud', 'alert', 'mqtt', 'modbus']).default('cloud'),
    /** Outbox stream of routes cloud and alert. */
    stream: id.default('telemetry'),
    alert: z.strictObject({ severity: z.enum(['info', 'warning', 'critical']).default('warning'), message: expression.optional() }).optional(),
    mqtt: z
      .strictObject({
        /** Topic with {device} and {point} filled in. */
        topic: z.string().min(1).regex(/^[^#+\s]+$/, 'a topic to publish on must not contain wildcards or whitespace'),
        qos: z.union([z.literal(0), z.literal(1)]).default(0),
        retain: z.boolean().default(false),
      })
      .optional(),
    write: z
      .strictObject({
        device: id,
        point: z.string().min(1),
        /** At most one write to the point per this long; newer values wait and replace older ones. */
        minIntervalMs: z.number().int().min(0).default(1000),
      })
      .optional(),
  })
  .refine((r) => r.min === undefined || r.max === undefined || r.min <= r.max, {
    message: 'min must not be greater than max',
    path: ['min'],
  })
  .refine((r) => r.route !== 'mqtt' || r.mqtt !== undefined, { message: 'route mqtt needs mqtt: { topic }', path: ['mqtt'] })
  .refine((r) => r.route !== 'modbus' || r.write !== undefined, { message: 'route modbus needs write: { device, point }', path: ['write'] });

export const windowRuleSchema = z
  .strictObject({
    id,
    type: z.literal('window'),
    match: match.default({ device: '*', point: '*' }),
    /** JSONata expression: only readings it is true for enter the window. */
    where: expression.optional(),
    kind: z.enum(['tumbling', 'hopping', 'sliding', 'session', 'count']).default('tumbling'),
    /** Length of tumbling (aligned to multiples of it since the epoch), hopping and sliding windows. */
    windowMs: durationMs.min(100).optional(),
    /** Hopping windows: one starts every hopMs (aligned likewise). */
    hopMs: durationMs.min(100).optional(),
    /** Session windows: closed after this long without a reading of the group. */
    gapMs: durationMs.min(100).optional(),
    /** Count windows: readings per window. */
    count: z.number().int().min(1).max(MAX_WINDOW_VALUES).optional(),
    /** Whose clock places a reading in a window: the gateway's on arrival, or the reading's `ts`. */
    time: z.enum(['processing', 'event']).default('processing'),
    /** Event time: how long after its end a window still takes late readings. */
    allowedLatenessMs: z.number().int().min(0).default(0),
    groupBy: z.array(z.enum(['device', 'point', 'unit'])).default(['device', 'point']),
    aggregates: z.array(z.enum(AGGREGATES)).min(1),
    route: z.literal('cloud').default('cloud'),
    stream: id.default('telemetry'),
  })
  .superRefine((r, ctx) => {
    const need = (field: 'windowMs' | 'hopMs' | 'gapMs' | 'count'): void => {
      if (r[field] === undefined) ctx.addIssue({ code: 'custom', path: [field], message: `a ${r.kind} window needs ${field}` });
    };
    if (r.kind === 'tumbling' || r.kind === 'hopping' || r.kind === 'sliding') need('windowMs');
    if (r.kind === 'hopping') {
      need('hopMs');
      if (r.hopMs !== undefined && r.windowMs !== undefined && r.windowMs / r.hopMs > 100) {
        ctx.addIssue({ code: 'custom', path: ['hopMs'], message: 'at most 100 windows may overlap: hopMs must be at least windowMs / 100' });
      }
      if (r.hopMs !== undefined && r.windowMs !== undefined && r.hopMs > r.windowMs) ctx.addIssue({ code: 'custom', path: ['hopMs'], message: 'hopMs must not be greater than windowMs' });
    }
    if (r.kind === 'session') need('gapMs');
    if (r.kind === 'count') need('count');
    if (r.kind === 'count' && r.time === 'event') ctx.addIssue({ code: 'custom', path: ['time'], message: 'count windows do not use time' });
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
        /** Admin credentials: the Node-RED editor at /red asks for them. */
        admin: z
          .strictObject({
            username: z.string().min(1).max(64),
            /** bcrypt hash of the password (`$2a$`/`$2b$`/`$2y$`), never the password itself. */
            passwordHash: z.string().regex(/^\$2[aby]\$\d{2}\$[./A-Za-z0-9]{53}$/, 'expected a bcrypt hash ($2b$10$…)'),
          })
          .optional(),
      })
      .default({ host: '127.0.0.1', port: 8080 }),
    /** Node-RED hosted by the gateway: editor at /red, flows kept in userDir. */
    nodeRed: z
      .strictObject({
        enabled: z.boolean().default(true),
        /** Where flows and the editor's sessions live; default: node-red/ beside the store. */
        userDir: z.string().min(1).optional(),
      })
      .optional(),
    /** Over-the-air updates: releases from the cloud, cached once, rolled out to child devices (docs/ota.md). */
    ota: z
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
        fetchIdleTimeoutMs: durationMs.min(1000).default(30_000),
      })
      .optional(),
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
    const serial = new Map<string, string>();
    cfg.devices.forEach((d, i) => {
      if (devices.has(d.id)) ctx.addIssue({ code: 'custom', path: ['devices', i, 'id'], message: `duplicate device id "${d.id}"` });
      devices.add(d.id);
      if (d.protocol === 'modbus-rtu') {
        // One serial line, one set of line settings.
        const line = `${d.baudRate} ${d.dataBits}${d.parity[0]!.toUpperCase()}${d.stopBits}`;
        const other = serial.get(d.path);
        if (other !== undefined && other !== line) {
          ctx.addIssue({ code: 'custom', path: ['devices', i, 'baudRate'], message: `${d.path} is already used at ${other}; devices on one serial line share its settings` });
        }
        serial.set(d.path, line);
      }
    });
    const rules = new Set<string>();
    const streams = new Set<string>();
    cfg.streams.forEach((st, i) => {
      if (streams.has(st.name)) ctx.addIssue({ code: 'custom', path: ['streams', i, 'name'], message: `duplicate stream "${st.name}"` });
      streams.add(st.name);
    });
    if (cfg.nodeRed?.enabled && !cfg.http.admin) {
      ctx.addIssue({ code: 'custom', path: ['http', 'admin'], message: 'the Node-RED editor (nodeRed.enabled) needs admin credentials: http.admin { username, passwordHash }' });
    }
    cfg.rules.forEach((r, i) => {
      if (rules.has(r.id)) ctx.addIssue({ code: 'custom', path: ['rules', i, 'id'], message: `duplicate rule id "${r.id}"` });
      rules.add(r.id);
      if (!streams.has(r.stream)) {
        ctx.addIssue({ code: 'custom', path: ['rules', i, 'stream'], message: `no stream named "${r.stream}" under streams` });
      }
      if (r.type === 'filter' && r.route === 'modbus' && r.write) {
        const { device, point } = r.write;
        const d = cfg.devices.find((x) => x.id === device);
        const p = d && d.protocol !== 'mqtt' ? d.points.find((x) => x.name === point) : undefined;
        if (!d || d.protocol === 'mqtt') ctx.addIssue({ code: 'custom', path: ['rules', i, 'write', 'device'], message: `no Modbus device "${device}" under devices` });
        else if (!p) ctx.addIssue({ code: 'custom', path: ['rules', i, 'write', 'point'], message: `device "${device}" has no point "${point}"` });
        else if (!p.writable) ctx.addIssue({ code: 'custom', path: ['rules', i, 'write', 'point'], message: `point "${point}" of "${device}" is not writable (set writable: true)` });
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
