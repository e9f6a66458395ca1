import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ArtifactCache } from '../../ota/artifact-cache.js';
import { otaSchema } from '../../ota/config.js';
import { DeviceAuth, deriveDeviceToken, hashToken } from '../../ota/ddi/device-auth.js';
import { DdiServer } from '../../ota/ddi/server.js';
import { TrustedKeys, type Manifest } from '../../ota/manifest.js';
import { otaMigrations, ReleaseStore } from '../../ota/release-store.js';
import { rolloutMigrations, Rollouts, type OtaEvent } from '../../ota/rollout.js';
import { ConfigError, parseConfig } from '../../runtime/config/load.js';
import type { Logger } from '../../runtime/contracts/index.js';
import { HttpLayer } from '../../runtime/http/http-layer.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { migrate, openDatabase, type Db } from '../../runtime/store/database.js';
import { groupTargetToken } from '../../sim/ota/ddi-device.js';
import { ReleaseSigner } from '../../sim/ota/release-signer.js';
import { ManualClock, silentLogger } from '../helpers/fakes.js';

/**
 * The update server's attacks (docs/security.md "The update server"): each request an attacker on
 * the site network could send, against the real rollout engine behind the DDI server.
 */

const SECRET = 'group-secret-for-the-test-site-0123456789';
const signer = ReleaseSigner.generate('k1');
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const tokenOf = (device: string): Record<string, string> => ({ authorization: `TargetToken ${groupTargetToken(SECRET, device)}` });
const OWN_TOKEN = 'pump-9-has-a-token-of-its-own-0123456789';

/** A logger that keeps warnings (to check what is logged, and that no token is). */
function recordingLogger(lines: string[]): Logger {
  const l: Logger = {
    error: () => undefined,
    warn: (obj: unknown, msg?: string) => void lines.push(`${msg ?? ''} ${JSON.stringify(obj)}`),
    info: () => undefined,
    debug: () => undefined,
    child: () => l,
  };
  return l;
}

interface Reply {
  status: number;
  body: string;
}

describe('update server: device authentication and what each device may do', () => {
  let db: Db;
  let clock: ManualClock;
  let store: ReleaseStore;
  let rollouts: Rollouts;
  let server: DdiServer;
  let metrics: PromMetrics;
  let events: OtaEvent[];
  let warnings: string[];
  let url: string;
  const image = randomBytes(5000);

  const call = async (method: string, path: string, headers: Record<string, string> = {}, body?: unknown): Promise<Reply> => {
    const res = await fetch(`${url}${path}`, { method, headers: { ...headers, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body === undefined ? undefined : JSON.stringify(body) });
    return { status: res.status, body: await res.text() };
  };
  const refused = async (reason: string): Promise<number> => Number(new RegExp(`outpost_ddi_refused_total\\{reason="${reason}"\\} (\\d+)`).exec(await metrics.text())?.[1] ?? 0);

  function release(version: string, plan: Record<string, unknown>, devices = ['pump-*']): Manifest {
    const m = {
      release: `pump-fw-${version}`,
      product: 'pump-fw',
      version,
      issuedAt: clock.t,
      expiresAt: clock.t + 86_400_000,
      target: { gateways: ['gw-1'], devices },
      artifact: { name: `fw-${version}.swu`, url: 'http://127.0.0.1:1/fw.swu', size: image.length, sha256: sha(image) },
      rollout: plan,
    };
    const { manifest } = store.accept(signer.sign(m), clock.t);
    store.setState(manifest.release, 'ready');
    rollouts.start(manifest);
    return manifest;
  }

  /** Polls as the device and returns its deployment's action id and artifact path, if any. */
  async function work(device: string): Promise<{ actionId: number; artifact: string } | undefined> {
    const poll = JSON.parse((await call('GET', `/site/controller/v1/${device}`, tokenOf(device))).body) as { _links: { deploymentBase?: { href: string } } };
    const href = poll._links.deploymentBase?.href;
    if (!href) return undefined;
    const u = new URL(href);
    const dep = JSON.parse((await call('GET', u.pathname + u.search, tokenOf(device))).body) as { id: string; deployment: { chunks: Array<{ artifacts: Array<{ _links: { 'download-http': { href: string } } }> }> } };
    return { actionId: Number(dep.id), artifact: new URL(dep.deployment.chunks[0]!.artifacts[0]!._links['download-http'].href).pathname };
  }

  beforeEach(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-ddi-auth-'));
    db = openDatabase({ path: join(dir, 'db.sqlite'), synchronous: 'normal' });
    migrate(db, 'ota', [...otaMigrations, ...rolloutMigrations]);
    clock = new ManualClock();
    clock.t = Date.UTC(2026, 10, 25, 12, 0);
    store = new ReleaseStore(db, new TrustedKeys({ k1: signer.publicKeyPem }), 'gw-1');
    const cache = new ArtifactCache(join(dir, 'cache'), 1e7);
    writeFileSync(cache.partialPath(sha(image)), image);
    store.recordArtifact(await cache.commit(sha(image), image.length), clock.t);
    events = [];
    warnings = [];
    metrics = new PromMetrics();
    rollouts = new Rollouts(db, store, cache, clock, silentLogger, metrics, (e) => events.push(e));
    const auth = new DeviceAuth({ groupSecret: SECRET, tokenHashes: { 'pump-9': hashToken(OWN_TOKEN) } });
    server = new DdiServer(rollouts.deployments, { tenant: 'site', pollSeconds: 60, auth, maxTransfers: 4 }, recordingLogger(warnings), metrics, new HttpLayer(silentLogger));
    url = `http://127.0.0.1:${await server.listen('127.0.0.1', 0)}`;
  });
  afterEach(async () => {
    await server.close();
    rollouts.stop();
    db.close();
  });

  it('derives the same token as an independent implementation (base64url of HMAC-SHA256(secret, device id))', () => {
    expect(deriveDeviceToken(SECRET, 'pump-1')).toBe(groupTargetToken(SECRET, 'pump-1'));
    expect(deriveDeviceToken(SECRET, 'pump-1')).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('answers 401 without a token on every resource, counts and logs each cause once, never the token', async () => {
    const base = '/site/controller/v1/pump-1';
    const fb = { status: { execution: 'closed', result: { finished: 'success' } } };
    const attempts: Array<[string, string, Record<string, string>, unknown?]> = [
      ['GET', base, {}],
      ['GET', `${base}/deploymentBase/1`, {}],
      ['POST', `${base}/deploymentBase/1/feedback`, {}, fb],
      ['PUT', `${base}/configData`, {}, { data: { version: '0.0.1' } }],
      ['GET', `${base}/softwaremodules/1/artifacts/fw-2.0.0.swu`, {}],
      ['GET', base, { authorization: 'GatewayToken anything-at-all' }],
      ['GET', base, { authorization: 'Bearer x' }],
      ['GET', base, { authorization: 'TargetToken not-the-right-one' }],
      ['GET', base, { authorization: 'TargetToken not-the-right-one' }],
    ];
    for (const [method, path, headers, body] of attempts) expect((await call(method, path, headers, body)).status, `${method} ${path}`).toBe(401);
    expect([await refused('no-token'), await refused('bad-scheme'), await refused('wrong-token')]).toEqual([5, 2, 2]);
    expect(warnings.filter((w) => w.includes('refused'))).toHaveLength(3);
    expect(warnings.join('\n')).not.toContain('not-the-right-one');
    expect(warnings.join('\n')).not.toContain('anything-at-all');
    // Nothing registered the device.
    expect(events).toEqual([]);
  });

  it("refuses device A's token on device B's path; a device with a token of its own is not reachable by its derived token", async () => {
    expect((await call('GET', '/site/controller/v1/pump-2', tokenOf('pump-1'))).status).toBe(401);
    expect((await call('GET', '/site/controller/v1/pump-1', tokenOf('pump-1'))).status).toBe(200);
    // pump-9 is listed with its own token hash: its own token opens it, its derived one does not.
    expect((await call('GET', '/site/controller/v1/pump-9', { authorization: `TargetToken ${OWN_TOKEN}` })).status).toBe(200);
    expect((await call('GET', '/site/controller/v1/pump-9', tokenOf('pump-9'))).status).toBe(401);
    // pump-9's own token on another device's path: recognised as another device's (403).
    expect((await call('GET', '/site/controller/v1/pump-1', { authorization: `TargetToken ${OWN_TOKEN}` })).status).toBe(403);
    expect(await refused('other-device')).toBe(1);
  });

  it("refuses another device's artifact download, under its path and under the downloader's", async () => {
    await call('GET', '/site/controller/v1/pump-1', tokenOf('pump-1'));
    await call('GET', '/site/controller/v1/other-1', tokenOf('other-1'));
    release('2.0.0', { phases: [{ share: 100 }] });
    const w = (await work('pump-1'))!;
    expect((await call('GET', w.artifact, tokenOf('pump-1'))).status).toBe(200);
    // other-1 is not targeted: pump-1's artifact URL with other-1's token, and the same artifact under other-1's path.
    expect((await call('GET', w.artifact, tokenOf('other-1'))).status).toBe(401);
    expect((await call('GET', w.artifact.replace('/pump-1/', '/other-1/'), tokenOf('other-1'))).status).toBe(404);
    expect(await refused('not-offered')).toBe(1);
  });

  it('fake feedback from an unauthenticated client or another device neither halts nor advances a rollout', async () => {
    for (const d of ['pump-1', 'pump-2']) await call('GET', `/site/controller/v1/${d}`, tokenOf(d));
    const m = release('2.0.0', { phases: [{ share: 50 }, { share: 100 }], failureThreshold: 0, maxRetries: 0 });
    // Phase 1 (50 %): one of the two devices has an action.
    const offered: Array<{ device: string; actionId: number }> = [];
    for (const d of ['pump-1', 'pump-2']) {
      const w = await work(d);
      if (w) offered.push({ device: d, actionId: w.actionId });
    }
    expect(offered).toHaveLength(1);
    const first = offered[0];
    const victim = first!.device;
    const other = victim === 'pump-1' ? 'pump-2' : 'pump-1';
    const path = `/site/controller/v1/${victim}/deploymentBase/${first!.actionId}/feedback`;
    const failure = { status: { execution: 'closed', result: { finished: 'failure' } } };
    const success = { status: { execution: 'closed', result: { finished: 'success' } } };
    for (const fb of [failure, success]) {
      expect((await call('POST', path, {}, fb)).status).toBe(401);
      expect((await call('POST', path, tokenOf(other), fb)).status).toBe(401);
      // The other device on its own path, naming the victim's action: not its action.
      expect((await call('POST', `/site/controller/v1/${other}/deploymentBase/${first!.actionId}/feedback`, tokenOf(other), fb)).status).toBe(410);
    }
    const st = rollouts.status(m.release)!;
    expect([st.state, st.phase, st.phases[0]!.failed, st.phases[0]!.succeeded]).toEqual(['running', 0, 0, 0]);
    // The device's own feedback counts.
    expect((await call('POST', path, tokenOf(victim), success)).status).toBe(200);
    expect(rollouts.status(m.release)!.phases[0]!.succeeded).toBe(1);
  });

  it('a fake low version from an unauthenticated client is not taken, and is never offered a downgrade', async () => {
    await call('GET', '/site/controller/v1/pump-1', tokenOf('pump-1'));
    const old = release('2.0.0', { phases: [{ share: 100 }] });
    rollouts.command(old.release, 'pause', 1);
    release('3.0.0', { phases: [{ share: 100 }] });
    const w = (await work('pump-1'))!;
    expect((await call('POST', `/site/controller/v1/pump-1/deploymentBase/${w.actionId}/feedback`, tokenOf('pump-1'), { status: { execution: 'closed', result: { finished: 'success' } } })).status).toBe(200);
    rollouts.command(old.release, 'resume', 2);
    expect((await call('PUT', '/site/controller/v1/pump-1/configData', {}, { data: { version: '0.0.1' } })).status).toBe(401);
    expect((await call('PUT', '/site/controller/v1/pump-1/configData', tokenOf('pump-2'), { data: { version: '0.0.1' } })).status).toBe(401);
    expect(await work('pump-1')).toBeUndefined();
    expect(store.installed('pump-1', 'pump-fw')).toBe('3.0.0');
    expect(events.filter((e) => e.release === old.release && e.device === 'pump-1').map((e) => e.event)).toEqual(['superseded']);
  });
});

describe('update server: no start without device authentication', () => {
  const site = (server: Record<string, unknown>): unknown => ({
    gateway: { id: 'gw-1' },
    cloud: { url: 'mqtt://127.0.0.1:1883' },
    storage: { path: '/tmp/x.db' },
    ota: { trustedKeys: { k1: signer.publicKeyPem }, server },
  });
  const problems = (server: Record<string, unknown>): string[] => {
    try {
      parseConfig(site(server));
    } catch (err) {
      if (err instanceof ConfigError) return [...err.problems];
      throw err;
    }
    return [];
  };

  it('refuses a config without device authentication, naming the fields', () => {
    const p = problems({ port: 8081 }).join('\n');
    expect(p).toContain('ota.server');
    for (const field of ['targetTokenHashes', 'groupSecret', 'closedNetwork', 'host']) expect(p).toContain(field);
    // The section left out entirely is no different.
    expect(otaSchema.safeParse({ trustedKeys: { k1: signer.publicKeyPem } }).success).toBe(false);
  });

  it('on a closed network needs one named address, never every interface, and is not mixed with tokens', () => {
    expect(problems({ closedNetwork: true }).join('\n')).toMatch(/ota\.server\.host: .*named address/);
    expect(problems({ closedNetwork: true, host: '0.0.0.0' }).join('\n')).toMatch(/ota\.server\.host/);
    expect(problems({ closedNetwork: true, host: '::' }).join('\n')).toMatch(/ota\.server\.host/);
    expect(problems({ closedNetwork: true, host: '10.0.7.1' })).toEqual([]);
    expect(problems({ closedNetwork: true, host: '10.0.7.1', groupSecret: SECRET }).join('\n')).toContain('ota.server.closedNetwork');
  });

  it('with authentication listens on every interface by default; old clear-token fields are named', () => {
    const ok = otaSchema.parse({ trustedKeys: { k1: signer.publicKeyPem }, server: { groupSecret: SECRET } });
    expect([ok.server.host, ok.server.closedNetwork]).toEqual(['0.0.0.0', false]);
    expect(problems({ targetTokenHashes: { 'pump-1': 'abc' } }).join('\n')).toContain('ota.server.targetTokenHashes.pump-1');
    expect(problems({ groupSecret: SECRET, targetTokens: { 'pump-1': 'secret-in-clear' } }).join('\n')).toContain('ota.server.targetTokens: tokens in clear');
    expect(problems({ groupSecret: SECRET, gatewayToken: 'one-for-all' }).join('\n')).toContain('ota.server.gatewayToken');
  });

  it('the server itself refuses to listen on a wildcard address without authentication', async () => {
    const s = new DdiServer(
      { offer: () => undefined, cancellation: () => undefined, feedback: () => false, cancelFeedback: () => false, configData: () => undefined, artifact: () => undefined },
      { tenant: 'site', pollSeconds: 60, auth: 'closed-network', maxTransfers: 1 },
      silentLogger,
      new PromMetrics(),
      new HttpLayer(silentLogger),
    );
    await expect(s.listen('0.0.0.0', 0)).rejects.toThrow(/named address/);
    await s.close();
  });
});
