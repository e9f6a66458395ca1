import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { z } from 'zod';
import { errorMessage } from '../contracts/index.js';

/** Each option with its flag and the environment variable that stands in for it. */
export const INGEST_OPTIONS = {
  broker: { type: 'string', multiple: true },
  username: { type: 'string' },
  'password-file': { type: 'string' },
  ca: { type: 'string' },
  database: { type: 'string' },
  prefix: { type: 'string' },
  'share-group': { type: 'string' },
  'client-id': { type: 'string' },
  concurrency: { type: 'string' },
  table: { type: 'string' },
  'stats-every': { type: 'string' },
  json: { type: 'boolean', default: false },
} as const;

export const INGEST_USAGE = `usage: outpost cloud-ingest --broker URL [--broker URL…] --database URL [options]

Subscribes to every gateway's uplink telemetry and writes each reading once into PostgreSQL
(docs/operations.md, "Cloud consumer"). Each option can come from the environment instead:
  --broker URL           OUTPOST_INGEST_BROKERS (comma-separated)  mqtt://, mqtts://; several
                         URLs are the nodes of one cluster, tried in turn
  --username NAME        OUTPOST_INGEST_USERNAME
  --password-file FILE   OUTPOST_INGEST_PASSWORD (the password itself)
  --ca FILE              OUTPOST_INGEST_CA       certificate(s) to trust for mqtts://
  --database URL         OUTPOST_INGEST_DATABASE, else DATABASE_URL  postgres://user:pass@host/db
  --prefix P             OUTPOST_INGEST_PREFIX   topic prefix of the gateways (default outpost)
  --share-group G        OUTPOST_INGEST_SHARE_GROUP  subscribe as $share/G/… so that consumers
                         of one group split the load (not for brokers without shared
                         subscriptions, such as RabbitMQ)
  --client-id ID         OUTPOST_INGEST_CLIENT_ID  fixed MQTT client id of the persistent
                         session (default outpost-ingest-HOSTNAME); unique per consumer
  --concurrency N        OUTPOST_INGEST_CONCURRENCY  batches written at once, one MQTT session
                         each (ID-1…ID-N); above 1 needs --share-group (default 1)
  --table NAME           OUTPOST_INGEST_TABLE    (default outpost_readings; created when missing)
  --stats-every S        OUTPOST_INGEST_STATS_EVERY  a line of figures every S seconds, 0 for
                         none (default 10)
  --json                 figures as JSON lines
Exit codes: 0 stopped by SIGTERM/SIGINT after draining; 1 could not start (named); 2 usage.
`;

const brokerUrl = z
  .string()
  .url('expected a URL such as mqtt://host:1883')
  .refine((u) => /^(mqtts?|wss?):\/\//.test(u), 'expected an mqtt://, mqtts://, ws:// or wss:// URL');

export const ingestOptionsSchema = z
  .strictObject({
    brokers: z.array(brokerUrl).min(1, 'give at least one broker (--broker URL or OUTPOST_INGEST_BROKERS)'),
    username: z.string().min(1).optional(),
    password: z.string().optional(),
    ca: z.string().optional(),
    database: z
      .string({ error: 'give the database (--database postgres://… or OUTPOST_INGEST_DATABASE)' })
      .refine((u) => /^postgres(ql)?:\/\//.test(u), 'expected a postgres:// or postgresql:// URL'),
    prefix: z
      .string()
      .min(1)
      .regex(/^[^#+\s]+$/, 'a topic prefix without wildcards or spaces')
      .default('outpost'),
    shareGroup: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'letters, digits, "_", "." and "-", at most 64')
      .optional(),
    clientId: z
      .string()
      .regex(/^[A-Za-z0-9_.:-]{1,60}$/, 'letters, digits, "_", ".", ":" and "-", at most 60')
      .default(() => `outpost-ingest-${hostname().replace(/[^A-Za-z0-9_.:-]/g, '-').slice(0, 45)}`),
    concurrency: z.coerce.number().int().min(1).max(64).default(1),
    table: z
      .string()
      .regex(/^[a-z_][a-z0-9_]{0,40}$/, 'lower-case letters, digits and "_", starting with a letter or "_"')
      .default('outpost_readings'),
    statsEverySeconds: z.coerce.number().min(0).max(86_400).default(10),
    json: z.boolean().default(false),
  })
  .refine((o) => o.concurrency === 1 || o.shareGroup !== undefined, {
    path: ['concurrency'],
    message: 'above 1 needs --share-group: without a shared subscription every session would receive every batch',
  });
export type IngestOptions = z.output<typeof ingestOptionsSchema>;

/** Which flag or environment variable a field of the options came from, for error messages. */
const FIELD_NAMES: Record<string, string> = {
  brokers: '--broker',
  username: '--username',
  password: '--password-file',
  ca: '--ca',
  database: '--database',
  prefix: '--prefix',
  shareGroup: '--share-group',
  clientId: '--client-id',
  concurrency: '--concurrency',
  table: '--table',
  statsEverySeconds: '--stats-every',
};

export class IngestOptionsError extends Error {
  override readonly name = 'IngestOptionsError';
  constructor(readonly problems: readonly string[]) {
    super(problems.join('\n'));
  }
}

type Flags = { [K in keyof typeof INGEST_OPTIONS]?: (typeof INGEST_OPTIONS)[K] extends { multiple: true } ? string[] : (typeof INGEST_OPTIONS)[K]['type'] extends 'boolean' ? boolean : string };

/**
 * The consumer's options from its flags, each falling back to its environment variable; files
 * (password, CA) are read here. Throws IngestOptionsError naming every problem by its flag.
 */
export function resolveIngestOptions(flags: Flags, env: NodeJS.ProcessEnv = process.env): IngestOptions & { caText: string | undefined } {
  const problems: string[] = [];
  const read = (flag: string, file: string | undefined): string | undefined => {
    if (file === undefined) return undefined;
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      problems.push(`${flag}: cannot read ${file}: ${errorMessage(err)}`);
      return undefined;
    }
  };
  const brokers = flags.broker ?? env.OUTPOST_INGEST_BROKERS?.split(',').map((s) => s.trim()).filter((s) => s !== '') ?? [];
  const passwordFile = flags['password-file'];
  const password = passwordFile !== undefined ? read('--password-file', passwordFile)?.replace(/\r?\n$/, '') : env.OUTPOST_INGEST_PASSWORD;
  const caFile = flags.ca ?? env.OUTPOST_INGEST_CA;
  const caText = read('--ca', caFile);
  const raw = {
    brokers,
    username: flags.username ?? env.OUTPOST_INGEST_USERNAME,
    password,
    ca: caFile,
    database: flags.database ?? env.OUTPOST_INGEST_DATABASE ?? env.DATABASE_URL,
    prefix: flags.prefix ?? env.OUTPOST_INGEST_PREFIX,
    shareGroup: flags['share-group'] ?? env.OUTPOST_INGEST_SHARE_GROUP,
    clientId: flags['client-id'] ?? env.OUTPOST_INGEST_CLIENT_ID,
    concurrency: flags.concurrency ?? env.OUTPOST_INGEST_CONCURRENCY,
    table: flags.table ?? env.OUTPOST_INGEST_TABLE,
    statsEverySeconds: flags['stats-every'] ?? env.OUTPOST_INGEST_STATS_EVERY,
    json: flags.json ?? false,
  };
  // An unset environment variable is absent, not an empty value.
  const defined = Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = ingestOptionsSchema.safeParse(defined);
  if (!parsed.success) {
    for (const i of parsed.error.issues) {
      const field = String(i.path[0] ?? '');
      // A URL may carry a password: the problem names the field, never echoes the value.
      problems.push(`${FIELD_NAMES[field] ?? field}${i.path.length > 1 ? `[${String(i.path[1])}]` : ''}: ${i.message}`);
    }
  }
  if (problems.length > 0 || !parsed.success) throw new IngestOptionsError(problems);
  return { ...parsed.data, caText };
}
