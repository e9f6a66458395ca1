import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadConfig } from './config/load.js';
import { errorMessage } from './contracts/index.js';
import { hashToken, newToken, SCOPES, tokenNameSchema, type Scope } from './http/scopes.js';
import { TokenNameTaken, TokenStore, TOKENS_COMPONENT, tokenMigrations } from './http/tokens.js';
import { migrate, openDatabase } from './store/database.js';

const USAGE = `usage:
  outpost tokens create --config FILE --name NAME --scope read|operate|admin
  outpost tokens list --config FILE [--json]
  outpost tokens revoke NAME --config FILE
`;

/**
 * `outpost tokens create|list|revoke`: the API tokens in the gateway's store, opened directly (the
 * gateway may be running: SQLite in WAL mode takes the CLI's writes beside it, and the gateway
 * reads the table on every request, so a revocation holds from the next request, no restart).
 * Run it as the gateway's user: files the store makes must stay the gateway's.
 */
export async function tokensCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { config: { type: 'string', short: 'c' }, name: { type: 'string' }, scope: { type: 'string', multiple: true }, json: { type: 'boolean', default: false } },
  });
  const [verb, arg] = positionals;
  if (!values.config || (verb !== 'create' && verb !== 'list' && verb !== 'revoke')) {
    process.stderr.write(USAGE);
    return 2;
  }
  const config = await loadConfig(values.config);
  const db = openDatabase({ path: config.storage.path, synchronous: config.storage.synchronous });
  try {
    migrate(db, TOKENS_COMPONENT, tokenMigrations);
    const store = new TokenStore(db, config.http.tokens);
    if (verb === 'create') {
      const name = tokenNameSchema.safeParse(values.name);
      const scopes = (values.scope ?? []).flatMap((s) => s.split(','));
      const bad = scopes.filter((s) => !(SCOPES as readonly string[]).includes(s));
      if (!name.success || scopes.length === 0 || bad.length > 0) {
        process.stderr.write(`${!name.success ? `--name: ${name.error.issues[0]?.message ?? 'invalid'}\n` : ''}${scopes.length === 0 || bad.length > 0 ? `--scope: expected read, operate or admin${bad.length ? `, got ${bad.join(', ')}` : ''}\n` : ''}${USAGE}`);
        return 2;
      }
      try {
        const token = store.create(name.data, scopes as Scope[], Date.now());
        process.stdout.write(`${token}\n`);
        process.stderr.write(`token "${name.data}" (${scopes.join(', ')}) created; it is shown only now (the gateway keeps its hash)\n`);
        return 0;
      } catch (err) {
        if (err instanceof TokenNameTaken) {
          process.stderr.write(`${err.message}\n`);
          return 1;
        }
        throw err;
      }
    }
    if (verb === 'list') {
      const list = store.list();
      if (values.json) process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
      else {
        const day = (t: number | undefined): string => (t === undefined ? '-' : new Date(t).toISOString().slice(0, 16).replace('T', ' '));
        for (const t of list) {
          const state = t.revokedAt !== undefined ? `revoked ${day(t.revokedAt)}` : 'live';
          process.stdout.write(`${t.name}\t${t.scopes.join(',')}\t${t.source}\t${state}\tcreated ${day(t.createdAt)}\tlast used ${day(t.lastUsedAt)}\n`);
        }
      }
      return 0;
    }
    if (!arg) {
      process.stderr.write(USAGE);
      return 2;
    }
    if (store.isDeclared(arg)) {
      process.stderr.write(`token "${arg}" is declared in ${values.config} (http.tokens): remove it there and restart\n`);
      return 1;
    }
    if (!store.revoke(arg, Date.now())) {
      process.stderr.write(`no live token named "${arg}"\n`);
      return 1;
    }
    process.stdout.write(`token "${arg}" revoked\n`);
    return 0;
  } finally {
    db.close();
  }
}

/**
 * `outpost hash-token`: a new token and the SHA-256 to declare under http.tokens; with `--stdin`,
 * the hash of a token read from standard input (never from the command line, which other users see
 * in the process list). The same as `printf %s "$TOKEN" | sha256sum`.
 */
export function hashTokenCommand(args: string[]): number {
  const { values } = parseArgs({ args, options: { stdin: { type: 'boolean', default: false } } });
  if (values.stdin) {
    let text: string;
    try {
      text = readFileSync(0, 'utf8').trim();
    } catch (err) {
      process.stderr.write(`cannot read standard input: ${errorMessage(err)}\n`);
      return 1;
    }
    process.stdout.write(`${hashToken(text)}\n`);
    return 0;
  }
  const token = newToken();
  process.stdout.write(`token:  ${token}\nsha256: ${hashToken(token)}\n`);
  return 0;
}
