import { pino, type Logger as PinoLogger } from 'pino';
import type { Logger } from './contracts/index.js';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'silent';

/**
 * Structured logs, quiet by default: warnings and errors only, to stderr, unless
 * OUTPOST_LOG_LEVEL says otherwise. `destination` lets the demo keep its screen for the status line.
 */
export function createLogger(opts: { level?: LogLevel; destination?: string } = {}): Logger {
  const level = opts.level ?? (process.env.OUTPOST_LOG_LEVEL as LogLevel | undefined) ?? 'warn';
  const dest = opts.destination ? pino.destination({ dest: opts.destination, sync: false, mkdir: true }) : pino.destination(2);
  const log: PinoLogger = pino({ level, base: { pid: process.pid } }, dest);
  return log;
}
