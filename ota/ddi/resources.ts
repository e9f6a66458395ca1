import type { Request, Response } from '../../runtime/contracts/index.js';
import type { DdiFeedback, DeploymentSource } from './contract.js';

/**
 * The DDI resources of one device, one handler each (hawkBit DDI API v1), under
 * `/{tenant}/controller/v1/{controllerId}`. Authentication and the controller id are checked
 * before any of them runs (server.ts); artifacts are served by transfers.ts.
 */

export interface ResourceContext {
  readonly source: DeploymentSource;
  readonly tenant: string;
  readonly pollSeconds: number;
  /** Base URL devices use to reach the server (links), if not the Host they used. */
  readonly publicUrl?: string | undefined;
  /** Counts a request by resource and status. */
  readonly count: (resource: string, status: number) => void;
  /** Answers in the update server's error shape. */
  readonly problem: (res: Response, status: number, message: string) => void;
}

function hhmmss(seconds: number): string {
  const s = Math.max(1, Math.min(86_399, Math.round(seconds)));
  return [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60].map((n) => String(n).padStart(2, '0')).join(':');
}

/** DDI answers are HAL JSON and never cached. */
export function hal(res: Response, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/hal+json;charset=UTF-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

function base(c: ResourceContext, req: Request, device: string): string {
  const root = c.publicUrl ?? `http://${req.headers.host ?? '127.0.0.1'}`;
  return `${root.replace(/\/$/, '')}/${c.tenant}/controller/v1/${encodeURIComponent(device)}`;
}

/** GET {controller}: the polling interval and a link to the device's open work, if any. */
export function poll(c: ResourceContext, req: Request, res: Response, device: string): void {
  const links: Record<string, { href: string }> = {};
  const root = base(c, req, device);
  const cancel = c.source.cancellation(device);
  const offer = cancel === undefined ? c.source.offer(device) : undefined;
  if (cancel !== undefined) links.cancelAction = { href: `${root}/cancelAction/${cancel}` };
  else if (offer) links.deploymentBase = { href: `${root}/deploymentBase/${offer.actionId}?c=${offer.artifact.sha256.slice(0, 8)}` };
  else links.configData = { href: `${root}/configData` };
  c.count('poll', 200);
  hal(res, 200, { config: { polling: { sleep: hhmmss(c.pollSeconds) } }, _links: links });
}

/** GET deploymentBase/{actionId}: the chunk, its artifact, hashes and download links. */
export function deploymentBase(c: ResourceContext, req: Request, res: Response, device: string, actionId: number): void {
  const offer = c.source.offer(device);
  if (!offer || offer.actionId !== actionId) {
    c.count('deploymentBase', 404);
    c.problem(res, 404, `action ${actionId} is not open for ${device}`);
    return;
  }
  const a = offer.artifact;
  const href = `${base(c, req, device)}/softwaremodules/${a.moduleId}/artifacts/${encodeURIComponent(a.filename)}`;
  c.count('deploymentBase', 200);
  hal(res, 200, {
    id: String(offer.actionId),
    deployment: {
      download: 'forced',
      update: 'forced',
      ...(offer.maintenanceWindow ? { maintenanceWindow: offer.maintenanceWindow } : {}),
      chunks: [
        {
          part: 'os',
          version: offer.version,
          name: offer.name,
          artifacts: [
            {
              filename: a.filename,
              hashes: { sha1: a.sha1, md5: a.md5, sha256: a.sha256 },
              size: a.size,
              _links: { 'download-http': { href }, 'md5sum-http': { href: `${href}.MD5SUM` } },
            },
          ],
        },
      ],
    },
  });
}

/** POST deploymentBase/{actionId}/feedback: progress and outcome of the device's action. */
export function feedback(c: ResourceContext, res: Response, device: string, actionId: number, fb: DdiFeedback): void {
  const ok = c.source.feedback(device, actionId, fb);
  c.count('feedback', ok ? 200 : 410);
  if (ok) res.writeHead(200).end();
  else c.problem(res, 410, `action ${actionId} is not open for ${device}`);
}

/** GET cancelAction/{actionId}: the cancellation of an aborted rollout's action. */
export function cancelAction(c: ResourceContext, res: Response, device: string, actionId: number): void {
  const id = c.source.cancellation(device);
  if (id === undefined || id !== actionId) {
    c.count('cancelAction', 404);
    c.problem(res, 404, `no cancellation ${actionId} for ${device}`);
    return;
  }
  c.count('cancelAction', 200);
  hal(res, 200, { id: String(id), cancelAction: { stopId: String(id) } });
}

/** POST cancelAction/{actionId}/feedback: the device confirms (or refuses) the cancellation. */
export function cancelFeedback(c: ResourceContext, res: Response, device: string, actionId: number, fb: DdiFeedback): void {
  const ok = c.source.cancelFeedback(device, actionId, fb);
  c.count('cancelFeedback', ok ? 200 : 410);
  if (ok) res.writeHead(200).end();
  else c.problem(res, 410, `no cancellation ${actionId} open for ${device}`);
}

/** PUT configData: the device's attributes (its installed version among them). */
export function configData(c: ResourceContext, res: Response, device: string, data: Readonly<Record<string, string>>): void {
  c.source.configData(device, data);
  c.count('configData', 200);
  res.writeHead(200).end();
}
