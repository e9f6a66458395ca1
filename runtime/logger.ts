import { pino, type Logger as PinoLogger } from 'pino';
import { REDACTED, redactText, redactUrl, type Logger } from './contracts/index.js';
import type { ProblemLog } from './problems.js';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/**
 * Field names whose value is a secret wherever they appear in a log object. The code never logs
 * them on purpose (docs/security.md, "Secrets and files"); this is the net under a mistake, such as
 * an options object or request headers logged whole.
 */
const SECRET_FIELDS = [
  'password',
  'passwordHash',
  'passwd',
  'token',
  'accessToken',
  'refreshToken',
  'gatewayToken',
  'targetTokens',
  'secret',
  'clientSecret',
  'credentialSecret',
  'key',
  'privateKey',
  'apiKey',
  'authorization',
  'cookie',
  '["set-cookie"]',
  'credentials',
];

/** Each name at the top of a log object and up to two levels down (`opts.password`, `req.headers.authorization`). */
export const REDACT_PATHS: readonly string[] = SECRET_FIELDS.flatMap((f) => {
  const sub = f.startsWith('[') ? f : `.${f}`;
  return [f, `*${sub}`, `*.*${sub}`];
});

/**
 * Structured logs, quiet by default: warnings and errors only, to stderr, unless
 * OUTPOST_LOG_LEVEL says otherwise. `destination` lets the demo keep its screen for the status line.
 *
 * Two nets keep secrets out at every level: pino's `redact` for well-known field names, and a last
 * pass over each serialized line that takes user info and credential query parameters out of any
 * URL, and the credentials out of Authorization header values, wherever they sit (a message, an
 * error text, a child logger's bindings).
 */
export function createLogger(opts: { level?: LogLevel; destination?: string; problems?: ProblemLog } = {}): Logger {
  const level = opts.level ?? (process.env.OUTPOST_LOG_LEVEL as LogLevel | undefined) ?? 'warn';
  const out = opts.destination ? pino.destination({ dest: opts.destination, sync: false, mkdir: true }) : pino.destination(2);
  // Warnings and errors also go to the recent problems of the status page, whatever the level.
  const dest = opts.problems
    ? pino.multistream([...(level === 'silent' ? [] : [{ stream: out, level }]), { stream: opts.problems, level: 'warn' as const }])
    : out;
  const log: PinoLogger = pino(
    {
      level: opts.problems && (level === 'silent' || pino.levels.values[level]! > 40) ? 'warn' : level,
      base: { pid: process.pid },
      redact: { paths: [...REDACT_PATHS], censor: REDACTED },
      // HTTP handlers log request targets (`/path?access_token=…`), which the pass over the line
      // cannot tell from other text: a `url` field is always read as one.
      serializers: { url: (v: unknown) => (typeof v === 'string' ? redactUrl(v) : v) },
      hooks: { streamWrite: redactText },
    },
    dest,
  );
  return log;
}
