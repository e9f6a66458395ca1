import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { outboxMigrations, SqliteOutbox } from '../../cloud-bridge/outbox.js';
import { migrate, openDatabase, type Db } from '../../runtime/store/database.js';
import { runtimeMigrations } from '../../runtime/store/runtime-schema.js';
import { outboxContract, type OutboxFactory, type OutboxStore } from './outbox-suite.js';

/** The gateway's store as the outbox part opens it: the runtime's tables, then the outbox's. */
function openStore(path: string, synchronous: 'normal' | 'full'): Db {
  const db = openDatabase({ path, synchronous });
  migrate(db, 'runtime', runtimeMigrations);
  migrate(db, 'outbox', outboxMigrations);
  return db;
}

/** SqliteOutbox on `path`, or on a database file of its own in a fresh directory. */
function sqliteStore(synchronous: 'normal' | 'full', inMemory: boolean): OutboxStore {
  const dir = inMemory ? undefined : mkdtempSync(join(tmpdir(), 'outpost-outbox-contract-'));
  let db: Db | undefined;
  let opened = false;
  const current = (): Db => {
    if (!db) throw new Error('the store is closed');
    return db;
  };
  return {
    open(setup) {
      if (!db) {
        // An in-memory database is gone once closed: opening it again would be a new, empty store.
        if (opened && !dir) throw new Error('an in-memory store cannot be reopened');
        db = openStore(dir ? join(dir, 'outbox.db') : ':memory:', synchronous);
        opened = true;
      }
      return new SqliteOutbox(db, setup.quotaBytes, setup.metrics, setup.streams);
    },
    transaction(fn) {
      current().transaction(fn)();
    },
    close() {
      db?.close();
      db = undefined;
    },
    dispose() {
      this.close();
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

const sqlite = (synchronous: 'normal' | 'full', inMemory = false): OutboxFactory => ({
  reopens: !inMemory,
  create: () => sqliteStore(synchronous, inMemory),
});

outboxContract('SQLite file, synchronous=normal', sqlite('normal'));
outboxContract('SQLite file, synchronous=full', sqlite('full'));
outboxContract('SQLite in memory', sqlite('normal', true));
