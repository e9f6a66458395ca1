import { z } from 'zod';
import { clientTlsSchema, LOCAL_PREFIX } from '../contracts/index.js';

/** A topic filter as config writes it (wildcards allowed in filters, `#` last). */
const filter = z
  .string()
  .min(1)
  .max(256)
  .refine((f) => !f.includes('\u0000'), 'NUL is not allowed in a topic')
  .refine((f) => f.split('/').every((level, i, all) => (level === '#' ? i === all.length - 1 : level === '+' || !/[+#]/.test(level))), 'wildcards take a whole level, and "#" only the last');

/** What an identity (or an id pattern of identities) may do beyond its own topics. */
const grant = z.strictObject({
  /** Identity ids or patterns (`panel-*`); `anonymous` for clients without credentials (broker.anonymous). */
  identities: z.array(z.string().min(1).max(128).regex(/^[A-Za-z0-9_.*?-]+$/, 'an identity id or pattern')).min(1),
  publish: z.array(filter).default([]),
  subscribe: z.array(filter).default([]),
});

const rate = z.strictObject({ perSecond: z.number().positive().max(1_000_000), burst: z.number().int().min(1).max(1_000_000) });

/** Limits of the broker's listeners; every one has a safe default (docs/security.md). */
const limitsSchema = z.strictObject({
  /**
   * Payload bytes of PUBLISHes being validated and committed at once, across every connection;
   * beyond it a publish waits its turn (its PUBACK comes later). Bounds memory under a flood.
   */
  maxIntakeBytes: z.number().int().min(64 * 1024).max(1024 * 1024 * 1024).default(4 * 1024 * 1024),
  /** A packet announcing more is refused before its body is read (the connection is closed). */
  maxPacketBytes: z.number().int().min(1024).max(256 * 1024 * 1024).default(64 * 1024),
  maxTopicBytes: z.number().int().min(16).max(65535).default(256),
  maxTopicLevels: z.number().int().min(2).max(64).default(12),
  maxClientIdBytes: z.number().int().min(8).max(256).default(64),
  /** A retained message over this size is refused; so is a new retained topic past `maxRetained`. */
  maxRetainedBytes: z.number().int().min(64).max(16 * 1024 * 1024).default(8 * 1024),
  maxRetained: z.number().int().min(1).max(1_000_000).default(10_000),
  /** Connections per listener, and per source address (devices behind one NAT share one). */
  maxConnections: z.number().int().min(1).max(100_000).default(10_000),
  maxConnectionsPerAddress: z.number().int().min(1).max(100_000).default(256),
  maxSubscriptionsPerClient: z.number().int().min(1).max(10_000).default(64),
  /** The server's keepalive is kept within [min, max] seconds whatever a device asks (0 = never is raised to max). */
  minKeepaliveS: z.number().int().min(1).max(3600).default(10),
  maxKeepaliveS: z.number().int().min(1).max(65535).default(1200),
  /** New connections accepted per second across the listener (first contact after a power cut is staggered). */
  connectRate: rate.default({ perSecond: 200, burst: 400 }),
  /** Publishes per second per identity: beyond it the broker withholds PUBACKs (the device slows down). */
  publishRate: rate.default({ perSecond: 1000, burst: 2000 }),
});

/**
 * An external site broker (Mosquitto, EMQX, …) that child devices publish to instead of the
 * embedded one: the gateway is one of its MQTT clients, subscribed at QoS 1 in a persistent session
 * (docs/operations.md, "External site broker"). Its ACLs and limits replace `identities`, `grants`
 * and `limits`.
 */
export const externalBrokerSchema = z.strictObject({
  url: z.string().regex(/^(mqtt|mqtts|tcp|ssl):\/\/[^\s/]+(:\d+)?\/?$/, 'expected an mqtt://, mqtts://, tcp:// or ssl:// URL of the site broker (host and port, no path)'),
  /**
   * Fixed, so that the broker keeps the gateway's session (its subscriptions and the messages not yet
   * acknowledged) across restarts; default `outpost-{gateway.id}-intake`. Two gateways must never share one.
   */
  clientId: z.string().min(1).max(64).regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, "_", "." and "-"').optional(),
  username: z.string().min(1).max(256).optional(),
  password: z.string().min(1).max(1024).optional(),
  /** For mqtts:// and ssl://: PEM files as cloud.tls (`ca`; `cert` + `key` for mutual TLS), `servername`. */
  tls: clientTlsSchema.optional(),
  keepaliveS: z.number().int().min(5).max(3600).default(30),
  /** Reconnects: exponential backoff with full jitter, capped. */
  backoff: z
    .strictObject({ initialMs: z.number().int().min(10).max(600_000).default(500), maxMs: z.number().int().min(100).max(600_000).default(30_000) })
    .refine((b) => b.initialMs <= b.maxMs, { message: 'initialMs must not exceed maxMs', path: ['initialMs'] })
    .default({ initialMs: 500, maxMs: 30_000 }),
});

/**
 * What the gateway subscribes to on an external site broker: what children publish that it takes
 * (docs/topics.md): telemetry, births and wills, reported twin state and call answers.
 */
export const SITE_BROKER_FILTERS: readonly string[] = [
  `${LOCAL_PREFIX}/+/telemetry`,
  `${LOCAL_PREFIX}/+/status`,
  `${LOCAL_PREFIX}/+/reported`,
  `${LOCAL_PREFIX}/+/response/+`,
];

/** Fields of the embedded broker's listeners: meaningless beside `external` (the site broker listens and authorizes). */
const LISTENER_FIELDS = ['host', 'port', 'tls', 'anonymous', 'grants', 'limits'] as const;

const brokerObject = z
  .strictObject({
    host: z.string().min(1).default('127.0.0.1'),
    /** Plain MQTT (TCP); null: no plain listener (TLS only). */
    port: z.number().int().min(0).max(65535).nullable().default(1883),
    /** MQTT over TLS; with `requireCertificate` every client presents a certificate (mTLS). */
    tls: z
      .strictObject({
        host: z.string().min(1).optional(),
        port: z.number().int().min(0).max(65535).default(8883),
        /** Server certificate and key (PEM); default: self-signed, made on first start beside the store. */
        certFile: z.string().min(1).optional(),
        keyFile: z.string().min(1).optional(),
        /** CAs whose client certificates identify devices (besides enrollment groups with caFile). */
        clientCaFile: z.string().min(1).optional(),
        requireCertificate: z.boolean().default(false),
      })
      .refine((t) => (t.certFile === undefined) === (t.keyFile === undefined), { message: 'give both certFile and keyFile, or neither', path: ['certFile'] })
      .optional(),
    /**
     * Clients without credentials, from loopback addresses only; they get only what `grants` give
     * `anonymous`. For development on one machine; off by default.
     */
    anonymous: z.boolean().default(false),
    /** Accept telemetry from authenticated devices that are not listed under `devices`. */
    acceptUnknownDevices: z.boolean().default(false),
    grants: z.array(grant).default([]),
    limits: limitsSchema.default(limitsSchema.parse({})),
    /** Children publish to this site broker instead of the embedded one (no embedded listener then). */
    external: externalBrokerSchema.optional(),
  })
  .refine((b) => b.port !== null || b.tls !== undefined, { message: 'no listener: give broker.port or broker.tls', path: ['port'] })
  .refine((b) => b.limits.minKeepaliveS <= b.limits.maxKeepaliveS, { message: 'minKeepaliveS must not exceed maxKeepaliveS', path: ['limits', 'minKeepaliveS'] });

export const brokerSchema = z.preprocess((raw: z.input<typeof brokerObject>, ctx) => {
  // Checked on the input: the listener fields have defaults, so the parsed config cannot tell
  // whether the file set them. A field that would be silently ignored is refused instead.
  if (raw !== null && typeof raw === 'object' && raw.external !== undefined) {
    for (const field of LISTENER_FIELDS) {
      if (field in raw) {
        ctx.issues.push({
          code: 'custom',
          path: [field],
          input: raw,
          message: `${field} configures the embedded broker, which does not run with broker.external: the site broker's own listener, ACLs and limits apply (remove ${field})`,
        });
      }
    }
  }
  return raw;
}, brokerObject);

export type ExternalBrokerConfig = z.output<typeof externalBrokerSchema>;
export type BrokerConfig = z.output<typeof brokerSchema>;
export type BrokerLimits = BrokerConfig['limits'];
export type BrokerGrant = BrokerConfig['grants'][number];
