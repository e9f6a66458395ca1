import { withStatementCache, type Db, type Migration, type Store, type VersionedLeaf } from '../contracts/index.js';
import type { Configuration } from './configurations.js';
import type { Scalar, TwinDoc } from './twin-doc.js';

/** The registry's tables: inventory, twins, configurations, and what waits to go up. */
export const deviceMigrations: readonly Migration[] = [
  {
    version: 1,
    sql: `CREATE TABLE devices (
      id TEXT PRIMARY KEY,
      protocol TEXT NOT NULL,
      source TEXT NOT NULL,
      attributes TEXT NOT NULL,
      labels TEXT NOT NULL,
      tags TEXT NOT NULL,
      first_seen INTEGER NOT NULL,
      last_seen INTEGER NOT NULL,
      online INTEGER NOT NULL
    );
    CREATE TABLE twin_direct (
      device TEXT NOT NULL,
      path TEXT NOT NULL,
      value TEXT NOT NULL,
      version INTEGER NOT NULL,
      PRIMARY KEY (device, path)
    ) WITHOUT ROWID;
    CREATE TABLE twin_reported (
      device TEXT NOT NULL,
      path TEXT NOT NULL,
      value TEXT NOT NULL,
      at INTEGER NOT NULL,
      PRIMARY KEY (device, path)
    ) WITHOUT ROWID;
    CREATE TABLE twin_state (
      device TEXT PRIMARY KEY,
      version INTEGER NOT NULL,
      doc TEXT NOT NULL,
      sources TEXT NOT NULL,
      applied_version INTEGER NOT NULL,
      rejected TEXT NOT NULL
    );
    CREATE TABLE configurations (
      id TEXT PRIMARY KEY,
      origin TEXT NOT NULL,
      version INTEGER NOT NULL,
      body TEXT NOT NULL
    );
    CREATE TABLE twin_outgoing (
      key TEXT PRIMARY KEY,
      device TEXT NOT NULL,
      point TEXT NOT NULL,
      value TEXT NOT NULL,
      at INTEGER NOT NULL,
      rev INTEGER NOT NULL
    );`,
  },
];

export interface DeviceRow {
  readonly id: string;
  readonly protocol: string;
  /** How it entered the inventory: `config`, `birth` or `telemetry`. */
  readonly source: string;
  readonly attributes: Record<string, string | number | boolean>;
  readonly labels: Record<string, string>;
  readonly tags: Record<string, string | number | boolean>;
  readonly firstSeen: number;
  readonly lastSeen: number;
  readonly online: boolean;
}

export interface TwinState {
  /** Version of the effective desired document, raised on every change of it. */
  readonly version: number;
  readonly doc: TwinDoc;
  readonly sources: Record<string, string>;
  /** The desired version the device said it applied. */
  readonly appliedVersion: number;
  /** Properties the device refused (path -> reason), or bound writes that failed. */
  readonly rejected: Record<string, string>;
}

export interface OutgoingRecord {
  readonly key: string;
  readonly device: string;
  readonly point: string;
  /** JSON text. */
  readonly value: string;
  readonly at: number;
  readonly rev: number;
}

interface RawDevice {
  id: string;
  protocol: string;
  source: string;
  attributes: string;
  labels: string;
  tags: string;
  first_seen: number;
  last_seen: number;
  online: number;
}

const toDevice = (r: RawDevice): DeviceRow => ({
  id: r.id,
  protocol: r.protocol,
  source: r.source,
  attributes: JSON.parse(r.attributes) as DeviceRow['attributes'],
  labels: JSON.parse(r.labels) as DeviceRow['labels'],
  tags: JSON.parse(r.tags) as DeviceRow['tags'],
  firstSeen: r.first_seen,
  lastSeen: r.last_seen,
  online: r.online === 1,
});

/**
 * The registry's rows in the gateway's store. Every write is its own small transaction (or part
 * of the caller's, via `transaction`); nothing here is on the reading hot path.
 */
export class DeviceStore {
  readonly db: Db;
  private rev: number;

  constructor(store: Store) {
    store.migrate('devices', deviceMigrations);
    // Births, wills and first readings of a site's children each write a row: compiling the
    // statement cost more than running it (a connection storm of 10,000 children).
    this.db = withStatementCache(store.db);
    this.rev = (this.db.prepare('SELECT coalesce(max(rev), 0) AS r FROM twin_outgoing').get() as { r: number }).r;
  }

  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  devices(): DeviceRow[] {
    return (this.db.prepare('SELECT * FROM devices ORDER BY id').all() as RawDevice[]).map(toDevice);
  }

  device(id: string): DeviceRow | undefined {
    const r = this.db.prepare('SELECT * FROM devices WHERE id = ?').get(id) as RawDevice | undefined;
    return r && toDevice(r);
  }

  putDevice(d: DeviceRow): void {
    this.db
      .prepare(
        `INSERT INTO devices (id, protocol, source, attributes, labels, tags, first_seen, last_seen, online) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET protocol = excluded.protocol, source = excluded.source, attributes = excluded.attributes, labels = excluded.labels,
           tags = excluded.tags, last_seen = excluded.last_seen, online = excluded.online`,
      )
      .run(d.id, d.protocol, d.source, JSON.stringify(d.attributes), JSON.stringify(d.labels), JSON.stringify(d.tags), d.firstSeen, d.lastSeen, d.online ? 1 : 0);
  }

  /** Forgets a device: its inventory entry, twin and waiting records (not the records it had sent). */
  removeDevice(id: string): void {
    for (const sql of [
      'DELETE FROM devices WHERE id = ?',
      'DELETE FROM twin_direct WHERE device = ?',
      'DELETE FROM twin_reported WHERE device = ?',
      'DELETE FROM twin_state WHERE device = ?',
      'DELETE FROM twin_outgoing WHERE device = ?',
    ]) this.db.prepare(sql).run(id);
  }

  touch(id: string, lastSeen: number): void {
    this.db.prepare('UPDATE devices SET last_seen = max(last_seen, ?) WHERE id = ?').run(lastSeen, id);
  }

  direct(device: string): Map<string, VersionedLeaf> {
    const rows = this.db.prepare('SELECT path, value, version FROM twin_direct WHERE device = ?').all(device) as { path: string; value: string; version: number }[];
    return new Map(rows.map((r) => [r.path, { value: JSON.parse(r.value) as Scalar, version: r.version }]));
  }

  putDirect(device: string, path: string, leaf: VersionedLeaf): void {
    this.db
      .prepare('INSERT INTO twin_direct (device, path, value, version) VALUES (?, ?, ?, ?) ON CONFLICT (device, path) DO UPDATE SET value = excluded.value, version = excluded.version')
      .run(device, path, JSON.stringify(leaf.value), leaf.version);
  }

  reported(device: string): Map<string, { value: Scalar; at: number }> {
    const rows = this.db.prepare('SELECT path, value, at FROM twin_reported WHERE device = ?').all(device) as { path: string; value: string; at: number }[];
    return new Map(rows.map((r) => [r.path, { value: JSON.parse(r.value) as Scalar, at: r.at }]));
  }

  /** Applies reported leaf changes (null deletes the leaf and what lies under it). */
  putReported(device: string, leaves: ReadonlyMap<string, Scalar>, at: number): void {
    const del = this.db.prepare("DELETE FROM twin_reported WHERE device = ? AND (path = ? OR path LIKE ? || '.%')");
    const put = this.db.prepare('INSERT INTO twin_reported (device, path, value, at) VALUES (?, ?, ?, ?) ON CONFLICT (device, path) DO UPDATE SET value = excluded.value, at = excluded.at');
    for (const [path, value] of leaves) {
      del.run(device, path, path);
      if (value !== null) {
        // A leaf replaces whatever object was at its path, and an object replaces a leaf on its way.
        const parts = path.split('.');
        for (let i = 1; i < parts.length; i++) this.db.prepare('DELETE FROM twin_reported WHERE device = ? AND path = ?').run(device, parts.slice(0, i).join('.'));
        put.run(device, path, JSON.stringify(value), at);
      }
    }
  }

  state(device: string): TwinState | undefined {
    const r = this.db.prepare('SELECT version, doc, sources, applied_version, rejected FROM twin_state WHERE device = ?').get(device) as
      | { version: number; doc: string; sources: string; applied_version: number; rejected: string }
      | undefined;
    return (
      r && {
        version: r.version,
        doc: JSON.parse(r.doc) as TwinDoc,
        sources: JSON.parse(r.sources) as Record<string, string>,
        appliedVersion: r.applied_version,
        rejected: JSON.parse(r.rejected) as Record<string, string>,
      }
    );
  }

  states(): Map<string, TwinState> {
    const rows = this.db.prepare('SELECT device, version, doc, sources, applied_version, rejected FROM twin_state').all() as {
      device: string;
      version: number;
      doc: string;
      sources: string;
      applied_version: number;
      rejected: string;
    }[];
    return new Map(
      rows.map((r) => [
        r.device,
        { version: r.version, doc: JSON.parse(r.doc) as TwinDoc, sources: JSON.parse(r.sources) as Record<string, string>, appliedVersion: r.applied_version, rejected: JSON.parse(r.rejected) as Record<string, string> },
      ]),
    );
  }

  putState(device: string, s: TwinState): void {
    this.db
      .prepare(
        `INSERT INTO twin_state (device, version, doc, sources, applied_version, rejected) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (device) DO UPDATE SET version = excluded.version, doc = excluded.doc, sources = excluded.sources, applied_version = excluded.applied_version, rejected = excluded.rejected`,
      )
      .run(device, s.version, JSON.stringify(s.doc), JSON.stringify(s.sources), s.appliedVersion, JSON.stringify(s.rejected));
  }

  configurations(): Configuration[] {
    return (this.db.prepare('SELECT body FROM configurations ORDER BY id').all() as { body: string }[]).map((r) => JSON.parse(r.body) as Configuration);
  }

  putConfiguration(c: Configuration): void {
    this.db
      .prepare('INSERT INTO configurations (id, origin, version, body) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET origin = excluded.origin, version = excluded.version, body = excluded.body')
      .run(c.id, c.origin, c.version, JSON.stringify(c));
  }

  deleteConfiguration(id: string): void {
    this.db.prepare('DELETE FROM configurations WHERE id = ?').run(id);
  }

  /**
   * Records `value` to go up under `key`, replacing what waited there (coalescing); `merge`, when
   * given, combines the waiting value with the new one instead.
   */
  queue(key: string, device: string, point: string, value: string, at: number, merge?: (waiting: string, next: string) => string): void {
    const waiting = merge && (this.db.prepare('SELECT value FROM twin_outgoing WHERE key = ?').get(key) as { value: string } | undefined);
    const text = waiting && merge ? merge(waiting.value, value) : value;
    this.db
      .prepare('INSERT INTO twin_outgoing (key, device, point, value, at, rev) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, at = excluded.at, rev = excluded.rev')
      .run(key, device, point, text, at, ++this.rev);
  }

  outgoing(limit: number): OutgoingRecord[] {
    return this.db.prepare('SELECT key, device, point, value, at, rev FROM twin_outgoing ORDER BY rev LIMIT ?').all(limit) as OutgoingRecord[];
  }

  outgoingCount(): number {
    return (this.db.prepare('SELECT count(*) AS n FROM twin_outgoing').get() as { n: number }).n;
  }

  /** Removes records handed to the outbox, unless they changed since (a newer value waits). */
  taken(records: readonly OutgoingRecord[]): void {
    const del = this.db.prepare('DELETE FROM twin_outgoing WHERE key = ? AND rev = ?');
    this.transaction(() => {
      for (const r of records) del.run(r.key, r.rev);
    });
  }
}
