/** The outbox's tables, migrated in order; versions never change once released. */
export const outboxMigrations = [
  {
    version: 1,
    sql: `CREATE TABLE outbox (
      rowid INTEGER PRIMARY KEY,
      body TEXT NOT NULL,
      bytes INTEGER NOT NULL
    );`,
  },
  {
    // Row ids must never be reused: the uplink's cursor and the acknowledgement of a batch refer
    // to row ids, and a plain INTEGER PRIMARY KEY starts again at 1 once the table is empty.
    version: 2,
    sql: `CREATE TABLE outbox_v2 (
      rowid INTEGER PRIMARY KEY AUTOINCREMENT,
      body TEXT NOT NULL,
      bytes INTEGER NOT NULL
    );
    INSERT INTO outbox_v2 (rowid, body, bytes) SELECT rowid, body, bytes FROM outbox;
    DROP TABLE outbox;
    ALTER TABLE outbox_v2 RENAME TO outbox;`,
  },
  {
    // Streams, with their accounting kept in the same transactions as the rows it counts, and the
    // dead-letter table for readings the cloud refused.
    version: 3,
    sql: `ALTER TABLE outbox ADD COLUMN stream TEXT NOT NULL DEFAULT 'telemetry';
    ALTER TABLE outbox ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX outbox_by_stream ON outbox (stream, rowid);
    CREATE TABLE outbox_counters (
      stream TEXT NOT NULL,
      name TEXT NOT NULL,
      value INTEGER NOT NULL,
      PRIMARY KEY (stream, name)
    );
    INSERT INTO outbox_counters (stream, name, value) SELECT stream, 'produced', count(*) FROM outbox GROUP BY stream;
    CREATE TABLE dead_letters (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      stream TEXT NOT NULL,
      body TEXT NOT NULL,
      bytes INTEGER NOT NULL,
      reason TEXT NOT NULL,
      failed_at INTEGER NOT NULL
    );`,
  },
  {
    // Readings stored in chunks: one row holds up to CHUNK_ROWS consecutive readings of one stream
    // (a JSON array of their envelopes) with sequence numbers first..last. One insert per chunk
    // instead of per reading is what makes the durable append cheap. outbox_meta keeps the next
    // sequence number, so numbers are never reused once the outbox has emptied.
    version: 4,
    sql: `CREATE TABLE outbox_chunks (
      rowid INTEGER PRIMARY KEY,
      stream TEXT NOT NULL,
      last_seq INTEGER NOT NULL,
      created_at INTEGER NOT NULL,
      bytes INTEGER NOT NULL,
      bodies TEXT NOT NULL
    );
    CREATE INDEX outbox_chunks_by_stream ON outbox_chunks (stream, last_seq);
    CREATE TABLE outbox_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO outbox_chunks (rowid, stream, last_seq, created_at, bytes, bodies)
      SELECT rowid, stream, rowid, created_at, bytes, '[' || body || ']' FROM outbox;
    INSERT INTO outbox_meta (key, value)
      SELECT 'next_seq', coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0) + 1;
    DROP TABLE outbox;`,
  },
] as const;
