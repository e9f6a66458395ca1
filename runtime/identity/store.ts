import { withStatementCache, type Db, type Store } from '../contracts/index.js';

/**
 * What the gateway remembers about identities across restarts: devices enrolled through a group
 * (first and last contact) and revocations (from the CLI, the API or the cloud; the config's own
 * `identities.revoked` list is read from the config each start).
 */
export class IdentityStore {
  private readonly db: Db;

  constructor(store: Store) {
    store.migrate('identities', [
      {
        version: 1,
        sql: `CREATE TABLE identity_enrollments (id TEXT PRIMARY KEY, method TEXT NOT NULL, first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL) WITHOUT ROWID;
              CREATE TABLE identity_revocations (id TEXT PRIMARY KEY, at INTEGER NOT NULL, source TEXT NOT NULL, reason TEXT) WITHOUT ROWID;`,
      },
    ]);
    // Every connection records a contact: one compiled statement each, not a compile per connect.
    this.db = withStatementCache(store.db);
  }

  /** Records a contact; true when it is the identity's first (an enrollment). */
  seen(id: string, method: string, at: number): boolean {
    const first = this.enrolledAt(id) === undefined;
    this.db.prepare('INSERT INTO identity_enrollments (id, method, first_seen, last_seen) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen').run(id, method, at, at);
    return first;
  }

  enrolledAt(id: string): number | undefined {
    const row = this.db.prepare('SELECT first_seen FROM identity_enrollments WHERE id = ?').get(id) as { first_seen: number } | undefined;
    return row?.first_seen;
  }

  enrolled(): { id: string; method: string; firstSeen: number; lastSeen: number }[] {
    return (this.db.prepare('SELECT id, method, first_seen, last_seen FROM identity_enrollments ORDER BY id').all() as { id: string; method: string; first_seen: number; last_seen: number }[]).map((r) => ({
      id: r.id,
      method: r.method,
      firstSeen: r.first_seen,
      lastSeen: r.last_seen,
    }));
  }

  revoke(id: string, at: number, source: string, reason?: string): void {
    this.db.prepare('INSERT INTO identity_revocations (id, at, source, reason) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO NOTHING').run(id, at, source, reason ?? null);
  }

  /** Lifts a revocation; true when there was one. */
  restore(id: string): boolean {
    return this.db.prepare('DELETE FROM identity_revocations WHERE id = ?').run(id).changes === 1;
  }

  revocations(): { id: string; at: number; source: string; reason: string | null }[] {
    return this.db.prepare('SELECT id, at, source, reason FROM identity_revocations ORDER BY id').all() as { id: string; at: number; source: string; reason: string | null }[];
  }
}
