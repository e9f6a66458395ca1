import { createHash } from 'node:crypto';
import type { Db } from '../contracts/index.js';

/** Where a config version came from. */
export type ConfigSource = 'file' | 'api' | 'cloud' | 'rollback' | 'sighup';

/**
 * - `pending`: being applied, its health not decided yet (a gateway that stops now starts on the
 *   last active version again);
 * - `active`: the version the gateway runs (one at a time);
 * - `superseded`: ran, then replaced by a newer one;
 * - `failed`: applied and failed its health checks (or could not be applied): rolled back.
 */
export type ConfigStatus = 'pending' | 'active' | 'superseded' | 'failed';

export interface ConfigVersion {
  readonly version: number;
  readonly sha256: string;
  readonly source: ConfigSource;
  readonly status: ConfigStatus;
  readonly createdAt: number;
  readonly decidedAt?: number;
  /** Why it failed, or what it rolled back to. */
  readonly reason?: string;
  /** What applying it did (runtime/deploy/plan.ts). */
  readonly plan?: unknown;
  /** The config file's hash when the version was deployed over it (a later edit of the file wins over it). */
  readonly baseFileSha256?: string;
  /** A cloud-sent config's issue time (a replayed older one is refused). */
  readonly issuedAt?: number;
}

interface Row {
  version: number;
  sha256: string;
  source: ConfigSource;
  status: ConfigStatus;
  created_at: number;
  decided_at: number | null;
  reason: string | null;
  plan: string | null;
  base_file_sha256: string | null;
  issued_at: number | null;
}

/** Config versions kept in the store; older ones are forgotten. */
export const KEEP = 200;

export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

const COLUMNS = 'version, sha256, source, status, created_at, decided_at, reason, plan, base_file_sha256, issued_at';

function fromRow(r: Row): ConfigVersion {
  return {
    version: r.version,
    sha256: r.sha256,
    source: r.source,
    status: r.status,
    createdAt: r.created_at,
    ...(r.decided_at !== null ? { decidedAt: r.decided_at } : {}),
    ...(r.reason !== null ? { reason: r.reason } : {}),
    ...(r.plan !== null ? { plan: JSON.parse(r.plan) as unknown } : {}),
    ...(r.base_file_sha256 !== null ? { baseFileSha256: r.base_file_sha256 } : {}),
    ...(r.issued_at !== null ? { issuedAt: r.issued_at } : {}),
  };
}

/**
 * The site config's versions in the store (table config_versions): every config the gateway ran
 * or tried, its text, hash, where it came from and how it went. Versions are never rewritten but
 * for their status; a rollback is a new version with the old text.
 */
export class ConfigHistory {
  constructor(private readonly db: () => Db) {}

  list(limit = 50): ConfigVersion[] {
    return (this.db().prepare(`SELECT ${COLUMNS} FROM config_versions ORDER BY version DESC LIMIT ?`).all(limit) as Row[]).map(fromRow);
  }

  get(version: number): ConfigVersion | undefined {
    const r = this.db().prepare(`SELECT ${COLUMNS} FROM config_versions WHERE version = ?`).get(version) as Row | undefined;
    return r && fromRow(r);
  }

  text(version: number): string | undefined {
    return (this.db().prepare('SELECT text FROM config_versions WHERE version = ?').get(version) as { text: string } | undefined)?.text;
  }

  /** The version the gateway runs. */
  active(): ConfigVersion | undefined {
    const r = this.db().prepare(`SELECT ${COLUMNS} FROM config_versions WHERE status = 'active' ORDER BY version DESC LIMIT 1`).get() as Row | undefined;
    return r && fromRow(r);
  }

  /** The newest cloud-sent version's issue time (a cloud config must be newer). */
  lastIssuedAt(): number {
    return (this.db().prepare("SELECT MAX(issued_at) AS t FROM config_versions WHERE source = 'cloud'").get() as { t: number | null }).t ?? 0;
  }

  /** A new version in `status` (`active` supersedes the one active before). */
  add(v: { text: string; source: ConfigSource; status: 'pending' | 'active'; now: number; baseFileSha256?: string | undefined; issuedAt?: number | undefined; plan?: unknown }): number {
    const db = this.db();
    return db.transaction(() => {
      if (v.status === 'active') db.prepare("UPDATE config_versions SET status = 'superseded', decided_at = ? WHERE status = 'active'").run(v.now);
      const info = db
        .prepare('INSERT INTO config_versions (sha256, source, status, created_at, decided_at, plan, base_file_sha256, issued_at, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)')
        .run(sha256(v.text), v.source, v.status, v.now, v.status === 'active' ? v.now : null, v.plan === undefined ? null : JSON.stringify(v.plan), v.baseFileSha256 ?? null, v.issuedAt ?? null, v.text);
      // Bounded: the newest KEEP versions stay (and the active one, however old).
      db.prepare("DELETE FROM config_versions WHERE version <= ? AND status <> 'active'").run(Number(info.lastInsertRowid) - KEEP);
      return Number(info.lastInsertRowid);
    })();
  }

  /** A pending version passed its health checks: it is the active one now. */
  activate(version: number, now: number, plan?: unknown): void {
    const db = this.db();
    db.transaction(() => {
      db.prepare("UPDATE config_versions SET status = 'superseded', decided_at = ? WHERE status = 'active' AND version <> ?").run(now, version);
      db.prepare("UPDATE config_versions SET status = 'active', decided_at = ?, plan = COALESCE(?, plan) WHERE version = ?").run(now, plan === undefined ? null : JSON.stringify(plan), version);
    })();
  }

  fail(version: number, now: number, reason: string): void {
    this.db().prepare("UPDATE config_versions SET status = 'failed', decided_at = ?, reason = ? WHERE version = ?").run(now, reason, version);
  }

  /** Versions left pending by a gateway that stopped (or was killed) during their health checks. */
  failInterrupted(now: number): number[] {
    const rows = this.db().prepare("SELECT version FROM config_versions WHERE status = 'pending'").all() as { version: number }[];
    for (const r of rows) this.fail(r.version, now, 'the gateway stopped before its health checks passed; the last good version runs');
    return rows.map((r) => r.version);
  }
}
