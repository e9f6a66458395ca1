import type { IncomingMessage, ServerResponse } from 'node:http';
import type { z } from 'zod';
import type { Counter, HttpHost, HttpListener, Logger, Metrics, Request, RequestHandler } from '../../runtime/contracts/index.js';
import { configDataSchema, feedbackSchema, type DdiFeedback, type DdiServerOptions, type DeploymentSource } from './contract.js';
import * as resource from './resources.js';
import { ArtifactTransfers } from './transfers.js';

export * from './contract.js';

/**
 * The gateway's update server for child devices, speaking the Eclipse hawkBit Direct Device
 * Integration (DDI) API v1, so that existing update agents (SWUpdate's suricatta, RAUC's
 * rauc-hawkbit-updater, hawkBit clients) work against the gateway unchanged. Served resources
 * (docs/ota.md), under `/{tenant}/controller/v1/{controllerId}`:
 *
 *   GET  ""                                   poll: polling interval and links to open work
 *   GET  deploymentBase/{actionId}            the deployment: chunk, artifact, hashes, links
 *   POST deploymentBase/{actionId}/feedback   progress and outcome
 *   GET  cancelAction/{actionId}              a cancellation of an aborted rollout's action
 *   POST cancelAction/{actionId}/feedback     its confirmation
 *   PUT  configData                           device attributes (the installed version)
 *   GET|HEAD softwaremodules/{id}/artifacts/{file}[.MD5SUM]   artifact bytes (Range, ETag)
 *
 * Every request carries the device's own `TargetToken` for the controller id in its path
 * (device-auth.ts), unless the site runs it on a closed network (then only on a named address).
 * What is offered to whom is the rollout engine's business (DeploymentSource). It runs on a
 * listener of its own, on the gateway's HTTP layer (routing, body limits, error shape); its errors
 * carry hawkBit's `errorCode` and `message` besides `error`.
 */

const ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;
const BODY_LIMIT = 256 * 1024;

/**
 * An artifact download spelled the plain way: nothing to decode, no query, no trailing slash.
 * These are answered before the router (preRoute: each range of every download is one request,
 * and the router's matching and request decoration cost about as much as the rest of the answer);
 * every other spelling goes through the router, which reaches the same checks and handler.
 */
const ARTIFACT_PATH = /^\/([^/?%]+)\/controller\/v1\/([^/?%]+)\/softwaremodules\/(\d{1,15})\/artifacts\/([^/?%]+)$/;

/** Addresses that listen on every interface: not for a server without authentication. */
export function isWildcardHost(host: string): boolean {
  return ['', '0.0.0.0', '::', '[::]', '0:0:0:0:0:0:0:0', '::0', '*'].includes(host.trim());
}

const errorFields = (status: number, message: string): Record<string, unknown> => ({ errorCode: `outpost.ddi.${status}`, message });

export class DdiServer {
  private listener: HttpListener | undefined;
  private readonly mRequests: Counter;
  private readonly mRefused: Counter;
  private readonly transfers: ArtifactTransfers;
  /** Refusal causes logged so far: each is logged once (then only counted). */
  private readonly logged = new Set<string>();

  constructor(
    private readonly source: DeploymentSource,
    private readonly opts: DdiServerOptions,
    private readonly log: Logger,
    metrics: Metrics,
    private readonly http: HttpHost,
  ) {
    if (!ID.test(opts.tenant)) throw new Error(`DDI tenant "${opts.tenant}": letters, digits, "_", ".", ":", "-"`);
    this.mRequests = metrics.counter('outpost_ddi_requests_total', 'Update server (DDI) requests by resource and status', ['resource', 'status']);
    this.mRefused = metrics.counter('outpost_ddi_refused_total', 'Update server requests refused, by reason', ['reason']);
    this.transfers = new ArtifactTransfers(
      opts,
      {
        requests: (status) => this.count('artifact', status),
        refused: this.mRefused,
        bytes: metrics.counter('outpost_ddi_served_bytes_total', 'Artifact bytes served to child devices'),
        active: metrics.gauge('outpost_ddi_transfers', 'Artifact transfers in progress'),
        chunkReads: metrics.counter('outpost_ddi_chunk_reads_total', 'Artifact chunks served, from memory (hit) or read from the cache directory (miss)', ['result']),
      },
      log,
    );
  }

  get port(): number {
    return this.listener?.port ?? 0;
  }

  async listen(host: string, port: number): Promise<number> {
    if (this.opts.auth === 'closed-network' && isWildcardHost(host)) {
      throw new Error(`the update server without device authentication (closed network) must listen on a named address, not "${host}"`);
    }
    this.listener = await this.http.listen(
      { name: 'update-server', host, port, keepAliveTimeoutMs: 10_000, errorFields, preRoute: (req, res) => this.artifactFirst(req, res) },
      this.routes(),
    );
    return this.listener.port;
  }

  async close(): Promise<void> {
    const l = this.listener;
    this.listener = undefined;
    this.transfers.close();
    await l?.close();
  }

  private count(resource: string, status: number): void {
    this.mRequests.inc({ resource, status: String(status) });
  }

  private problem(res: ServerResponse, status: number, message: string): void {
    this.http.sendError(res, status, message, errorFields(status, message));
  }

  /** Counts a refusal and logs its first occurrence per cause (never the credential). */
  private refuse(reason: string, fields: Record<string, unknown>): void {
    this.mRefused.inc({ reason });
    if (this.logged.has(reason)) return;
    this.logged.add(reason);
    this.log.warn({ reason, ...fields }, 'update server request refused (logged once per reason; counted in outpost_ddi_refused_total)');
  }

  private routes(): ReturnType<HttpHost['router']> {
    const r = this.http.router();
    const c: resource.ResourceContext = {
      source: this.source,
      tenant: this.opts.tenant,
      pollSeconds: this.opts.pollSeconds,
      publicUrl: this.opts.publicUrl,
      count: (name, status) => this.count(name, status),
      problem: (res, status, message) => this.problem(res, status, message),
    };
    const body = (schema: z.ZodType): RequestHandler => this.http.jsonBody(schema, { limitBytes: BODY_LIMIT, onRefused: (reason) => this.mRefused.inc({ reason }), errorFields });
    // Before any resource: the tenant, a valid controller id, and the device's credentials.
    r.param('tenant', (_req, res, next, tenant: string) => {
      if (tenant === this.opts.tenant) return next();
      this.mRefused.inc({ reason: 'not-found' });
      this.problem(res, 404, `no such resource: tenant "${tenant.slice(0, 64)}"`);
    });
    r.param('device', (req, res, next, device: string) => {
      if (!ID.test(device)) {
        this.mRefused.inc({ reason: 'bad-controller-id' });
        return this.problem(res, 400, 'controllerId: letters, digits, "_", ".", ":", "-", at most 128');
      }
      if (this.authenticated(req, res, device)) next();
    });
    const root = '/:tenant/controller/v1/:device';
    const device = (req: Request): string => req.params.device!;
    const action = (req: Request): number => Number(req.params.action);
    r.get(root, (req, res) => resource.poll(c, req, res, device(req)));
    r.get(`${root}/deploymentBase/:action`, (req, res) => resource.deploymentBase(c, req, res, device(req), action(req)));
    r.post(`${root}/deploymentBase/:action/feedback`, body(feedbackSchema), (req, res) => resource.feedback(c, res, device(req), action(req), req.body as DdiFeedback));
    r.get(`${root}/cancelAction/:action`, (req, res) => resource.cancelAction(c, res, device(req), action(req)));
    r.post(`${root}/cancelAction/:action/feedback`, body(feedbackSchema), (req, res) => resource.cancelFeedback(c, res, device(req), action(req), req.body as DdiFeedback));
    r.put(`${root}/configData`, body(configDataSchema), (req, res) => resource.configData(c, res, device(req), (req.body as { data: Record<string, string> }).data));
    // GET also answers HEAD.
    r.get(`${root}/softwaremodules/:module/artifacts/:file`, (req, res) => this.artifact(req, res, device(req), Number(req.params.module), req.params.file));
    r.use((req, res) => {
      this.mRefused.inc({ reason: 'not-found' });
      const m = req.method;
      this.problem(res, m === 'GET' || m === 'POST' || m === 'PUT' || m === 'HEAD' ? 404 : 405, `no resource ${m} ${req.path.slice(0, 200)}`);
    });
    return r;
  }

  /**
   * True when the request carries `device`'s own credentials; else answers 401 or 403. The
   * authenticated identity is the controller id of the path: a device's token opens its own
   * resources only.
   */
  private authenticated(req: IncomingMessage, res: ServerResponse, device: string): boolean {
    const { auth } = this.opts;
    const refused = auth === 'closed-network' ? undefined : auth.check(req.headers.authorization, device);
    if (refused === undefined) return true;
    this.refuse(refused, { device, remote: req.socket.remoteAddress });
    if (refused === 'other-device') {
      this.problem(res, 403, `the token is not ${device}'s`);
    } else {
      res.setHeader('www-authenticate', 'TargetToken');
      this.problem(res, 401, `the device's own TargetToken is required (${refused})`);
    }
    return false;
  }

  /**
   * The router's way for an artifact download (tenant, controller id, credentials, then the
   * handler), taken before the router for the plain spelling of its path (ARTIFACT_PATH); false
   * hands the request to the router.
   */
  private artifactFirst(req: IncomingMessage, res: ServerResponse): boolean {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    const m = ARTIFACT_PATH.exec(req.url ?? '');
    // Another tenant or a bad controller id: the router answers (and counts) those.
    if (!m || m[1] !== this.opts.tenant || !ID.test(m[2]!)) return false;
    const device = m[2]!;
    if (this.authenticated(req, res, device)) this.artifact(req, res, device, Number(m[3]), m[4]!);
    return true;
  }

  /** GET|HEAD softwaremodules/{id}/artifacts/{file}: the bytes, or with `.MD5SUM` their md5 line. */
  private artifact(req: IncomingMessage, res: ServerResponse, device: string, moduleId: number, file: string): void {
    const md5sum = file.endsWith('.MD5SUM');
    const name = md5sum ? file.slice(0, -'.MD5SUM'.length) : file;
    const art = this.source.artifact(device, moduleId, name);
    if (!art) {
      // Another device's artifact, or one of no open action: the same answer either way.
      this.refuse('not-offered', { device, moduleId });
      this.count('artifact', 404);
      this.problem(res, 404, `artifact ${name} is not offered to ${device}`);
      return;
    }
    if (md5sum) {
      this.count('artifact', 200);
      res.writeHead(200, { 'content-type': 'text/plain' }).end(`${art.md5}  ${name}\n`);
      return;
    }
    this.transfers.serve(req, res, art, name, device, (status, message) => this.problem(res, status, message));
  }
}
