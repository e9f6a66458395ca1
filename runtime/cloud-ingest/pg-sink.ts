import pg from 'pg';
import type { IngestReading } from './decode.js';

/**
 * The readings table (docs/operations.md, "Cloud consumer"). `id` is the reading id the gateway
 * gave (unique per reading, stable across resends), so the primary key is what makes redelivery
 * harmless: a reading delivered twice is stored once.
 */
export function tableDdl(table: string): string[] {
  const t = pg.escapeIdentifier(table);
  return [
    `CREATE TABLE IF NOT EXISTS ${t} (
      id          text PRIMARY KEY,
      gateway     text NOT NULL,
      device      text NOT NULL,
      point       text NOT NULL,
      value       jsonb,
      quality     text NOT NULL,
      ts          timestamptz NOT NULL,
      seq         bigint NOT NULL,
      rule        text,
      unit        text,
      received_at timestamptz NOT NULL DEFAULT now()
    )`,
    `CREATE INDEX IF NOT EXISTS ${pg.escapeIdentifier(`${table}_device_point_ts`)} ON ${t} (gateway, device, point, ts)`,
  ];
}

/** A database failure that retrying cannot cure: the data itself was refused (SQLSTATE class 22, 23). */
export class RowsRefusedError extends Error {
  override readonly name = 'RowsRefusedError';
}

/**
 * Writes batches of readings into PostgreSQL, one statement (so one transaction) per batch:
 * `INSERT … ON CONFLICT (id) DO NOTHING`. It resolves only once the transaction committed, which
 * is when the consumer may acknowledge the batch to the broker.
 */
export class PgSink {
  private readonly pool: pg.Pool;
  private readonly insert: string;

  constructor(
    databaseUrl: string,
    private readonly table: string,
    opts: { maxConnections: number },
  ) {
    // A lost database connection is an error of the query that used it (and is retried); the
    // pool's own 'error' event would otherwise crash the process.
    this.pool = new pg.Pool({ connectionString: databaseUrl, max: opts.maxConnections, connectionTimeoutMillis: 10_000, idleTimeoutMillis: 30_000 });
    this.pool.on('error', () => undefined);
    const t = pg.escapeIdentifier(table);
    // unnest() turns the column arrays into rows: one round trip per batch, whatever its size.
    this.insert = `INSERT INTO ${t} (id, gateway, device, point, value, quality, ts, seq, rule, unit)
      SELECT r.id, $1, r.device, r.point, r.value, r.quality, to_timestamp(r.ts / 1000.0), r.seq, r.rule, r.unit
      FROM unnest($2::text[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::float8[], $8::int8[], $9::text[], $10::text[])
        AS r(id, device, point, value, quality, ts, seq, rule, unit)
      ON CONFLICT (id) DO NOTHING`;
  }

  /**
   * Creates the table and its index when missing. Several consumers may start at once: an advisory
   * lock makes them take turns, since two concurrent `CREATE TABLE IF NOT EXISTS` can still collide.
   */
  async ensureTable(): Promise<void> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`outpost-cloud-ingest:${this.table}`]);
      for (const ddl of tableDdl(this.table)) await client.query(ddl);
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  /** Stores the readings of one batch; resolves with how many were new (the others were there already). */
  async write(gateway: string, readings: readonly IngestReading[]): Promise<number> {
    if (readings.length === 0) return 0;
    try {
      const res = await this.pool.query(this.insert, [
        gateway,
        readings.map((r) => r.id),
        readings.map((r) => r.device),
        readings.map((r) => r.point),
        // A reading without a value (bad quality) is SQL NULL; the others are JSON scalars.
        readings.map((r) => (r.value === null ? null : JSON.stringify(r.value))),
        readings.map((r) => r.quality),
        readings.map((r) => r.ts),
        readings.map((r) => r.seq),
        readings.map((r) => r.rule ?? null),
        readings.map((r) => r.unit ?? null),
      ]);
      return res.rowCount ?? 0;
    } catch (err) {
      if (err instanceof pg.DatabaseError && /^2[23]/.test(err.code ?? '')) {
        throw new RowsRefusedError(`the database refused the batch (SQLSTATE ${err.code}): ${err.message}`, { cause: err });
      }
      throw err;
    }
  }

  /** Rows in the table (for the figures at the end of a run). */
  async count(): Promise<number> {
    const res = await this.pool.query<{ n: string }>(`SELECT count(*) AS n FROM ${pg.escapeIdentifier(this.table)}`);
    return Number(res.rows[0]?.n ?? 0);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
