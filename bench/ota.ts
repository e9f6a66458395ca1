import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import mqtt from 'mqtt';
import type { SiteConfigInput } from '../runtime/config/schema.js';
import { SimCloud } from '../sim/cloud.js';
import { freePort } from '../sim/free-port.js';
import { ArtifactOrigin } from '../sim/ota/artifact-origin.js';
import { DdiDevice, groupTargetToken } from '../sim/ota/ddi-device.js';
import { makeDelta, nextVersion } from '../sim/ota/delta.js';
import { ReleaseSigner } from '../sim/ota/release-signer.js';
import { ConfiguredGateway } from './configured-gateway.js';
import { fmtInt, Scope, sleep, type Benchmark, type BenchOptions, type BenchResult } from './harness.js';
import { round } from './stats.js';
import { cloudTopics, errorMessage } from '../runtime/contracts/index.js';

const CHILDREN = 200;
const RANGE_BYTES = 1024 * 1024;
const GW = 'bench-ota';
/** The update server's group secret: every child's target token derives from it. */
const GROUP_SECRET = randomBytes(32).toString('base64url');
const auth = (device: string): { authorization: string } => ({ authorization: `TargetToken ${groupTargetToken(GROUP_SECRET, device)}` });

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

interface RolloutView {
  release: string;
  state: string;
  phases: Array<{ devices: number; succeeded: number; failed: number }>;
}

async function otaStatus(gw: ConfiguredGateway): Promise<{ rollouts?: RolloutView[]; releases?: Array<{ release: string; state: string }> }> {
  // One retry: a kept-alive connection the server closed at the same moment fails once.
  const get = async (): Promise<Response> => gw.fetch(`${gw.apiUrl}/api/v1/ota`);
  const res = await get().catch(get);
  return (await res.json()) as { rollouts?: RolloutView[] };
}

/**
 * `clients` concurrent clients, each fetching the whole file once in RANGE_BYTES ranges over a
 * keep-alive connection; resolves with the bytes received, the seconds it took, and the requests
 * sent again because the server had closed the kept-alive connection they went out on.
 */
async function rangeLoad(urls: readonly string[], size: number, headersFor: (url: string) => Record<string, string>): Promise<{ bytes: number; seconds: number; retried: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: urls.length });
  let bytes = 0;
  let retried = 0;
  const get = (url: string, from: number, to: number): Promise<void> =>
    new Promise((resolve, reject) => {
      let answered = false;
      const req = request(url, { agent, headers: { ...headersFor(url), range: `bytes=${from}-${to}` } }, (res) => {
        answered = true;
        if (res.statusCode !== 206) reject(new Error(`${url}: HTTP ${res.statusCode}`));
        res.on('data', (c: Buffer) => (bytes += c.length));
        res.on('end', resolve);
        res.on('error', reject);
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        // The server closed an idle kept-alive connection as this request went out on it (the
        // update server's keep-alive timeout is 10 s, nginx's 75 s; on a busy machine the client
        // can take that long to read what the kernel buffered): a GET is sent again, as browsers
        // do (RFC 9110 §9.2.2).
        if (!answered && req.reusedSocket && err.code === 'ECONNRESET') {
          retried++;
          get(url, from, to).then(resolve, reject);
        } else {
          reject(err);
        }
      });
      req.end();
    });
  const t0 = performance.now();
  await Promise.all(
    urls.map(async (url) => {
      for (let at = 0; at < size; at += RANGE_BYTES) await get(url, at, Math.min(size, at + RANGE_BYTES) - 1);
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  agent.destroy();
  return { bytes, seconds, retried };
}

async function startNginx(scope: Scope, dir: string, file: Buffer): Promise<string> {
  const port = await freePort();
  mkdirSync(join(dir, 'www'), { recursive: true });
  mkdirSync(join(dir, 'tmp'), { recursive: true });
  writeFileSync(join(dir, 'www', 'image.swu'), file, { mode: 0o644 });
  // nginx's workers drop root for an unprivileged user: they must be able to read the file.
  for (const d of [dirname(dir), dir, join(dir, 'www')]) chmodSync(d, 0o755);
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `worker_processes auto;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path ${dir}/tmp/body; proxy_temp_path ${dir}/tmp/proxy; fastcgi_temp_path ${dir}/tmp/fcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi; scgi_temp_path ${dir}/tmp/scgi;
  server { listen 127.0.0.1:${port}; root ${dir}/www; }
}
`,
  );
  const proc = spawn('nginx', ['-c', conf, '-p', dir, '-e', join(dir, 'error.log')], { stdio: 'ignore' });
  scope.pid(proc.pid);
  scope.defer(
    () =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null) return resolve();
        proc.once('exit', () => resolve());
        proc.kill('SIGQUIT');
      }),
  );
  const url = `http://127.0.0.1:${port}/image.swu`;
  for (let i = 0; i < 100; i++) {
    try {
      const res = await fetch(url, { method: 'HEAD' });
      if (res.ok) return url;
      throw new Error(`nginx answers ${res.status} for ${url}`);
    } catch (err) {
      if (errorMessage(err).startsWith('nginx answers')) throw err;
      // not up yet
    }
    await sleep(50);
  }
  throw new Error(`nginx did not start (see ${dir}/error.log)`);
}

/** `imageMb`: size of the release images; `chunkCacheMb`: the update server's `chunkCacheBytes` in MiB. */
export const otaBenchmark = (IMAGE_MB = 8, chunkCacheMb = 32): Benchmark => ({
  name: 'ota',
  description: `OTA: cloud bytes per release with ${CHILDREN} children, serving one ${IMAGE_MB} MiB artifact to ${CHILDREN} range clients vs nginx (chunk cache ${chunkCacheMb} MiB), delta size`,
  maxDurationMs: () => 300_000,
  async run(opts: BenchOptions): Promise<BenchResult> {
    const scope = new Scope();
    try {
      const dir = scope.dir(mkdtempSync(join(tmpdir(), 'outpost-bench-ota-')));
      const cloud = await SimCloud.start();
      scope.defer(() => cloud.stop());
      const origin = await new ArtifactOrigin().start();
      scope.defer(() => origin.stop());
      const signer = ReleaseSigner.generate('bench');
      const config: SiteConfigInput = {
        gateway: { id: GW },
        broker: { host: '127.0.0.1', port: 0 },
        http: { host: '127.0.0.1', port: 0 },
        cloud: { url: cloud.url, lingerMs: 0 },
        storage: { path: join(dir, 'outpost.db') },
        ota: {
          trustedKeys: { bench: signer.publicKeyPem },
          cacheBytes: Math.max(256, IMAGE_MB * 4) * 1024 * 1024,
          server: { host: '127.0.0.1', port: 0, tenant: 'bench', pollSeconds: 1, groupSecret: GROUP_SECRET, maxTransfers: 256, chunkCacheBytes: chunkCacheMb * 1024 * 1024 },
        },
      };
      const gw = await ConfiguredGateway.start(dir, config);
      scope.pid(gw.pid);
      scope.defer(() => gw.stop());
      const status = (await (await gw.fetch(`${gw.apiUrl}/api/v1/status`)).json()) as { ports: { ota: number } };
      const server = `http://127.0.0.1:${status.ports.ota}/bench`;
      const publisher = await mqtt.connectAsync(cloud.url, { reconnectPeriod: 0 });
      scope.defer(() => publisher.endAsync(true));
      const publish = async (m: { release: string }): Promise<void> => {
        await publisher.publishAsync(cloudTopics.release('outpost', GW, m.release), JSON.stringify(signer.sign(m)), { qos: 1, retain: true });
      };
      let seed = 42;
      const random = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);

      // 1. Fetch once: 200 children update from the gateway; the origin counts cloud bytes.
      const v2 = randomBytes(IMAGE_MB * 1024 * 1024);
      const artifact = (name: string, b: Buffer): { name: string; url: string; size: number; sha256: string } => ({ name, url: origin.put(`/${name}`, b), size: b.length, sha256: sha(b) });
      const children = Array.from({ length: CHILDREN }, (_, i) => new DdiDevice({ server, id: `bench-${String(i).padStart(3, '0')}`, authorization: auth(`bench-${String(i).padStart(3, '0')}`).authorization, version: '1.0.0', maxPollMs: 1000 }));
      for (const c of children) {
        c.start();
        scope.defer(() => c.stop());
      }
      await sleep(1500);
      origin.breakNext(3, Math.floor(v2.length / 5));
      const t0 = performance.now();
      await publish({
        release: 'bench-fw-2.0.0',
        product: 'bench-fw',
        version: '2.0.0',
        issuedAt: Date.now(),
        expiresAt: Date.now() + 86_400_000,
        target: { gateways: [GW], devices: ['bench-*'] },
        artifact: artifact('bench-fw-2.0.0.swu', v2),
        rollout: { phases: [{ share: 100 }], failureThreshold: 0.1, maxRetries: 1 },
      } as { release: string });
      let r: RolloutView | undefined;
      while (performance.now() - t0 < 180_000) {
        r = (await otaStatus(gw).catch((err: unknown) => {
          throw new Error(`gateway status: ${errorMessage(err)}; gateway log: ${gw.log.slice(-1500)}`);
        })).rollouts?.find((x) => x.release === 'bench-fw-2.0.0');
        const done = r?.phases[0]?.succeeded ?? 0;
        opts.progress.show(`ota  rollout to ${CHILDREN} children: ${done} updated, cloud bytes ${fmtInt(origin.bytesSent)}`);
        if (r?.state === 'done') break;
        await sleep(250);
      }
      const rolloutS = (performance.now() - t0) / 1000;
      const updated = r?.phases[0]?.succeeded ?? 0;
      const cloudBytes = origin.bytesSent;
      const fetchRatio = cloudBytes / v2.length;
      for (const c of children) await c.stop();

      // 2. Serving: 200 concurrent clients fetch one artifact in 1 MiB ranges, from the gateway
      // (as devices with an open action) and from nginx.
      const v3 = nextVersion(v2, 32, 4096, random);
      const delta = makeDelta(v2, v3);
      await publish({
        release: 'bench-fw-3.0.0',
        product: 'bench-fw',
        version: '3.0.0',
        issuedAt: Date.now(),
        expiresAt: Date.now() + 86_400_000,
        target: { gateways: [GW], devices: ['load-*', 'bench-*'] },
        artifact: artifact('bench-fw-3.0.0.swu', v3),
        deltas: [{ from: '2.0.0', artifact: artifact('bench-fw-2.0.0-3.0.0.delta', delta) }],
        rollout: { phases: [{ share: 100 }], failureThreshold: 0.1, maxRetries: 1 },
      } as { release: string });
      while ((await otaStatus(gw)).releases?.find((x) => x.release === 'bench-fw-3.0.0')?.state !== 'ready' && (await otaStatus(gw)).rollouts?.find((x) => x.release === 'bench-fw-3.0.0') === undefined) {
        await sleep(100);
      }
      opts.progress.show('ota  serving: gateway');
      const urls: string[] = [];
      for (let i = 0; i < CHILDREN; i++) {
        const base = `${server}/controller/v1/load-${String(i).padStart(3, '0')}`;
        const headers = auth(`load-${String(i).padStart(3, '0')}`);
        const poll = (await (await fetch(base, { headers })).json()) as { _links?: { deploymentBase?: { href: string } } };
        const href = poll._links?.deploymentBase?.href;
        if (!href) throw new Error(`load-${i} got no deployment`);
        const dep = (await (await fetch(href, { headers })).json()) as { deployment: { chunks: Array<{ artifacts: Array<{ _links: { 'download-http': { href: string } } }> }> } };
        urls.push(dep.deployment.chunks[0]!.artifacts[0]!._links['download-http'].href);
      }
      // A device that runs 2.0.0 is offered the delta.
      const onV2 = (await (await fetch(`${server}/controller/v1/bench-000`, { headers: auth('bench-000') })).json()) as { _links?: { deploymentBase?: { href: string } } };
      const deltaOffered = onV2._links?.deploymentBase
        ? ((await (await fetch(onV2._links.deploymentBase.href, { headers: auth('bench-000') })).json()) as { deployment: { chunks: Array<{ artifacts: Array<{ size: number }> }> } }).deployment.chunks[0]!.artifacts[0]!.size
        : undefined;
      const ours = await rangeLoad(urls, v3.length, (url) => auth(/\/controller\/v1\/([^/]+)\//.exec(url)![1]!));
      opts.progress.show('ota  serving: nginx');
      const nginxUrl = await startNginx(scope, join(dir, 'nginx'), v3);
      const theirs = await rangeLoad(Array.from({ length: CHILDREN }, () => nginxUrl), v3.length, () => ({}));
      opts.progress.clear();

      const mbps = (x: { bytes: number; seconds: number }): number => x.bytes / x.seconds / 1e6;
      const serveRatio = mbps(ours) / mbps(theirs);
      const deltaRatio = delta.length / v3.length;
      const figures = {
        children: CHILDREN,
        image_bytes: v2.length,
        cloud_bytes: cloudBytes,
        fetch_ratio: round(fetchRatio, 4),
        children_updated: updated,
        rollout_s: round(rolloutS, 1),
        serve_outpost_mb_s: round(mbps(ours), 1),
        serve_nginx_mb_s: round(mbps(theirs), 1),
        serve_ratio: round(serveRatio, 3),
        serve_retried_outpost: ours.retried,
        serve_retried_nginx: theirs.retried,
        delta_bytes: delta.length,
        delta_ratio: round(deltaRatio, 4),
        delta_offered_bytes: deltaOffered ?? 0,
      };
      const notes = [
        `cloud bytes ÷ image: ${fmtInt(cloudBytes)} ÷ ${fmtInt(v2.length)} = ${round(fetchRatio, 4)} (aim = 1.0) with 3 cloud transfers broken on purpose; ${updated} of ${CHILDREN} children updated in ${round(rolloutS, 1)} s: ${fetchRatio === 1 && updated === CHILDREN ? 'met' : 'MISSED'}`,
        `serving ${CHILDREN} concurrent range clients (${IMAGE_MB} MiB file, 1 MiB ranges, keep-alive, one load generator process; chunk cache ${chunkCacheMb} MiB): Outpost ${round(mbps(ours), 0)} MB/s ÷ nginx ${round(mbps(theirs), 0)} MB/s (worker_processes auto, sendfile) = ${round(serveRatio, 2)} (aim >= 1.0, issue 19): ${serveRatio >= 1 ? 'met' : 'MISSED'}${ours.retried + theirs.retried > 0 ? `; requests sent again on a closed keep-alive connection: Outpost ${ours.retried}, nginx ${theirs.retried}` : ''}`,
        `delta ÷ full image: ${fmtInt(delta.length)} ÷ ${fmtInt(v3.length)} = ${round(deltaRatio, 4)} (32 blocks of 4 KiB changed; xor + deflate); a device on 2.0.0 is offered ${deltaOffered === delta.length ? 'the delta' : `${deltaOffered} bytes (not the delta!)`}`,
      ];
      return {
        figures,
        table: {
          head: ['what', 'measured', 'ratio'],
          rows: [
            ['cloud bytes for one release, 200 children', `${fmtInt(cloudBytes)} of ${fmtInt(v2.length)}`, String(round(fetchRatio, 4))],
            ['serving 200 range clients: Outpost', `${round(mbps(ours), 1)} MB/s`, String(round(serveRatio, 3))],
            ['serving 200 range clients: nginx [baseline]', `${round(mbps(theirs), 1)} MB/s`, '1.00'],
            ['delta ÷ full image', `${fmtInt(delta.length)} B`, String(round(deltaRatio, 4))],
          ],
        },
        notes,
        ok: updated === CHILDREN && ours.bytes === CHILDREN * v3.length && theirs.bytes === CHILDREN * v3.length,
      };
    } finally {
      opts.progress.clear();
      await scope.close();
    }
  },
});
