import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);

type Done = (err: Error | null, token: string | false, refresh?: null, params?: { expires_in: number } | null) => void;
interface NodeRedUser {
  readonly permissions: string | string[];
  readonly token?: string;
}

/**
 * Node-RED's editor login (`@node-red/editor-api/lib/auth/strategies.js`, passwordTokenExchange)
 * refuses every login of a user name, right password or not, once six attempts for that name were
 * made in ten minutes from anywhere; each refused attempt counts too. Anyone who can reach /red
 * can so keep the admin out for as long as they like. The gateway limits failed logins per source
 * address instead (runtime/http/login-limiter.ts); this puts in Node-RED's place the same exchange
 * without its name-wide lock: check the password, check the scope, make a session token.
 *
 * It must run before Node-RED's editor API is loaded (its auth module takes the function when
 * loaded); returns false when that already happened and nothing was replaced.
 */
let replaced = false;

export function replaceNodeRedLoginLock(): boolean {
  if (replaced) return true;
  // Resolved from node-red's own package: the editor API is its dependency, not ours.
  const nr = createRequire(require.resolve('node-red'));
  const strategiesPath = nr.resolve('@node-red/editor-api/lib/auth/strategies.js');
  if (require.cache[join(dirname(strategiesPath), 'index.js')] !== undefined) return false;
  const strategies = nr(strategiesPath) as { passwordTokenExchange: unknown };
  const auth = (name: string): unknown => nr(join(dirname(strategiesPath), name));
  const users = auth('users.js') as { authenticate(username: string, password: string): Promise<NodeRedUser | null | undefined> };
  const tokens = auth('tokens.js') as { create(username: string, client: string, scope: string | string[]): Promise<{ accessToken: string; expires_in: number }> };
  const permissions = auth('permissions.js') as { hasPermission(held: string | string[], scope: string | string[]): boolean };
  strategies.passwordTokenExchange = (client: { id: string }, username: string, password: string, scope: string | string[], done: Done): void => {
    users.authenticate(username, password).then(
      async (user) => {
        if (!user) return done(null, false);
        const wanted = scope === '' ? user.permissions : scope;
        if (!permissions.hasPermission(user.permissions, wanted)) return done(null, false);
        if (user.token) return done(null, user.token, null, null);
        const made = await tokens.create(username, client.id, wanted);
        return done(null, made.accessToken, null, { expires_in: made.expires_in });
      },
      (err: unknown) => done(err instanceof Error ? err : new Error(String(err)), false),
    ).catch((err: unknown) => done(err instanceof Error ? err : new Error(String(err)), false));
  };
  replaced = true;
  return true;
}
