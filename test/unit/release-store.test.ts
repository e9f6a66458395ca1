import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../runtime/contracts/index.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { ArtifactCache } from '../../ota/artifact-cache.js';
import { ManifestRefused, TrustedKeys } from '../../ota/manifest.js';
import { LinkBudget } from '../../cloud-bridge/link-budget.js';
import { ReleaseFetcher } from '../../ota/release-fetcher.js';
import { fetchArtifact } from '../../cloud-bridge/artifact-fetch.js';
import type { ArtifactLink } from '../../runtime/contracts/index.js';
import { otaMigrations, ReleaseStore } from '../../ota/release-store.js';
import { migrate, openDatabase, type Db } from '../../runtime/store/database.js';
import { ArtifactOrigin } from '../../sim/ota/artifact-origin.js';
import { ReleaseSigner } from '../../sim/ota/release-signer.js';
import { silentLogger } from '../helpers/fakes.js';
import { waitFor } from '../helpers/wait.js';

const NOW = Date.UTC(2026, 10, 25);
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

interface Art {
  name: string;
  url: string;
  size: number;
  sha256: string;
}

function manifest(version: string, artifact: Art, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    release: `pump-fw-${version}`,
    product: 'pump-fw',
    version,
    issuedAt: NOW,
    expiresAt: NOW + 30 * 86_400_000,
    target: { gateways: ['gw-1'], devices: ['pump-*'] },
    artifact,
    rollout: { phases: [{ share: 10 }, { share: 100 }] },
    ...over,
  };
}

const dummy: Art = { name: 'fw.swu', url: 'http://127.0.0.1:1/fw.swu', size: 10, sha256: 'a'.repeat(64) };

function reason(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    if (err instanceof ManifestRefused) return err.reason;
    throw err;
  }
  return 'accepted';
}

describe('release intake', () => {
  const signer = ReleaseSigner.generate('k1');
  let db: Db;
  let store: ReleaseStore;
  beforeEach(() => {
    db = openDatabase({ path: ':memory:', synchronous: 'normal' });
    migrate(db, 'ota', otaMigrations);
    store = new ReleaseStore(db, new TrustedKeys({ k1: signer.publicKeyPem }), 'gw-1');
  });

  it('accepts a release once; the same envelope again is known, a changed one under its name is a conflict', () => {
    const env = signer.sign(manifest('2.0.0', dummy));
    expect(store.accept(env, NOW).known).toBe(false);
    expect(store.accept(env, NOW).known).toBe(true);
    expect(reason(() => store.accept(signer.sign(manifest('2.0.0', { ...dummy, size: 11 })), NOW))).toBe('conflict');
    expect(reason(() => store.accept(signer.sign(manifest('2.0.0', dummy, { release: 'other-name' })), NOW))).toBe('conflict');
    expect(store.list().map((r) => [r.manifest.release, r.state])).toEqual([['pump-fw-2.0.0', 'fetching']]);
  });

  it('refuses a release older than one already accepted for its product (anti-rollback)', () => {
    store.accept(signer.sign(manifest('2.1.0', dummy)), NOW);
    expect(reason(() => store.accept(signer.sign(manifest('2.0.9', dummy)), NOW))).toBe('rollback');
    expect(reason(() => store.accept(signer.sign(manifest('2.2.0-rc.1', dummy)), NOW))).toBe('accepted');
    expect(reason(() => store.accept(signer.sign(manifest('1.0.0', dummy, { product: 'valve-fw' })), NOW))).toBe('accepted');
  });

  it('refuses a release older than what a targeted device runs, not one a device outside the target runs', () => {
    store.setInstalled('pump-7', 'pump-fw', '3.0.0', NOW);
    store.setInstalled('valve-1', 'pump-fw', '9.0.0', NOW);
    const e = (() => {
      try {
        store.accept(signer.sign(manifest('2.5.0', dummy)), NOW);
      } catch (err) {
        return err as ManifestRefused;
      }
      throw new Error('accepted');
    })();
    expect(e.reason).toBe('rollback');
    expect(e.message).toContain('3.0.0 installed on pump-7');
    expect(reason(() => store.accept(signer.sign(manifest('3.1.0', dummy)), NOW))).toBe('accepted');
  });

  it('skips, and reports once, a stored release whose key was removed from the config', () => {
    store.accept(signer.sign(manifest('2.0.0', dummy)), NOW);
    const other = new ReleaseStore(db, new TrustedKeys({ k2: ReleaseSigner.generate('k2').publicKeyPem }), 'gw-1');
    const told: string[] = [];
    other.onUntrusted = (release) => told.push(release);
    expect(other.list()).toEqual([]);
    expect(other.list()).toEqual([]);
    expect(told).toEqual(['pump-fw-2.0.0']);
  });

  it('refuses unsigned and badly signed releases without storing anything', () => {
    const env = signer.sign(manifest('2.0.0', dummy));
    expect(reason(() => store.accept({ payload: env.payload }, NOW))).toBe('unsigned');
    expect(reason(() => store.accept(ReleaseSigner.generate('k1').sign(manifest('2.0.0', dummy)), NOW))).toBe('bad-signature');
    expect(store.list()).toEqual([]);
  });
});

describe('release fetcher', () => {
  const signer = ReleaseSigner.generate('k1');
  let dir: string;
  let origin: ArtifactOrigin;
  let db: Db;
  let store: ReleaseStore;
  let cache: ArtifactCache;
  let spent = 0;
  let closedFor = 0;
  let closeAfter = Infinity;
  // Closed while closedFor > 0, or once closeAfter bytes went over the link.
  const gate: ArtifactLink = { download: fetchArtifact, delayMs: () => (spent >= closeAfter ? 60_000 : closedFor), closed: () => spent >= closeAfter || closedFor > 0, spend: (n) => void (spent += n) };
  const fetchers: ReleaseFetcher[] = [];
  const fetcher = (opts: ConstructorParameters<typeof ReleaseFetcher>[6] = {}): ReleaseFetcher => {
    const f = new ReleaseFetcher(store, cache, gate, systemClock, silentLogger, new PromMetrics(), { backoff: { initialMs: 5, maxMs: 20 }, ...opts });
    fetchers.push(f);
    return f;
  };

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'outpost-fetch-'));
    origin = await new ArtifactOrigin().start();
    db = openDatabase({ path: join(dir, 'db.sqlite'), synchronous: 'normal' });
    migrate(db, 'ota', otaMigrations);
    store = new ReleaseStore(db, new TrustedKeys({ k1: signer.publicKeyPem }), 'gw-1');
    cache = new ArtifactCache(join(dir, 'cache'), 10_000_000);
    spent = 0;
    closedFor = 0;
    closeAfter = Infinity;
  });
  afterEach(async () => {
    await Promise.all(fetchers.splice(0).map((f) => f.stop()));
    await origin.stop();
    db.close();
  });

  function release(version: string, full: Buffer, delta?: Buffer): Record<string, unknown> {
    const art = (name: string, b: Buffer): Art => ({ name, url: origin.put(`/a/${name}`, b), size: b.length, sha256: sha(b) });
    return manifest(version, art(`fw-${version}.swu`, full), delta ? { deltas: [{ from: '1.0.0', artifact: art(`fw-1.0.0-${version}.swu`, delta) }] } : {});
  }

  it('fetches every artifact once across broken transfers, verifies them and marks the release ready', async () => {
    const full = randomBytes(400_000);
    const delta = randomBytes(40_000);
    store.accept(signer.sign(release('2.0.0', full, delta)), NOW);
    origin.breakNext(3, 100_000);
    const ready: string[] = [];
    fetcher({ onReady: (m) => ready.push(m.release) }).start();
    await waitFor('the release to be ready', () => ready.length === 1, 10_000);
    expect(store.get('pump-fw-2.0.0')!.state).toBe('ready');
    // Each byte crossed the cloud link once, although three transfers broke.
    expect(origin.bytesSent).toBe(full.length + delta.length);
    expect(spent).toBe(full.length + delta.length);
    expect(store.artifact(sha(full))!.sha1).toBe(createHash('sha1').update(full).digest('hex'));
    expect(readdirSync(join(dir, 'cache', 'blobs')).sort()).toEqual([sha(full), sha(delta)].sort());
  });

  it('continues after a restart from the bytes already on disk', async () => {
    const full = randomBytes(600_000);
    store.accept(signer.sign(release('2.0.0', full)), NOW);
    origin.stallNext(1, 250_000);
    const first = fetcher();
    first.start();
    await waitFor('250,000 bytes on disk', () => cache.partialBytes(sha(full)) === 250_000, 5000);
    await first.stop();
    // A new gateway process: new store, cache and fetcher over the same files.
    expect(origin.requests).toHaveLength(1);
    const ready: string[] = [];
    cache = new ArtifactCache(join(dir, 'cache'), 10_000_000);
    fetcher({ onReady: (m) => ready.push(m.release) }).start();
    await waitFor('the release to be ready', () => ready.length === 1, 10_000);
    expect(origin.bytesSent).toBe(full.length);
    expect(origin.requests.at(-1)!.range).toBe('bytes=250000-');
  });

  it('stops a running transfer when the link closes for downloads, and resumes it with a Range request when it opens', async () => {
    const full = randomBytes(2_000_000);
    store.accept(signer.sign(release('2.0.0', full)), NOW);
    closeAfter = 700_000;
    const ready: string[] = [];
    const metrics = new PromMetrics();
    const f = new ReleaseFetcher(store, cache, gate, systemClock, silentLogger, metrics, { backoff: { initialMs: 5, maxMs: 20 }, onReady: (m) => ready.push(m.release) });
    fetchers.push(f);
    f.start();
    await waitFor('the transfer paused', async () => (await metrics.total('outpost_ota_fetches_total')) === 1, 5000);
    const have = cache.partialBytes(sha(full));
    // What crossed the link counts, also the chunk that crossed the limit (not written).
    expect(spent).toBeGreaterThanOrEqual(700_000);
    expect(have).toBeLessThan(700_000);
    expect(have).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 200));
    // Paused, not retrying.
    expect(origin.requests).toHaveLength(1);
    expect(cache.partialBytes(sha(full))).toBe(have);
    closeAfter = Infinity;
    f.wake();
    await waitFor('the release to be ready', () => ready.length === 1, 5000);
    expect(origin.requests.map((r) => r.range)).toEqual([undefined, `bytes=${have}-`]);
    expect(store.get('pump-fw-2.0.0')!.state).toBe('ready');
  });

  it('keeps what arrived when a low rate cap stops a transfer, so each attempt makes progress', async () => {
    const full = randomBytes(1_000_000);
    store.accept(signer.sign(release('2.0.0', full)), NOW);
    // A cap so low that each chunk puts the link 20 s in debt (a few kB/s).
    let debtUntil = 0;
    const slow: ArtifactLink = {
      download: fetchArtifact,
      delayMs: () => Math.max(0, debtUntil - Date.now()),
      closed: () => false,
      spend: () => void (debtUntil = Date.now() + 20_000),
    };
    const metrics = new PromMetrics();
    const ready: string[] = [];
    const f = new ReleaseFetcher(store, cache, slow, systemClock, silentLogger, metrics, { onReady: (m) => ready.push(m.release) });
    fetchers.push(f);
    f.start();
    await waitFor('the transfer paused', async () => (await metrics.total('outpost_ota_fetches_total')) === 1, 5000);
    const have = cache.partialBytes(sha(full));
    expect(have).toBeGreaterThan(0);
    debtUntil = 0;
    slow.spend = () => undefined;
    f.wake();
    await waitFor('the release to be ready', () => ready.length === 1, 5000);
    expect(origin.requests.map((r) => r.range)).toEqual([undefined, `bytes=${have}-`]);
  });

  it('fails a release whose origin file is shorter than the manifest says, instead of retrying for ever', async () => {
    const full = randomBytes(400_000);
    const m = release('2.0.0', full);
    origin.put('/a/fw-2.0.0.swu', full.subarray(0, 300_000));
    store.accept(signer.sign(m), NOW);
    const failed: string[] = [];
    fetcher({ onFailed: (_m, why, detail) => failed.push(`${why}: ${detail}`) }).start();
    await waitFor('the release to fail', () => failed.length === 1, 5000);
    expect(failed[0]).toMatch(/^origin-refused: fw-2.0.0.swu: origin's file is 300000 bytes, the manifest says 400000/);
    // Resuming a partial file that the origin cannot complete: 416, refused as well.
    store.setState('pump-fw-2.0.0', 'fetching');
    writeFileSync(cache.partialPath(sha(full)), full.subarray(0, 350_000));
    failed.length = 0;
    fetcher({ onFailed: (_m, why, detail) => failed.push(`${why}: ${detail}`) }).start();
    await waitFor('the release to fail again', () => failed.length === 1, 5000);
    expect(failed[0]).toMatch(/origin has no bytes from 350000 on \(its file is 300000 bytes\), the manifest says 400000/);
  });

  it('holds a transfer to the link rate cap', async () => {
    const full = randomBytes(400_000);
    store.accept(signer.sign(release('2.0.0', full)), NOW);
    const budget = new LinkBudget({ maxBytesPerS: 200_000 }, systemClock);
    let waits = 0;
    const capped: ArtifactLink = {
      download: fetchArtifact,
      delayMs: () => {
        const d = budget.delayFor(1);
        if (d > 0) waits++;
        return d;
      },
      closed: () => false,
      spend: (n) => budget.spend(n),
    };
    const ready: string[] = [];
    const f = new ReleaseFetcher(store, cache, capped, systemClock, silentLogger, new PromMetrics(), { onReady: (m) => ready.push(m.release) });
    fetchers.push(f);
    const t0 = Date.now();
    f.start();
    await waitFor('the release to be ready', () => ready.length === 1, 10_000);
    // 200,000 bytes of burst, then 200,000 more at 200,000 B/s: it cannot take less than a second.
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    expect(waits).toBeGreaterThan(0);
    // Throttled in the transfer: one request, no restarts.
    expect(origin.requests).toHaveLength(1);
  });

  it('fails a release whose artifact never matches its digest, and keeps nothing of it', async () => {
    const full = randomBytes(30_000);
    const m = release('2.0.0', full);
    (m.artifact as Art).sha256 = sha(Buffer.from('other'));
    store.accept(signer.sign(m), NOW);
    const failed: string[] = [];
    fetcher({ maxMismatches: 2, onFailed: (_m, why) => failed.push(why) }).start();
    await waitFor('the release to fail', () => failed.length === 1, 10_000);
    expect(failed).toEqual(['artifact-mismatch']);
    expect(store.get('pump-fw-2.0.0')!.state).toBe('failed');
    expect(readdirSync(join(dir, 'cache', 'blobs'))).toEqual([]);
    expect(readdirSync(join(dir, 'cache', 'partial'))).toEqual([]);
  });

  it('waits while the link gate is closed (sync window, budget) and fetches when woken', async () => {
    const full = randomBytes(10_000);
    store.accept(signer.sign(release('2.0.0', full)), NOW);
    closedFor = 60_000;
    const ready: string[] = [];
    const f = fetcher({ onReady: (m) => ready.push(m.release) });
    f.start();
    await new Promise((r) => setTimeout(r, 200));
    expect(origin.requests).toEqual([]);
    closedFor = 0;
    f.wake();
    await waitFor('the release to be ready', () => ready.length === 1, 5000);
  });

  it('fails a release the cache quota cannot hold', async () => {
    cache = new ArtifactCache(join(dir, 'small'), 1000);
    store.accept(signer.sign(release('2.0.0', randomBytes(5000))), NOW);
    const failed: string[] = [];
    fetcher({ onFailed: (_m, why, detail) => failed.push(`${why}: ${detail}`) }).start();
    await waitFor('the release to fail', () => failed.length === 1, 5000);
    expect(failed[0]).toMatch(/^cache-full: artifact cache quota 1000 bytes/);
    expect(origin.requests).toEqual([]);
  });
});
