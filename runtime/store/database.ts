import Database from 'better-sqlite3';
import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { restrictToOwner } from '../security/secret-files.js';

import type { Db, Migration, Store } from '../contracts/index.js';

export type { Db, Migration } from '../contracts/index.js';

export interface OpenOptions {
  readonly path: string;
  /** NORMAL: a committed transaction survives a process crash. FULL: it also survives power loss. */
  readonly synchronous: 'normal' | 'full';
  /** Hard cap of the database file: beyond it writes fail as on a full disk (SQLITE_FULL). */
  readonly maxBytes?: number | undefined;
}

/**
 * Opens the gateway's single SQLite database in WAL mode. Components own their tables and bring
 * their migrations; the runtime applies them in order, each in its own transaction.
 */
export function openDatabase(opts: OpenOptions): Db {
  const onDisk = opts.path !== ':memory:' && opts.path !== '';
  let db: Db;
  try {
    if (onDisk) createOwnerOnly(opts.path);
    db = new Database(opts.path);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(`storage.path ${opts.path}: cannot open the database (${why}): it must be a file in a directory the gateway may write`, { cause: err });
  }
  db.pragma('journal_mode = WAL');
  // A -wal or -shm left by an older gateway keeps the mode it was created with; SQLite reuses it.
  if (onDisk) for (const f of databaseFiles(opts.path).slice(1)) if (existsSync(f)) restrictToOwner(f);
  db.pragma(`synchronous = ${opts.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
  db.pragma('foreign_keys = ON');
  // Keep the WAL from growing without bound between automatic checkpoints.
  db.pragma('journal_size_limit = 67108864');
  db.pragma('busy_timeout = 5000');
  if (opts.maxBytes !== undefined) {
    const pageSize = db.pragma('page_size', { simple: true }) as number;
    db.pragma(`max_page_count = ${Math.max(16, Math.floor(opts.maxBytes / pageSize))}`);
  }
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    applied_at INTEGER NOT NULL,
    PRIMARY KEY (component, version)
  )`);
  return db;
}

/** The database file and the two SQLite keeps beside it in WAL mode (https://sqlite.org/wal.html). */
export function databaseFiles(path: string): readonly string[] {
  return [path, `${path}-wal`, `${path}-shm`];
}

/**
 * The store holds the site's readings, dead letters and OTA releases: owner-only. Its directory is made
 * 0700 when Outpost creates it (an existing one is the operator's choice), and the file 0600 before
 * SQLite opens it: SQLite creates the -wal and -shm files with the mode of the database file
 * (os_unix.c, findCreateFileMode), so they are owner-only from their first byte.
 */
function createOwnerOnly(path: string): void {
  // mkdir's mode is masked by the umask, which only takes bits away: 0700 stays at most 0700.
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  // An empty file is an empty database to SQLite.
  if (!existsSync(path)) closeSync(openSync(path, 'a', 0o600));
  restrictToOwner(path);
}

/** The store as components get it. */
export function storeOf(db: Db): Store {
  return { db, migrate: (component, migrations) => void migrate(db, component, migrations) };
}

export function migrate(db: Db, component: string, migrations: readonly Migration[]): number {
  const applied = new Set(
    (db.prepare('SELECT version FROM schema_migrations WHERE component = ?').all(component) as { version: number }[]).map(
      (r) => r.version,
    ),
  );
  const sorted = [...migrations].sort((a, b) => a.version - b.version);
  const record = db.prepare('INSERT INTO schema_migrations (component, version, applied_at) VALUES (?, ?, ?)');
  let count = 0;
  for (const m of sorted) {
    if (applied.has(m.version)) continue;
    db.transaction(() => {
      db.exec(m.sql);
      record.run(component, m.version, Date.now());
    })();
    count++;
  }
  const newest = sorted.at(-1)?.version ?? 0;
  const known = Math.max(0, ...applied);
  if (known > newest) {
    throw new Error(
      `database schema of "${component}" is version ${known}, newer than this gateway knows (${newest}); refusing to run an older gateway on it`,
    );
  }
  return count;
}

/**
 * Moves what the WAL holds into the database and truncates it, so the WAL stays small whatever
 * the write rate (SQLite's automatic checkpoints never shrink the file). Returns WAL pages that
 * could not be checkpointed yet (busy), normally 0.
 */
export function checkpoint(db: Db): number {
  const [row] = db.pragma('wal_checkpoint(TRUNCATE)') as { busy: number; log: number; checkpointed: number }[];
  return row ? row.log - row.checkpointed : 0;
}
