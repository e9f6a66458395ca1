import { ConfigError, parseConfigText } from '../../runtime/config/load.js';
import type { Logger } from '../../runtime/contracts/index.js';

/** A logger that drops everything, for components under test. */
export const silentLogger: Logger = {
  error: () => undefined,
  warn: () => undefined,
  info: () => undefined,
  debug: () => undefined,
  child: () => silentLogger,
};

/** The problems a site config text is refused with (none when it is valid). */
export function configProblems(text: string): string[] {
  try {
    parseConfigText(text, 'site.yaml');
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  return [];
}

/** The one manual clock: tests step time with it (runtime/contracts/clock.ts). */
export { ManualClock } from '../../runtime/contracts/index.js';
