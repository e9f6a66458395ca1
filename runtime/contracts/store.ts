import type Database from 'better-sqlite3';

/** The gateway's one SQLite database (better-sqlite3), in WAL mode. */
export type Db = Database.Database;

/** One versioned migration of one component's schema. Versions start at 1 and never change. */
export interface Migration {
  readonly version: number;
  readonly sql: string;
}

/**
 * The local store as components see it: one database for the whole gateway, in which each
 * component owns its tables and brings their migrations. Writes that must be atomic with ingest
 * go through the ingest pipeline's transaction (ReadingSink), not through here.
 */
export interface Store {
  readonly db: Db;
  /** Applies `migrations` of `component` not applied yet, in order, each in its own transaction. */
  migrate(component: string, migrations: readonly Migration[]): void;
}

/**
 * The same database, whose `prepare` returns one compiled statement per SQL text: for components
 * that run a fixed set of statements on hot paths (compiling one costs more than running it).
 * Only for static SQL: the cache holds every distinct text it is given.
 */
export function withStatementCache(db: Db): Db {
  const cache = new Map<string, Database.Statement>();
  return new Proxy(db, {
    get(target, prop) {
      if (prop === 'prepare') {
        return (sql: string): Database.Statement => {
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
