import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { outboxMigrations, SqliteOutbox } from '../../cloud-bridge/outbox.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { migrate, openDatabase, type Db } from '../../runtime/store/database.js';
import { runtimeMigrations } from '../../runtime/store/runtime-schema.js';
import { outboxContractSuite, type OutboxStore } from './outbox-suite.js';

/** The SQLite outbox on a database file (WAL) or in memory, with the gateway's migrations. */
function sqliteStore(where: 'file' | 'memory', synchronous: 'normal' | 'full' = 'normal'): OutboxStore {
  const dir = where === 'file' ? mkdtempSync(join(tmpdir(), 'outpost-outbox-suite-')) : undefined;
  const openDb = (): Db => {
    const db = openDatabase({ path: dir ? join(dir, 'o.db') : ':memory:', synchronous });
    migrate(db, 'runtime', runtimeMigrations);
    migrate(db, 'outbox', outboxMigrations);
    return db;
  };
  let db = openDb();
  return {
    open: (quotaBytes, streams, metrics) => new SqliteOutbox(db, quotaBytes, metrics ?? new PromMetrics(), streams),
    transaction: (fn) => db.transaction(fn)(),
    ...(dir
      ? {
          reopen: () => {
            db.close();
            db = openDb();
          },
        }
      : {}),
    close: () => {
      if (db.open) db.close();
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

outboxContractSuite('SQLite, synchronous normal', () => sqliteStore('file', 'normal'), { reopens: true });
outboxContractSuite('SQLite, synchronous full', () => sqliteStore('file', 'full'), { reopens: true });
outboxContractSuite('SQLite in memory', () => sqliteStore('memory'), { reopens: false });
