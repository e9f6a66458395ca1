import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/**
 * A library loaded the first time it is used, not when the gateway starts: for libraries that only
 * some configurations need (the JSONata parser for rule expressions, node-cron for schedules), so
 * a gateway without them does not hold their code in memory. The library must ship CommonJS (or be
 * loadable by `require`); the type comes from `typeof import('…')`.
 */
export function lazyModule<T>(id: string): () => T {
  let loaded: T | undefined;
  return () => (loaded ??= require(id) as T);
}
