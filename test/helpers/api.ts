import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gatewayFetch, type FetchLike } from '../../runtime/http/client.js';
import { hashToken, type Scope } from '../../runtime/http/scopes.js';

/**
 * Fixed API tokens for tests, one per scope, declared in the site config by their hashes
 * (`http: { ..., tokens: TEST_API_TOKENS }`); tests never create them through the CLI unless that
 * is what they test.
 */
export const TEST_TOKENS: Readonly<Record<Scope, string>> = {
  read: 'opt_test-read-0000000000000000000000000000000000',
  operate: 'opt_test-operate-000000000000000000000000000000000',
  admin: 'opt_test-admin-00000000000000000000000000000000000',
};

/** The `http.tokens` entries of TEST_TOKENS. */
export const TEST_API_TOKENS = (Object.entries(TEST_TOKENS) as Array<[Scope, string]>).map(([scope, token]) => ({ name: `test-${scope}`, scopes: [scope], sha256: hashToken(token) }));

export interface GatewayApi {
  /** `https://127.0.0.1:{port}` */
  readonly base: string;
  /** The gateway's self-signed certificate (PEM), as made in its state directory. */
  readonly cert: string;
  /** fetch(`${base}/…`) with the token and the gateway's certificate pinned. */
  readonly fetch: FetchLike;
  /** The same with another token (or none: undefined). */
  as(token: string | undefined): FetchLike;
}

/**
 * The local API of a gateway started on `port` with its store in `stateDir`: HTTPS, the
 * certificate read from the state directory (as `outpost status --config` does), `token`
 * (default: the admin test token) presented on every request.
 */
export function gatewayApi(port: number, stateDir: string, token: string | undefined = TEST_TOKENS.admin): GatewayApi {
  const cert = readFileSync(join(stateDir, 'http.crt'), 'utf8');
  return {
    base: `https://127.0.0.1:${port}`,
    cert,
    fetch: gatewayFetch({ ca: cert, token }),
    as: (other) => gatewayFetch({ ca: cert, token: other }),
  };
}

/** A JSON request body and its content type, as every state-changing API request needs. */
export function json(body: unknown, method = 'POST'): RequestInit {
  return { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
}
