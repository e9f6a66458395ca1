import type { Statement } from 'better-sqlite3';
import type { Db } from './database.js';

/**
 * The same database, whose `prepare` returns one compiled statement per SQL text: for components
 * that run a fixed set of statements on hot paths (compiling one costs more than running it).
 * Only for static SQL: the cache holds every distinct text it is given.
 */
export function withStatementCache(db: Db): Db {
  const cache = new Map<string, Statement>();
  return new Proxy(db, {
    get(target, prop) {
      if (prop === 'prepare') {
        return (sql: string): Statement => {
          let s = cache.get(sql);
          if (!s) {
            s = target.prepare(sql);
            cache.set(sql, s);
          }
          return s;
        };
      }
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}
