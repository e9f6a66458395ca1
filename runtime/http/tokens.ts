import type { Db, Migration } from '../contracts/index.js';
import { hashToken, newToken, SCOPES, type ApiTokenConfig, type Scope } from './scopes.js';

/**
 * API tokens made with `outpost tokens create`: only their SHA-256 is stored, with a name, scopes,
 * when made, when last used (coarse) and when revoked. The CLI writes this table while the
 * gateway may be running (SQLite WAL: one writer at a time, readers never blocked), and the
 * gateway reads it on every request, so a revocation holds from the next request on.
 */
export const tokenMigrations: readonly Migration[] = [
  {
    version: 1,
    sql: `
      CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        scopes TEXT NOT NULL,
        sha256 TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER,
        revoked_at INTEGER
      );
      -- A name is one live token; revoked ones stay listed (who had access, until when).
      CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;
    `,
  },
];

export const TOKENS_COMPONENT = 'http-tokens';

/** "Last used" is written at most once per this interval per token: a read-mostly table, not a write per request. */
export const LAST_USED_RESOLUTION_MS = 60 * 60_000;

export interface TokenInfo {
  readonly name: string;
  readonly scopes: readonly Scope[];
  /** `store`: made by `outpost tokens create`; `config`: declared under http.tokens. */
  readonly source: 'store' | 'config';
  readonly createdAt?: number | undefined;
  readonly lastUsedAt?: number | undefined;
  readonly revokedAt?: number | undefined;
}

/** Why a presented token was not accepted. */
export type TokenRefusal = 'unknown-token' | 'revoked-token';

export class TokenNameTaken extends Error {
  override readonly name = 'TokenNameTaken';
}

interface Row {
  id: number;
  name: string;
  scopes: string;
  created_at: number;
  last_used_at: number | null;
  revoked_at: number | null;
}

function parseScopes(text: string): Scope[] {
  return text.split(',').filter((s): s is Scope => (SCOPES as readonly string[]).includes(s));
}

/** The tokens the API accepts: those declared in the config, and those in the store's table. */
export class TokenStore {
  private readonly declared: ReadonlyMap<string, ApiTokenConfig>;

  /** `db` must have `tokenMigrations` applied (Store.migrate(TOKENS_COMPONENT, tokenMigrations)). */
  constructor(
    private readonly db: Db,
    declared: readonly ApiTokenConfig[] = [],
  ) {
    this.declared = new Map(declared.map((t) => [t.sha256, t]));
  }

  /** Makes a token; returns it (the only time it exists outside the caller's hands). */
  create(name: string, scopes: readonly Scope[], now: number): string {
    if ([...this.declared.values()].some((t) => t.name === name)) throw new TokenNameTaken(`a token named "${name}" is declared in the site config (http.tokens)`);
    const token = newToken();
    try {
      this.db.prepare('INSERT INTO api_tokens (name, scopes, sha256, created_at) VALUES (?, ?, ?, ?)').run(name, scopes.join(','), hashToken(token), now);
    } catch (err) {
      if ((err as { code?: unknown }).code === 'SQLITE_CONSTRAINT_UNIQUE') throw new TokenNameTaken(`a token named "${name}" exists: revoke it first or choose another name`, { cause: err });
      throw err;
    }
    return token;
  }

  /** Revokes the live token `name`; false when there is none. */
  revoke(name: string, now: number): boolean {
    return this.db.prepare('UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL').run(now, name).changes > 0;
  }

  /** Whether `name` is a config-declared token (revoked by removing it from the config). */
  isDeclared(name: string): boolean {
    return [...this.declared.values()].some((t) => t.name === name);
  }

  list(): TokenInfo[] {
    const rows = this.db.prepare('SELECT id, name, scopes, created_at, last_used_at, revoked_at FROM api_tokens ORDER BY id').all() as Row[];
    return [
      ...[...this.declared.values()].map((t): TokenInfo => ({ name: t.name, scopes: t.scopes, source: 'config' })),
      ...rows.map(
        (r): TokenInfo => ({
          name: r.name,
          scopes: parseScopes(r.scopes),
          source: 'store',
          createdAt: r.created_at,
          lastUsedAt: r.last_used_at ?? undefined,
          revokedAt: r.revoked_at ?? undefined,
        }),
      ),
    ];
  }

  /** The token a request presented: its name and scopes, or why it is refused. Notes its use (coarsely). */
  verify(token: string, now: number): { name: string; scopes: readonly Scope[] } | TokenRefusal {
    const hash = hashToken(token);
    const declared = this.declared.get(hash);
    if (declared) return { name: declared.name, scopes: declared.scopes };
    const row = this.db.prepare('SELECT id, name, scopes, created_at, last_used_at, revoked_at FROM api_tokens WHERE sha256 = ?').get(hash) as Row | undefined;
    if (!row) return 'unknown-token';
    if (row.revoked_at !== null) return 'revoked-token';
    if (row.last_used_at === null || now - row.last_used_at >= LAST_USED_RESOLUTION_MS) {
      try {
        this.db.prepare('UPDATE api_tokens SET last_used_at = ? WHERE id = ?').run(now, row.id);
      } catch {
        // Best effort: a full disk (or a busy writer) must not refuse a valid token.
      }
    }
    return { name: row.name, scopes: parseScopes(row.scopes) };
  }
}
