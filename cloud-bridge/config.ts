import { z } from 'zod';
import { clientTlsSchema, cronProblem, durationMsSchema, idSchema } from '../runtime/contracts/index.js';
import { OVERFLOW_NAMES } from './overflow/index.js';

/** The site config's outbox streams and cloud link (docs/config.md). */
export const streamSchema = z.strictObject({
  name: idSchema,
  /** 0 is the highest priority: drained first, dropped last when the storage quota is reached. */
  priority: z.number().int().min(0).max(9).default(5),
  /** This stream's byte budget; default: the whole storage quota. */
  quotaBytes: z.number().int().min(4096).optional(),
  /** Readings older than this are expired (counted) instead of sent. */
  ttlMs: durationMsSchema.optional(),
  /** What happens when the stream is over its budget: a policy of cloud-bridge/overflow/. */
  overflow: z.enum(OVERFLOW_NAMES).default('drop-oldest'),
});

const brokerUrlSchema = z.string().regex(/^(mqtt|mqtts|tcp|ssl):\/\/[^\s]+$/, 'expected an mqtt://, mqtts://, tcp:// or ssl:// URL');

/** The cloud section's fields; `cloudSchema` adds the rule that exactly one of url and urls is given. */
const cloudFields = z.strictObject({
  /** The cloud broker. */
  url: brokerUrlSchema.optional(),
  /**
   * Instead of `url`: the nodes of a clustered cloud broker, in order of preference. Every
   * connection attempt after a drop starts at the first and moves down the list on failure;
   * after a round where none answered, the backoff applies (docs/config.md).
   */
  urls: z.array(brokerUrlSchema).min(1).max(16).optional(),
  clientId: idSchema.optional(),
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
        durationMs: durationMsSchema.min(1000).max(7 * 86_400_000),
      }),
    )
    .default([]),
  /**
   * TLS for mqtts:// and ssl:// URLs: `ca` (PEM file of the CA that signed the broker's
   * certificate; default: the system's), `cert` and `key` (PEM files; mutual TLS),
   * `servername` (SNI / name to verify, when it differs from the URL's host).
   */
  tls: clientTlsSchema.optional(),
  /** MQTT protocol: 4 (3.1.1) or 5; with 5 the broker can refuse a single message by reason code. */
  protocolVersion: z.union([z.literal(4), z.literal(5)]).default(4),
  /**
   * Times a stream's oldest batch may fail (refused, or the connection dropped with it in
   * flight) before it is halved; a single reading that fails this often is dead-lettered.
   */
  maxAttempts: z.number().int().min(2).max(1000).default(8),
  /**
   * Batches in flight with no acknowledgement for this long (a broker that drops a message
   * without a word, a stalled connection): the connection is closed and they count as failed.
   * Raise it on links so slow that a batch takes longer to transmit.
   */
  ackTimeoutMs: durationMsSchema.min(1000).max(600_000).default(20_000),
  /** Readings per uplink message. */
  batchSize: z.number().int().min(1).max(10000).default(500),
  /** Uplink messages awaiting PUBACK at once. */
  maxInFlight: z.number().int().min(1).max(1000).default(8),
  keepaliveS: z.number().int().min(5).max(3600).default(30),
  backoff: z
    .strictObject({ initialMs: durationMsSchema.default(500), maxMs: durationMsSchema.default(30000) })
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
  /**
   * Uplink payload layout: `columnar` (the readings in delta-coded columns, a fraction of the
   * bytes on a metered link) or `json` (the batch as JSON text, as consumers written before the
   * columnar kinds expect it). Both decode to the same batch (docs/topics.md).
   */
  encoding: z.enum(['columnar', 'json']).default('columnar'),
  /**
   * Uplink payload compression: `brotli`, `deflate` or `none`. Default: brotli for columnar
   * payloads, deflate (zlib) for JSON, which is what a consumer of JSON batches always read.
   */
  compression: z.enum(['brotli', 'deflate', 'none']).optional(),
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
});

export const cloudSchema = cloudFields
  .superRefine((c, ctx) => {
    if (c.url !== undefined && c.urls !== undefined) ctx.addIssue({ code: 'custom', path: ['urls'], message: 'give either url or urls, not both' });
    if (c.url === undefined && c.urls === undefined) {
      ctx.addIssue({ code: 'custom', path: ['url'], message: 'expected the cloud broker: url (one broker) or urls (the nodes of a cluster, in order of preference)' });
    }
    if (c.urls !== undefined && new Set(c.urls).size !== c.urls.length) ctx.addIssue({ code: 'custom', path: ['urls'], message: 'lists the same URL twice' });
  })
  .transform((c) => ({ ...c, compression: c.compression ?? (c.encoding === 'columnar' ? ('brotli' as const) : ('deflate' as const)) }));

/** The cloud broker URLs in order of preference: `urls`, or `url` alone. */
export function cloudUrls(c: Pick<CloudConfig, 'url' | 'urls'>): string[] {
  return c.urls ? [...c.urls] : c.url !== undefined ? [c.url] : [];
}

export type CloudConfig = z.output<typeof cloudSchema>;
export type StreamConfigEntry = z.output<typeof streamSchema>;
