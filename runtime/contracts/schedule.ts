import { lazyModule } from './lazy-module.js';

const cron = lazyModule<typeof import('node-cron').default>('node-cron');

/**
 * Why `expression` is not a valid node-cron expression (five fields, or six with seconds first),
 * or undefined when it is: for config and manifest checks that name what is wrong.
 */
export function cronProblem(expression: string): string | undefined {
  const v = cron().validateDetailed(expression);
  return v.valid ? undefined : v.errors.map((e) => `${e.field}: ${e.message}`).join('; ');
}
