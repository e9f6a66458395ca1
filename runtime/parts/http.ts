import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { z } from 'zod';
import { HttpError, type Clock, type Component, type ComponentContext, type HttpListener } from '../contracts/index.js';
import { coreRoutes } from '../http/api.js';
import { apiGuard } from '../http/guard.js';
import { HttpLayer } from '../http/http-layer.js';
import { SCOPES, tokenNameSchema } from '../http/scopes.js';
import { TokenNameTaken, TokenStore, TOKENS_COMPONENT, tokenMigrations } from '../http/tokens.js';
import { sendJson } from '../http/respond.js';
import { serverCertificate } from '../security/certificates.js';
import type { SiteConfig } from '../config/schema.js';
import type { StoreComponent } from './store.js';
import type { Part } from './site.js';

/** The file names of the self-signed API certificate in the state directory (`http.crt`, `http.key`). */
export const API_CERT_NAME = 'http';

/** Where the gateway keeps its own files: beside the store (the self-signed certificate, the gateway secret). */
export function stateDir(config: SiteConfig): string {
  return dirname(config.storage.path);
}

/** The names the self-signed certificate is made for: loopback, the machine's name, the listen address, http.allowedHosts. */
function certificateHosts(config: SiteConfig): string[] {
  const { host, allowedHosts } = config.http;
  const wildcard = host === '0.0.0.0' || host === '::';
  return [...new Set(['localhost', '127.0.0.1', '::1', hostname(), ...(wildcard ? [] : [host]), ...allowedHosts])];
}

/** The local HTTP API listener (TLS, tokens), and the HTTP layer every other part registers its routes with. */
class HttpComponent implements Component {
  readonly name = 'http';
  private listener: HttpListener | undefined;
  private port = 0;
  private tokenStore: TokenStore | undefined;
  private fingerprint: string | undefined;

  constructor(
    readonly layer: HttpLayer,
    private readonly opts: { config: SiteConfig; store: StoreComponent; clock: Clock; status: () => Record<string, unknown>; metrics: () => Promise<string> },
  ) {}

  get tokens(): TokenStore {
    if (!this.tokenStore) throw new Error('the http part has not started');
    return this.tokenStore;
  }

  async start(ctx: ComponentContext): Promise<void> {
    const { config, store } = this.opts;
    store.migrate(TOKENS_COMPONENT, tokenMigrations);
    this.tokenStore = new TokenStore(store.db, config.http.tokens);
    let tls: { cert: string; key: string } | undefined;
    if (config.http.tls !== false) {
      const made = await serverCertificate({ ...config.http.tls, dir: stateDir(config), name: API_CERT_NAME, hosts: certificateHosts(config) });
      tls = made;
      this.fingerprint = made.fingerprint;
      if (made.created) ctx.log.info({ certFile: made.certFile, sha256: made.fingerprint }, 'made a self-signed certificate for the API; clients pin it');
    }
    const guard = apiGuard({
      scheme: tls ? 'https' : 'http',
      tokens: this.tokenStore,
      policy: (path) => this.layer.policy(path),
      hosts: config.http.allowedHosts,
      clock: this.opts.clock,
      metrics: ctx.metrics,
      log: ctx.log,
    });
    this.listener = await this.layer.listenApi(config.http.host, config.http.port, coreRoutes(this.layer, this.opts), { ...(tls ? { tls } : {}), guard });
    this.port = this.listener.port;
  }

  async stop(): Promise<void> {
    await this.layer.close();
  }

  status(): Record<string, unknown> {
    return { ports: { http: this.port }, api: { scheme: this.fingerprint ? 'https' : 'http', ...(this.fingerprint ? { certificateSha256: this.fingerprint } : {}) } };
  }
}

const createTokenBody = z.strictObject({ name: tokenNameSchema, scopes: z.array(z.enum(SCOPES)).min(1) });

export const httpPart: Part = {
  name: 'http',
  build(site) {
    const { log, metrics, status, clock } = site.opts;
    const layer = new HttpLayer(log.child({ component: 'http' }));
    site.provide('http', layer);
    const component = new HttpComponent(layer, { config: site.config, store: site.get('store'), clock, status, metrics: () => metrics.text() });
    layer.open('/healthz');
    // Tokens over the API as well as from the CLI: admin only, whatever the method.
    const r = layer.router();
    r.get('/', (_req, res) => sendJson(res, 200, { tokens: component.tokens.list() }));
    r.post('/', layer.jsonBody(createTokenBody), (req, res) => {
      const body = req.body as z.output<typeof createTokenBody>;
      try {
        const token = component.tokens.create(body.name, body.scopes, clock.now());
        // The only time the token is shown; it is stored as its hash.
        sendJson(res, 201, { name: body.name, scopes: body.scopes, token });
      } catch (err) {
        if (err instanceof TokenNameTaken) throw new HttpError(409, err.message);
        throw err;
      }
    });
    r.delete('/:name', (req, res) => {
      const name = req.params.name ?? '';
      if (component.tokens.isDeclared(name)) throw new HttpError(409, `token "${name}" is declared in the site config: remove it from http.tokens`);
      if (!component.tokens.revoke(name, clock.now())) throw new HttpError(404, `no live token named "${name}"`);
      sendJson(res, 200, { name, revoked: true });
    });
    layer.mount('/api/v1/tokens', r, { scope: 'admin' });
    return component;
  },
};
