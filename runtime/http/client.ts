import { readFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { dirname, join } from 'node:path';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { loadConfig } from '../config/load.js';
import type { SiteConfig } from '../config/schema.js';

/** How a client reaches the gateway's API: its URL, the token it presents, the certificate it trusts. */
export interface GatewayConnection {
  readonly url: string;
  readonly token?: string | undefined;
  /** PEM the server's certificate must chain to (the gateway's own self-signed one: pinned). */
  readonly ca?: string | undefined;
}

/** The CLI options every verb that talks to the gateway takes (parseArgs shape). */
export const CONNECTION_OPTIONS = {
  url: { type: 'string' },
  config: { type: 'string', short: 'c' },
  'token-file': { type: 'string' },
  ca: { type: 'string' },
} as const;

export interface ConnectionArgs {
  readonly url?: string | undefined;
  readonly config?: string | undefined;
  readonly 'token-file'?: string | undefined;
  readonly ca?: string | undefined;
}

/** The API's URL and certificate file as a site config gives them. */
export function apiEndpoint(config: SiteConfig): { url: string; certFile?: string } {
  const { host, port, tls } = config.http;
  const reach = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  const h = reach.includes(':') ? `[${reach}]` : reach;
  if (tls === false) return { url: `http://${h}:${port}` };
  const stateDir = dirname(config.storage.path);
  return { url: `https://${h}:${port}`, certFile: tls.certFile ?? join(stateDir, 'http.crt') };
}

/**
 * Where and how to connect: `--url` or OUTPOST_URL (else the http section of `--config` or
 * OUTPOST_CONFIG, else https://127.0.0.1:8080),
 * the token from `--token-file` or OUTPOST_TOKEN, and the certificate to trust from `--ca` or
 * OUTPOST_CA, else the gateway's own from its state directory when `--config` is given. Without
 * any, the system's CAs verify the server as usual: verification is never turned off.
 */
export async function resolveConnection(args: ConnectionArgs, env: NodeJS.ProcessEnv = process.env): Promise<GatewayConnection> {
  let url = 'https://127.0.0.1:8080';
  let caFile: string | undefined;
  const config = args.config ?? env.OUTPOST_CONFIG;
  if (config !== undefined && config !== '') {
    const endpoint = apiEndpoint(await loadConfig(config));
    url = endpoint.url;
    caFile = endpoint.certFile;
  }
  const explicit = args.url ?? env.OUTPOST_URL;
  if (explicit !== undefined && explicit !== '') url = explicit;
  const caPath = args.ca ?? env.OUTPOST_CA ?? caFile;
  const tokenFile = args['token-file'];
  const token = tokenFile !== undefined ? (await readFile(tokenFile, 'utf8')).trim() : env.OUTPOST_TOKEN?.trim();
  return {
    url: url.replace(/\/$/, ''),
    token: token === '' ? undefined : token,
    ca: caPath === undefined || !url.startsWith('https:') ? undefined : await readFile(caPath, 'utf8'),
  };
}

/** The fingerprint of a PEM holding exactly one certificate, else undefined (a CA bundle). */
function singleFingerprint(pem: string): string | undefined {
  if ((pem.match(/-----BEGIN CERTIFICATE-----/g) ?? []).length !== 1) return undefined;
  try {
    return new X509Certificate(pem).fingerprint256;
  } catch {
    return undefined;
  }
}

export type FetchLike = (input: string | URL, init?: RequestInit) => Promise<Response>;

/**
 * A `fetch` to the gateway that presents `token` (unless the request sets Authorization itself)
 * and trusts `ca`: the server's certificate must chain to it, and when `ca` is one certificate
 * (the gateway's self-signed one) presenting exactly that certificate is enough whatever name the
 * gateway was reached by: it is pinned. Bodies are strings; answers are standard Responses.
 */
export function gatewayFetch(conn: Pick<GatewayConnection, 'token' | 'ca'>, opts: { localAddress?: string } = {}): FetchLike {
  const pinned = conn.ca === undefined ? undefined : singleFingerprint(conn.ca);
  return async (input, init = {}) => {
    const url = new URL(String(input));
    const headers = new Headers(init.headers);
    if (conn.token !== undefined && !headers.has('authorization')) headers.set('authorization', `Bearer ${conn.token}`);
    const body = init.body;
    if (body !== undefined && body !== null && typeof body !== 'string') throw new TypeError('gatewayFetch: the body must be a string');
    const outgoing: Record<string, string> = {};
    headers.forEach((v, k) => (outgoing[k] = v));
    if (typeof body === 'string') outgoing['content-length'] = String(Buffer.byteLength(body));
    const options = {
      method: init.method ?? 'GET',
      headers: outgoing,
      ...(init.signal ? { signal: init.signal } : {}),
      ...(opts.localAddress !== undefined ? { localAddress: opts.localAddress } : {}),
    };
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req =
        url.protocol === 'https:'
          ? httpsRequest(url, {
              ...options,
              ...(conn.ca !== undefined ? { ca: conn.ca } : {}),
              checkServerIdentity: (host: string, cert: PeerCertificate) => (pinned !== undefined && cert.fingerprint256 === pinned ? undefined : checkServerIdentity(host, cert)),
            })
          : httpRequest(url, options);
      req.once('response', resolve);
      req.once('error', reject);
      req.end(body ?? undefined);
    });
    const chunks: Buffer[] = [];
    for await (const chunk of res) chunks.push(chunk as Buffer);
    const status = res.statusCode ?? 0;
    const responseHeaders = new Headers();
    for (const [k, v] of Object.entries(res.headers)) {
      if (Array.isArray(v)) for (const x of v) responseHeaders.append(k, x);
      else if (v !== undefined) responseHeaders.set(k, v);
    }
    // A Response with status 204/304 (or a HEAD answer) must have no body.
    const empty = status === 204 || status === 304 || options.method === 'HEAD';
    return new Response(empty ? null : Buffer.concat(chunks), { status, statusText: res.statusMessage ?? '', headers: responseHeaders });
  };
}
