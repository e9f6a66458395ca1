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
];
