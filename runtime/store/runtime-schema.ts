import type { Migration } from './database.js';

export const runtimeMigrations: readonly Migration[] = [
  {
    version: 1,
    sql: `
      CREATE TABLE boots (boot INTEGER PRIMARY KEY AUTOINCREMENT, started_at INTEGER NOT NULL);
      CREATE TABLE rule_state (key TEXT PRIMARY KEY, state TEXT NOT NULL);
      CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    `,
  },
  {
    // Every site config the gateway ran or tried (runtime/deploy/history.ts).
    version: 2,
    sql: `
      CREATE TABLE config_versions (
        version INTEGER PRIMARY KEY AUTOINCREMENT,
        sha256 TEXT NOT NULL,
        source TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        decided_at INTEGER,
        reason TEXT,
        plan TEXT,
        base_file_sha256 TEXT,
        issued_at INTEGER,
        text TEXT NOT NULL
      );
    `,
  },
];
