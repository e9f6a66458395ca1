import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PromMetrics } from '../../runtime/metrics.js';
import { DeviceAuth, hashToken } from '../../ota/ddi/device-auth.js';
import { DdiServer, type DdiFeedback, type DdiOffer, type DeploymentSource } from '../../ota/ddi/server.js';
import { silentLogger } from '../helpers/fakes.js';
import { HttpLayer } from '../../runtime/http/http-layer.js';

const body = randomBytes(1_000_000);
const digest = (alg: string, of: Buffer = body): string => createHash(alg).update(of).digest('hex');

/** One device, pump-1, with action 7 open; feedback and attributes are recorded. */
class FakeSource implements DeploymentSource {
  readonly feedbacks: Array<[string, number, DdiFeedback]> = [];
  readonly attributes: Array<[string, Record<string, string>]> = [];
  cancel: number | undefined;
  constructor(
    readonly path: string,
    private readonly content: Buffer = body,
  ) {}
  offer(device: string): DdiOffer | undefined {
    if (device !== 'pump-1') return undefined;
    const c = this.content;
    return { actionId: 7, name: 'pump-fw', version: '2.1.0', artifact: { moduleId: 3, filename: 'fw-2.1.0.swu', size: c.length, sha256: digest('sha256', c), sha1: digest('sha1', c), md5: digest('md5', c) } };
  }
  cancellation(): number | undefined {
    return this.cancel;
  }
  feedback(device: string, actionId: number, fb: DdiFeedback): boolean {
    if (device !== 'pump-1' || actionId !== 7) return false;
    this.feedbacks.push([device, actionId, fb]);
    return true;
  }
  cancelFeedback(device: string, actionId: number, fb: DdiFeedback): boolean {
    this.feedbacks.push([device, actionId, fb]);
    return actionId === this.cancel;
  }
  configData(device: string, data: Readonly<Record<string, string>>): void {
    this.attributes.push([device, { ...data }]);
  }
  artifact(device: string, moduleId: number, filename: string): { path: string; sha256: string; md5: string; size: number } | undefined {
    const c = this.content;
    return device === 'pump-1' && moduleId === 3 && filename === 'fw-2.1.0.swu' ? { path: this.path, sha256: digest('sha256', c), md5: digest('md5', c), size: c.length } : undefined;
  }
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

function call(port: number, method: string, path: string, headers: Record<string, string> = {}, payload?: unknown): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const data = payload === undefined ? undefined : typeof payload === 'string' ? payload : JSON.stringify(payload);
    const req = request({ host: '127.0.0.1', port, method, path, headers: { ...headers, ...(data ? { 'content-type': 'application/json' } : {}) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(data);
  });
}

describe('DDI update server', () => {
  let server: DdiServer;
  let source: FakeSource;
  let port: number;
  const base = '/site/controller/v1/pump-1';
  const auth = { authorization: 'TargetToken t-pump-1' };

  beforeEach(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-ddi-'));
    writeFileSync(join(dir, 'blob'), body);
    source = new FakeSource(join(dir, 'blob'));
    server = new DdiServer(source, { tenant: 'site', pollSeconds: 90, auth: new DeviceAuth({ tokenHashes: { 'pump-1': hashToken('t-pump-1'), 'pump-2': hashToken('t-pump-2') } }), maxTransfers: 2, maxQueued: 1 }, silentLogger, new PromMetrics(), new HttpLayer(silentLogger));
    port = await server.listen('127.0.0.1', 0);
  });
  afterEach(async () => {
    await server.close();
  });

  it('answers a poll with the polling interval and a link to the open deployment, and that deployment with hashes and links', async () => {
    const poll = await call(port, 'GET', base, auth);
    expect(poll.status).toBe(200);
    const p = JSON.parse(poll.body.toString()) as { config: { polling: { sleep: string } }; _links: { deploymentBase: { href: string } } };
    expect(p.config.polling.sleep).toBe('00:01:30');
    const href = new URL(p._links.deploymentBase.href);
    expect(href.pathname).toBe(`${base}/deploymentBase/7`);
    const dep = await call(port, 'GET', href.pathname + href.search, auth);
    const d = JSON.parse(dep.body.toString()) as { id: string; deployment: { update: string; chunks: Array<{ version: string; artifacts: Array<{ filename: string; size: number; hashes: Record<string, string>; _links: Record<string, { href: string }> }> }> } };
    expect(d.id).toBe('7');
    expect(d.deployment.update).toBe('forced');
    const a = d.deployment.chunks[0]!.artifacts[0]!;
    expect([a.filename, a.size, a.hashes.sha1, a.hashes.md5, a.hashes.sha256]).toEqual(['fw-2.1.0.swu', body.length, digest('sha1'), digest('md5'), digest('sha256')]);
    const dl = new URL(a._links['download-http']!.href);
    const got = await call(port, 'GET', dl.pathname, auth);
    expect(got.status).toBe(200);
    expect(got.body.equals(body)).toBe(true);
    expect(got.headers.etag).toBe(`"${digest('sha256')}"`);
    const md5 = await call(port, 'GET', new URL(a._links['md5sum-http']!.href).pathname, auth);
    expect(md5.body.toString()).toBe(`${digest('md5')}  fw-2.1.0.swu\n`);
  });

  it('a device without work gets only the configData link; the other device cannot fetch pump-1 artifacts', async () => {
    const poll = await call(port, 'GET', '/site/controller/v1/pump-2', { authorization: 'TargetToken t-pump-2' });
    expect(Object.keys((JSON.parse(poll.body.toString()) as { _links: object })._links)).toEqual(['configData']);
    const steal = await call(port, 'GET', '/site/controller/v1/pump-2/softwaremodules/3/artifacts/fw-2.1.0.swu', { authorization: 'TargetToken t-pump-2' });
    expect(steal.status).toBe(404);
  });

  it('serves ranges, suffix ranges, HEAD and If-None-Match; refuses unsatisfiable ranges', async () => {
    const path = `${base}/softwaremodules/3/artifacts/fw-2.1.0.swu`;
    const r = await call(port, 'GET', path, { ...auth, range: 'bytes=1000-1999' });
    expect(r.status).toBe(206);
    expect(r.headers['content-range']).toBe(`bytes 1000-1999/${body.length}`);
    expect(r.body.equals(body.subarray(1000, 2000))).toBe(true);
    const open = await call(port, 'GET', path, { ...auth, range: 'bytes=999000-' });
    expect(open.body.equals(body.subarray(999_000))).toBe(true);
    const suffix = await call(port, 'GET', path, { ...auth, range: 'bytes=-10' });
    expect(suffix.body.equals(body.subarray(body.length - 10))).toBe(true);
    const head = await call(port, 'HEAD', path, auth);
    expect([head.status, head.headers['content-length'], head.body.length]).toEqual([200, String(body.length), 0]);
    expect((await call(port, 'GET', path, { ...auth, 'if-none-match': `"${digest('sha256')}"` })).status).toBe(304);
    expect((await call(port, 'GET', path, { ...auth, range: `bytes=${body.length}-` })).status).toBe(416);
    expect((await call(port, 'GET', path, { ...auth, range: 'bytes=abc' })).status).toBe(416);
    // If-Range with another validator: the whole file.
    const stale = await call(port, 'GET', path, { ...auth, range: 'bytes=0-9', 'if-range': '"old"' });
    expect([stale.status, stale.body.length]).toEqual([200, body.length]);
  });

  it('answers an artifact request the same however its path is spelled, bytes and refusals alike, and counts each', async () => {
    // The plain spelling is answered before the router; the others go through it.
    const metrics = new PromMetrics();
    const s = new DdiServer(source, { tenant: 'site', pollSeconds: 90, auth: new DeviceAuth({ tokenHashes: { 'pump-1': hashToken('t-pump-1'), 'pump-2': hashToken('t-pump-2') } }), maxTransfers: 2 }, silentLogger, metrics, new HttpLayer(silentLogger));
    const p = await s.listen('127.0.0.1', 0);
    const plain = `${base}/softwaremodules/3/artifacts/fw-2.1.0.swu`;
    const spellings = [plain, `${base}/softwaremodules/3/artifacts/fw%2D2.1.0.swu`, `/site/CONTROLLER/v1/pump-1/softwaremodules/03/artifacts/fw-2.1.0.swu`, `${plain}/`, `${plain}?a=1`];
    try {
      for (const path of spellings) {
        const r = await call(p, 'GET', path, { ...auth, range: 'bytes=10-19' });
        expect([r.status, r.headers['content-range'], r.body.equals(body.subarray(10, 20))], path).toEqual([206, `bytes 10-19/${body.length}`, true]);
        const head = await call(p, 'HEAD', path, auth);
        expect([head.status, head.headers['content-length']], path).toEqual([200, String(body.length)]);
        const none = await call(p, 'GET', path);
        expect([none.status, none.headers['www-authenticate']], path).toEqual([401, 'TargetToken']);
        expect((await call(p, 'GET', path, { authorization: 'TargetToken t-pump-2' })).status, path).toBe(403);
        expect((await call(p, 'GET', path.replace(/modules\/0?3\//, 'modules/4/'), auth)).status, path).toBe(404);
        expect((await call(p, 'POST', path, auth)).status, path).toBe(404);
      }
      expect((await call(p, 'GET', plain.replace('/site/', '/other/'), auth)).status).toBe(404);
      expect((await call(p, 'GET', plain.replace('/pump-1/', '/-pump-1/'), auth)).status).toBe(400);
    } finally {
      await s.close();
    }
    const text = await metrics.text();
    const n = spellings.length;
    for (const [series, count] of [
      ['outpost_ddi_requests_total{resource="artifact",status="206"}', n],
      ['outpost_ddi_requests_total{resource="artifact",status="200"}', n],
      ['outpost_ddi_requests_total{resource="artifact",status="404"}', n],
      ['outpost_ddi_refused_total{reason="no-token"}', n],
      ['outpost_ddi_refused_total{reason="other-device"}', n],
      ['outpost_ddi_refused_total{reason="not-offered"}', n],
      ['outpost_ddi_refused_total{reason="not-found"}', n + 1],
      ['outpost_ddi_refused_total{reason="bad-controller-id"}', 1],
      ['outpost_ddi_served_bytes_total', 10 * n],
    ] as const) {
      expect(text, series).toContain(`${series} ${count}\n`);
    }
  });

  it('serves repeated downloads of an artifact from memory (one read per chunk), and byte-exact with the chunk cache off', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-ddi-chunks-'));
    const big = Buffer.concat([body, body, body.subarray(0, 12_345)]);
    writeFileSync(join(dir, 'blob'), big);
    const src = new FakeSource(join(dir, 'blob'), big);
    const path = `${base}/softwaremodules/3/artifacts/fw-2.1.0.swu`;
    const misses: number[] = [];
    for (const chunkCacheBytes of [8 * 1024 * 1024, 0]) {
      const metrics = new PromMetrics();
      const s = new DdiServer(src, { tenant: 'site', pollSeconds: 90, maxTransfers: 4, chunkCacheBytes, auth: 'closed-network' }, silentLogger, metrics, new HttpLayer(silentLogger));
      const p = await s.listen('127.0.0.1', 0);
      try {
        const all = await Promise.all([call(p, 'GET', path), call(p, 'GET', path), call(p, 'GET', path, { range: 'bytes=1048000-1049000' })]);
        expect(all[0].body.equals(big) && all[1].body.equals(big)).toBe(true);
        expect(all[2].body.equals(big.subarray(1_048_000, 1_049_001))).toBe(true);
        expect((await call(p, 'GET', path)).body.equals(big)).toBe(true);
      } finally {
        await s.close();
      }
      misses.push(Number(/outpost_ddi_chunk_reads_total\{result="miss"\} (\d+)/.exec(await metrics.text())?.[1]));
    }
    // 2 chunks of 1 MiB: with the cache each is read once for four transfers; without, the last
    // transfer reads both again.
    expect(misses[0]).toBe(2);
    expect(misses[1]).toBeGreaterThanOrEqual(4);
  });

  it('closes a transfer whose device stops reading, freeing its slot for the next device', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-ddi-stall-'));
    const big = randomBytes(16 * 1024 * 1024);
    writeFileSync(join(dir, 'blob'), big);
    const metrics = new PromMetrics();
    const s = new DdiServer(new FakeSource(join(dir, 'blob'), big), { tenant: 'site', pollSeconds: 90, maxTransfers: 1, stallMs: 300, auth: 'closed-network' }, silentLogger, metrics, new HttpLayer(silentLogger));
    const p = await s.listen('127.0.0.1', 0);
    try {
      const path = `${base}/softwaremodules/3/artifacts/fw-2.1.0.swu`;
      // A device that sends its request and never reads the body.
      const sock = connect(p, '127.0.0.1');
      sock.pause();
      sock.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
      const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
      sock.on('error', () => undefined);
      await new Promise((r) => setTimeout(r, 100));
      // The next device waits in line, then gets the whole file once the stalled one is closed.
      const next = await call(p, 'GET', path, { range: 'bytes=0-99' });
      expect(next.status).toBe(206);
      expect(next.body.equals(big.subarray(0, 100))).toBe(true);
      sock.resume();
      await closed;
      expect(await metrics.text()).toMatch(/outpost_ddi_refused_total\{reason="stalled"\} 1/);
    } finally {
      await s.close();
    }
  });

  it('answers 500, and keeps running, when the store fails under a feedback or attributes body', async () => {
    class Failing extends FakeSource {
      override configData(): void {
        throw new Error('SQLITE_FULL: database or disk is full');
      }
    }
    const s = new DdiServer(new Failing(source.path), { tenant: 'site', pollSeconds: 90, maxTransfers: 1, auth: 'closed-network' }, silentLogger, new PromMetrics(), new HttpLayer(silentLogger));
    const p = await s.listen('127.0.0.1', 0);
    try {
      const r = await call(p, 'PUT', `${base}/configData`, {}, { data: { version: '1.0.0' } });
      expect(r.status).toBe(500);
      expect((await call(p, 'GET', base)).status).toBe(200);
    } finally {
      await s.close();
    }
  });

  it('takes feedback and attributes, validated; refuses bad tokens and bad bodies with a reason', async () => {
    const fb = { id: '7', status: { execution: 'proceeding', result: { finished: 'none', progress: { cnt: 1, of: 3 } }, details: ['downloading'] } };
    expect((await call(port, 'POST', `${base}/deploymentBase/7/feedback`, auth, fb)).status).toBe(200);
    expect(source.feedbacks[0]![2].status.result.progress).toEqual({ cnt: 1, of: 3 });
    expect((await call(port, 'POST', `${base}/deploymentBase/8/feedback`, auth, fb)).status).toBe(410);
    const bad = await call(port, 'POST', `${base}/deploymentBase/7/feedback`, auth, { status: { execution: 'exploded', result: {} } });
    expect(bad.status).toBe(400);
    expect(bad.body.toString()).toContain('status.execution');
    expect((await call(port, 'POST', `${base}/deploymentBase/7/feedback`, auth, '{not json')).status).toBe(400);
    expect((await call(port, 'PUT', `${base}/configData`, auth, { mode: 'merge', data: { version: '2.0.0', hw: 'board:1.0' } })).status).toBe(200);
    expect(source.attributes).toEqual([['pump-1', { version: '2.0.0', hw: 'board:1.0' }]]);
    for (const a of [{} as Record<string, string>, { authorization: 'TargetToken wrong' }, { authorization: 'GatewayToken nope' }, { authorization: 'Bearer t-pump-1' }]) {
      expect((await call(port, 'GET', base, a)).status).toBe(401);
    }
    // Another device's target token is not this device's.
    expect((await call(port, 'GET', '/site/controller/v1/pump-2', auth)).status).toBe(403);
    expect((await call(port, 'GET', '/other/controller/v1/pump-1', auth)).status).toBe(404);
    expect((await call(port, 'GET', '/site/controller/v1/..%2F..%2Fetc', auth)).status).toBe(400);
  });

  it('offers a cancellation instead of the deployment when the action is being cancelled', async () => {
    source.cancel = 7;
    const poll = JSON.parse((await call(port, 'GET', base, auth)).body.toString()) as { _links: Record<string, { href: string }> };
    expect(Object.keys(poll._links)).toEqual(['cancelAction']);
    const c = JSON.parse((await call(port, 'GET', new URL(poll._links.cancelAction!.href).pathname, auth)).body.toString()) as { cancelAction: { stopId: string } };
    expect(c.cancelAction.stopId).toBe('7');
    const fb = { status: { execution: 'canceled', result: { finished: 'success' } } };
    expect((await call(port, 'POST', `${base}/cancelAction/7/feedback`, auth, fb)).status).toBe(200);
  });

  it('bounds concurrent transfers: the next waits in line, beyond the line the device is told to retry', async () => {
    // An artifact larger than what socket buffers on loopback absorb, so a reader that does not
    // read keeps its transfer open.
    const big = randomBytes(48 * 1024 * 1024);
    const dir = mkdtempSync(join(tmpdir(), 'outpost-ddi-big-'));
    writeFileSync(join(dir, 'blob'), big);
    await server.close();
    server = new DdiServer(new FakeSource(join(dir, 'blob'), big), { tenant: 'site', pollSeconds: 90, maxTransfers: 2, maxQueued: 1, auth: 'closed-network' }, silentLogger, new PromMetrics(), new HttpLayer(silentLogger));
    port = await server.listen('127.0.0.1', 0);
    const path = `${base}/softwaremodules/3/artifacts/fw-2.1.0.swu`;
    // Two slow readers hold both slots (they do not read), one waits, the fourth is refused.
    const held: Array<() => void> = [];
    const slow = (): Promise<number> =>
      new Promise((resolve) => {
        const req = request({ host: '127.0.0.1', port, path, headers: auth }, (res) => {
          res.pause();
          held.push(() => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          });
        });
        req.end();
      });
    const a = slow();
    const b = slow();
    while (held.length < 2) await new Promise((r) => setTimeout(r, 10));
    const queued = call(port, 'GET', path, auth);
    await new Promise((r) => setTimeout(r, 50));
    const refused = await call(port, 'GET', path, auth);
    expect(refused.status).toBe(503);
    expect(refused.headers['retry-after']).toBe('10');
    for (const h of held) h();
    expect(await a).toBe(200);
    expect(await b).toBe(200);
    const q = await queued;
    expect([q.status, q.body.length]).toEqual([200, big.length]);
  });
});
