import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SimCloud } from '../../sim/cloud.js';
import { LinkProxy } from '../../sim/link-proxy.js';

export interface CloudBehindLink {
  /** A private temp directory for the gateway's store and config. */
  readonly dir: string;
  readonly cloud: SimCloud;
  /** Between the gateway and the cloud; starts down. */
  readonly link: LinkProxy;
}

/** A simulated cloud behind a link proxy that is down, and a temp dir; all undone by `cleanup`. */
export async function cloudBehindDeadLink(name: string, cleanup: Array<() => Promise<unknown>>): Promise<CloudBehindLink> {
  const dir = mkdtempSync(join(tmpdir(), `outpost-${name}-`));
  cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
  const cloud = await SimCloud.start();
  cleanup.push(() => cloud.stop());
  const link = await LinkProxy.start({ port: cloud.port });
  cleanup.push(() => link.close());
  link.down();
  return { dir, cloud, link };
}
