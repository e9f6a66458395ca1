import { hostname } from 'node:os';
import { isIP } from 'node:net';
import type { ApiScope, Clock, Logger, Metrics, MountOptions, RequestHandler } from '../contracts/index.js';
import { sendError } from './respond.js';
import { grants, isLoopback } from './scopes.js';
import type { TokenRefusal, TokenStore } from './tokens.js';

/** Why the guard refused a request: the label of `outpost_http_refused_total`. */
export type Refusal = 'host' | 'origin' | 'no-token' | TokenRefusal | 'scope' | 'content-type';

/** The policy of a path: open to all (`/healthz`), guarded by its own login (`/red`), or needing a token. */
export type PathPolicy = { readonly open: true } | MountOptions;

export interface GuardOptions {
  readonly scheme: 'http' | 'https';
  readonly tokens: Pick<TokenStore, 'verify'>;
  /** The policy of a (lower-cased, slash-collapsed) path. */
  readonly policy: (path: string) => PathPolicy;
  /** Host names the API answers to besides IP addresses, loopback names and the machine's name. */
  readonly hosts: readonly string[];
  readonly clock: Clock;
  readonly metrics: Metrics;
  readonly log: Logger;
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
const REALM = 'Bearer realm="outpost"';

/** `host:port`, `[v6]:port` → the host, lower case. */
function hostOf(header: string): string {
  const h = header.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(1, h.indexOf(']') === -1 ? undefined : h.indexOf(']'));
  const colon = h.indexOf(':');
  return colon === -1 ? h : h.slice(0, colon);
}

/**
 * The names a Host header may carry. Any IP literal is accepted: DNS rebinding needs a name that
 * an attacker's DNS first points at their server and then at the gateway; a request whose Host is
 * an address reached that address, and a browser page on another origin never shares it. Names
 * are what is checked: loopback names, the machine's name, the configured ones.
 */
export function hostMatcher(extra: readonly string[]): (host: string) => boolean {
  const own = hostname().toLowerCase();
  const names = new Set([own, own.split('.')[0] ?? own, `${own.split('.')[0] ?? own}.local`, ...extra.map((h) => h.toLowerCase())]);
  return (host) => isIP(host) !== 0 || isLoopback(host) || names.has(host.replace(/\.$/, ''));
}

/**
 * No Access-Control-* header leaves the API: the API and the editor are same-origin only, and a
 * handler that would grant other origins (Node-RED's editor API sends `Access-Control-Allow-Origin: *`
 * on everything, with no setting to stop it) is overruled here.
 */
function withoutCors(res: Parameters<RequestHandler>[1]): void {
  const setHeader = res.setHeader.bind(res);
  res.setHeader = (name: string, value: number | string | readonly string[]) => (/^access-control-/i.test(name) ? res : setHeader(name, value));
}

/**
 * The local API's front door, before every route: the Host header must be one the gateway answers
 * to (DNS rebinding), an Origin header must be the request's own origin (a page elsewhere cannot
 * drive the API through the user's browser), then a bearer token with the route's scope, and a
 * state-changing request must say `Content-Type: application/json`: a form or a no-cors fetch can
 * carry neither that nor an Authorization header, so a browser can be made to send one only after
 * a CORS preflight, which the gateway never grants (it sends no Access-Control-* header at all).
 */
export function apiGuard(opts: GuardOptions): RequestHandler {
  const refused = opts.metrics.counter('outpost_http_refused_total', 'Requests to the local API refused before any route ran', ['reason']);
  const allowedHost = hostMatcher(opts.hosts);
  // A refusal is logged once a minute per reason at most: an attacker cannot flood the log; the
  // counter has every one.
  const lastLogged = new Map<Refusal, number>();
  const refuse = (
    res: Parameters<RequestHandler>[1],
    req: Parameters<RequestHandler>[0],
    reason: Refusal,
    status: number,
    message: string,
    headers: Record<string, string> = {},
    details?: Record<string, unknown>,
  ): void => {
    refused.inc({ reason });
    const now = opts.clock.now();
    if (now - (lastLogged.get(reason) ?? -Infinity) >= 60_000) {
      lastLogged.set(reason, now);
      // Never the token, nor the query string (it may carry one meant for Node-RED).
      opts.log.warn({ reason, method: req.method, path: req.path.slice(0, 200), from: req.socket.remoteAddress }, 'http request refused');
    }
    for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
    sendError(res, status, message, details);
  };

  return (req, res, next) => {
    withoutCors(res);
    const hostHeader = req.headers.host;
    const host = hostHeader === undefined ? '' : hostOf(hostHeader);
    const path = req.path.toLowerCase().replace(/\/{2,}/g, '/');
    const policy = opts.policy(path);
    if ('open' in policy) {
      next();
      return;
    }
    if (!allowedHost(host)) {
      refuse(res, req, 'host', 403, `host "${host.slice(0, 100)}" is not a name this gateway answers to (add it to http.allowedHosts)`);
      return;
    }
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== `${opts.scheme}://${hostHeader?.toLowerCase() ?? ''}`) {
      refuse(res, req, 'origin', 403, `requests from origin ${origin.slice(0, 100)} are not accepted`);
      return;
    }
    if (policy.ownAuth) {
      next();
      return;
    }
    const auth = req.headers.authorization;
    const m = auth === undefined ? null : /^Bearer ([\x21-\x7e]+)$/i.exec(auth.trim());
    if (!m) {
      refuse(res, req, 'no-token', 401, 'this needs an API token: Authorization: Bearer TOKEN (outpost tokens create)', { 'www-authenticate': REALM });
      return;
    }
    const who = opts.tokens.verify(m[1]!, opts.clock.now());
    if (typeof who === 'string') {
      const message = who === 'revoked-token' ? 'the token was revoked' : 'unknown token';
      refuse(res, req, who, 401, message, { 'www-authenticate': `${REALM}, error="invalid_token"` });
      return;
    }
    const needed: ApiScope = policy.scope ?? (SAFE_METHODS.has(req.method) ? 'read' : 'operate');
    if (!grants(who.scopes, needed)) {
      refuse(
        res,
        req,
        'scope',
        403,
        `this needs a token with scope ${needed} (token "${who.name}" has ${who.scopes.join(', ')})`,
        { 'www-authenticate': `${REALM}, error="insufficient_scope", scope="${needed}"` },
        { scope: needed },
      );
      return;
    }
    if (!SAFE_METHODS.has(req.method)) {
      const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
      if (type !== 'application/json') {
        refuse(res, req, 'content-type', 415, 'state-changing requests need Content-Type: application/json');
        return;
      }
    }
    next();
  };
}
