import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { PromMetrics } from '../../runtime/metrics.js';
import { ArtifactCache } from '../../ota/artifact-cache.js';
import type { DdiFeedback } from '../../ota/ddi/server.js';
import { TrustedKeys, type Manifest } from '../../ota/manifest.js';
import { otaMigrations, ReleaseStore } from '../../ota/release-store.js';
import { rolloutMigrations, Rollouts, type OtaEvent } from '../../ota/rollout.js';
import { migrate, openDatabase, type Db } from '../../runtime/store/database.js';
import { ReleaseSigner } from '../../sim/ota/release-signer.js';
import { ManualClock, silentLogger } from '../helpers/fakes.js';

const signer = ReleaseSigner.generate('k1');
const closed = (finished: 'success' | 'failure'): DdiFeedback => ({ status: { execution: 'closed', result: { finished } } });
const proceeding: DdiFeedback = { status: { execution: 'proceeding', result: { finished: 'none' } } };

describe('rollouts', () => {
  let dir: string;
  let db: Db;
  let clock: ManualClock;
  let store: ReleaseStore;
  let cache: ArtifactCache;
  let events: OtaEvent[];
  let rollouts: Rollouts;
  const full = randomBytes(2000);
  const delta = randomBytes(200);
  const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

  const open = (): Rollouts => new Rollouts(db, store, cache, clock, silentLogger, new PromMetrics(), (e) => events.push(e));

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'outpost-rollout-'));
    db = openDatabase({ path: join(dir, 'db.sqlite'), synchronous: 'normal' });
    migrate(db, 'ota', [...otaMigrations, ...rolloutMigrations]);
    clock = new ManualClock();
    clock.t = Date.UTC(2026, 10, 25, 12, 0);
    store = new ReleaseStore(db, new TrustedKeys({ k1: signer.publicKeyPem }), 'gw-1');
    cache = new ArtifactCache(join(dir, 'cache'), 1e7);
    for (const b of [full, delta]) {
      writeFileSync(cache.partialPath(sha(b)), b);
      store.recordArtifact(await cache.commit(sha(b), b.length), clock.t);
    }
    events = [];
    rollouts = open();
  });

  function release(version: string, plan: Record<string, unknown> = {}, target = ['pump-*'], expiresAt = clock.t + 30 * 86_400_000): Manifest {
    const art = (name: string, b: Buffer): Record<string, unknown> => ({ name, url: `http://127.0.0.1:1/${name}`, size: b.length, sha256: sha(b) });
    const m = {
      release: `pump-fw-${version}`,
      product: 'pump-fw',
      version,
      issuedAt: clock.t,
      expiresAt,
      target: { gateways: ['gw-1'], devices: target },
      artifact: art(`fw-${version}.swu`, full),
      deltas: [{ from: '1.0.0', artifact: art(`fw-1.0.0-${version}.swu`, delta) }],
      rollout: { phases: [{ share: 10, waitMs: 60_000 }, { share: 50, waitMs: 60_000 }, { share: 100 }], failureThreshold: 0.2, maxRetries: 1, ...plan },
    };
    const { manifest } = store.accept(signer.sign(m), clock.t);
    store.setState(manifest.release, 'ready');
    return manifest;
  }

  const devices = (n: number): string[] => Array.from({ length: n }, (_, i) => `pump-${String(i).padStart(2, '0')}`);
  /** Every device polls; those with work get their action id. */
  const poll = (ds: readonly string[]): Map<string, number> => {
    const got = new Map<string, number>();
    for (const d of ds) {
      const o = rollouts.deployments.offer(d);
      if (o) got.set(d, o.actionId);
    }
    return got;
  };

  it('goes phase by phase (10 %, 50 %, 100 %) with waits, never offers a succeeded device again, and records installed versions', async () => {
    const ds = devices(20);
    poll(ds); // the devices register by polling
    const m = release('2.0.0');
    rollouts.start(m);
    const offeredPerPhase: number[] = [];
    const everSucceeded = new Set<string>();
    for (let phase = 0; phase < 3; phase++) {
      const offers = poll(ds);
      for (const d of offers.keys()) expect(everSucceeded.has(d)).toBe(false);
      offeredPerPhase.push(offers.size);
      for (const [d, id] of offers) {
        expect(rollouts.deployments.feedback(d, id, proceeding)).toBe(true);
        expect(rollouts.deployments.feedback(d, id, closed('success'))).toBe(true);
        everSucceeded.add(d);
      }
      // Within the wait nothing new is offered.
      expect(poll(ds).size).toBe(0);
      await clock.advance(60_000);
    }
    expect(offeredPerPhase).toEqual([2, 8, 10]);
    expect(rollouts.status(m.release)!.state).toBe('done');
    expect(rollouts.status(m.release)!.phases.map((p) => [p.devices, p.succeeded, p.failed])).toEqual([[2, 2, 0], [8, 8, 0], [10, 10, 0]]);
    expect(store.installed('pump-00', 'pump-fw')).toBe('2.0.0');
    expect(events.filter((e) => e.event === 'phase')).toHaveLength(2);
    expect(events.at(-1)!.event).toBe('done');
  });

  it('halts a bad release in its first phase; later phases are never offered', async () => {
    const ds = devices(20);
    poll(ds);
    const m = release('2.0.0', { phases: [{ share: 25 }, { share: 100 }], failureThreshold: 0.2, maxRetries: 1 });
    rollouts.start(m);
    let offered = new Set<string>();
    for (let round = 0; round < 3; round++) {
      const offers = poll(ds);
      for (const [d, id] of offers) {
        offered.add(d);
        rollouts.deployments.feedback(d, id, closed('failure'));
      }
      await clock.advance(1000);
    }
    const s = rollouts.status(m.release)!;
    expect(s.state).toBe('halted');
    expect(s.detail).toMatch(/^phase 1: \d+ of 5 devices failed \(threshold 20 %\)$/);
    expect(offered.size).toBeLessThanOrEqual(5);
    expect(s.phases[1]!.succeeded + s.phases[1]!.failed + s.phases[1]!.active).toBe(0);
    // Halted: nobody starts, even after a long time.
    await clock.advance(3600_000);
    offered = new Set(poll(ds).keys());
    expect(offered.size).toBe(0);
  });

  it('retries a failed device up to maxRetries with a new action id; the retry can succeed', () => {
    poll(['pump-1']);
    const m = release('2.0.0', { phases: [{ share: 100 }], maxRetries: 2 });
    rollouts.start(m);
    const first = rollouts.deployments.offer('pump-1')!;
    rollouts.deployments.feedback('pump-1', first.actionId, closed('failure'));
    const second = rollouts.deployments.offer('pump-1')!;
    expect(second.actionId).not.toBe(first.actionId);
    // Feedback for the old action is refused.
    expect(rollouts.deployments.feedback('pump-1', first.actionId, closed('success'))).toBe(false);
    rollouts.deployments.feedback('pump-1', second.actionId, closed('success'));
    expect(rollouts.deployments.offer('pump-1')).toBeUndefined();
    expect(rollouts.status(m.release)!.state).toBe('done');
  });

  it('offers the delta to a device on its from-version, the full image to the others', () => {
    poll(['pump-a', 'pump-b']);
    store.setInstalled('pump-a', 'pump-fw', '1.0.0', clock.t);
    rollouts.start(release('2.0.0', { phases: [{ share: 100 }] }));
    expect(rollouts.deployments.offer('pump-a')!.artifact.sha256).toBe(sha(delta));
    expect(rollouts.deployments.offer('pump-b')!.artifact.sha256).toBe(sha(full));
    const a = rollouts.deployments.offer('pump-a')!.artifact;
    expect(rollouts.deployments.artifact('pump-a', a.moduleId, a.filename)!.size).toBe(delta.length);
    // Another device's artifact, or a name it was not offered under: not served.
    expect(rollouts.deployments.artifact('pump-b', a.moduleId, a.filename)).toBeUndefined();
    expect(rollouts.deployments.artifact('pump-a', a.moduleId, '../../etc/passwd')).toBeUndefined();
  });

  it('pause stops new offers, resume continues, abort cancels devices at work', async () => {
    poll(['pump-1', 'pump-2']);
    const m = release('2.0.0', { phases: [{ share: 100 }] });
    rollouts.start(m);
    const o1 = rollouts.deployments.offer('pump-1')!;
    rollouts.deployments.feedback('pump-1', o1.actionId, proceeding);
    expect(rollouts.pause(m.release)).toBe(true);
    expect(rollouts.deployments.offer('pump-2')).toBeUndefined();
    // pump-1 keeps its action while paused.
    expect(rollouts.deployments.offer('pump-1')!.actionId).toBe(o1.actionId);
    expect(rollouts.resume(m.release)).toBe(true);
    expect(rollouts.deployments.offer('pump-2')).toBeDefined();
    expect(rollouts.abort(m.release)).toBe(true);
    expect(rollouts.deployments.offer('pump-1')).toBeUndefined();
    expect(rollouts.deployments.cancellation('pump-1')).toBe(o1.actionId);
    expect(rollouts.deployments.cancelFeedback('pump-1', o1.actionId, { status: { execution: 'canceled', result: { finished: 'success' } } })).toBe(true);
    expect(rollouts.deployments.cancellation('pump-1')).toBeUndefined();
    expect(rollouts.status(m.release)!.state).toBe('aborted');
    expect(events.map((e) => e.event)).toEqual(expect.arrayContaining(['paused', 'resumed', 'aborted', 'cancel-canceled']));
    // pump-2 never confirms its cancellation (an agent without cancel support): after an hour the
    // gateway closes it, so the device can get other work.
    const o2 = rollouts.deployments.cancellation('pump-2')!;
    expect(o2).toBeDefined();
    await clock.advance(59 * 60_000);
    expect(rollouts.deployments.cancellation('pump-2')).toBe(o2);
    await clock.advance(60_000);
    expect(rollouts.deployments.cancellation('pump-2')).toBeUndefined();
    expect(events.at(-1)).toMatchObject({ device: 'pump-2', event: 'cancel-expired' });
    const next = release('2.1.0', { phases: [{ share: 100 }] });
    rollouts.start(next);
    expect(rollouts.deployments.offer('pump-2')!.version).toBe('2.1.0');
  });

  it('offers work only inside the maintenance window (node-cron)', async () => {
    poll(['pump-1']);
    // 12:00 UTC now; the window is the 02:00–02:59 hour of the gateway's local time.
    const hour = new Date(clock.t).getHours();
    rollouts.start(release('2.0.0', { phases: [{ share: 100 }], maintenanceWindow: `* ${(hour + 14) % 24} * * *` }));
    expect(rollouts.deployments.offer('pump-1')).toBeUndefined();
    await clock.advance(14 * 3600_000);
    expect(rollouts.deployments.offer('pump-1')).toBeDefined();
  });

  it('continues after a restart from its tables, and a late device joins the running phase', async () => {
    const ds = devices(10);
    poll(ds);
    const m = release('2.0.0', { phases: [{ share: 50, waitMs: 1000 }, { share: 100 }] });
    rollouts.start(m);
    for (const [d, id] of poll(ds)) rollouts.deployments.feedback(d, id, closed('success'));
    // A new process: new Rollouts over the same database.
    rollouts = open();
    rollouts.resumeAll();
    await clock.advance(1000);
    const second = poll([...ds, 'pump-late']);
    expect(second.size).toBe(6);
    expect(second.has('pump-late')).toBe(true);
  });

  it('stop() clears phase waits, so nothing touches the store after it closed', async () => {
    const ds = devices(4);
    poll(ds);
    const m = release('2.0.0', { phases: [{ share: 50, waitMs: 60_000 }, { share: 100 }] });
    rollouts.start(m);
    for (const [d, id] of poll(ds)) rollouts.deployments.feedback(d, id, closed('success'));
    rollouts.stop();
    db.close();
    await expect(clock.advance(120_000)).resolves.toBeUndefined();
  });

  it('keeps at most maxDevices devices: one beyond gets no work, and it is counted', async () => {
    const metrics = new PromMetrics();
    rollouts = new Rollouts(db, store, cache, clock, silentLogger, metrics, (e) => events.push(e), 3);
    rollouts.start(release('2.0.0', { phases: [{ share: 100 }] }));
    expect(poll(['pump-1', 'pump-2', 'pump-3', 'pump-4']).size).toBe(3);
    expect(rollouts.deployments.offer('pump-4')).toBeUndefined();
    expect(await metrics.total('outpost_ota_devices_refused_total')).toBe(2);
  });

  it('never downgrades: a device that got a newer release of the product is skipped by the older rollout', async () => {
    const ds = devices(10);
    poll(ds);
    const older = release('2.0.0', { phases: [{ share: 10, waitMs: 60_000 }, { share: 100 }], failureThreshold: 0.5, maxRetries: 0 });
    rollouts.start(older);
    for (const [d, id] of poll(ds)) rollouts.deployments.feedback(d, id, closed('success'));
    // 2.1.0 arrives during 2.0.0's wait and reaches every device.
    const newer = release('2.1.0', { phases: [{ share: 100 }], failureThreshold: 0.5, maxRetries: 0 });
    rollouts.start(newer);
    for (const [d, id] of poll(ds)) rollouts.deployments.feedback(d, id, closed('success'));
    expect(rollouts.status(newer.release)!.state).toBe('done');
    await clock.advance(60_000);
    // 2.0.0's second phase: no device is offered 2.0.0 again.
    expect(poll(ds).size).toBe(0);
    expect(rollouts.status(older.release)!.state).toBe('done');
    for (const d of ds) expect(store.installed(d, 'pump-fw')).toBe('2.1.0');
    expect(events.filter((e) => e.event === 'superseded')).toHaveLength(9);
  });

  it('uses the version a device reports (configData): the delta for it, nothing for a device on the same or a newer version', () => {
    poll(['pump-a', 'pump-b', 'pump-c', 'pump-d']);
    rollouts.deployments.configData('pump-a', { version: '1.0.0' });
    rollouts.deployments.configData('pump-b', { version: '2.0.0' });
    rollouts.deployments.configData('pump-c', { version: '3.1.0' });
    rollouts.deployments.configData('pump-d', { version: 'not a version' });
    rollouts.start(release('2.0.0', { phases: [{ share: 100 }], failureThreshold: 0.5, maxRetries: 0 }));
    expect(rollouts.deployments.offer('pump-a')!.artifact.sha256).toBe(sha(delta));
    expect(rollouts.deployments.offer('pump-b')).toBeUndefined();
    expect(rollouts.deployments.offer('pump-c')).toBeUndefined();
    expect(rollouts.deployments.offer('pump-d')!.artifact.sha256).toBe(sha(full));
    expect(events.filter((e) => e.event === 'already-installed').map((e) => e.device)).toEqual(['pump-b']);
    expect(events.filter((e) => e.event === 'superseded').map((e) => e.device)).toEqual(['pump-c']);
    // pump-a installs 2.0.0 without reporting again: its reported 1.0.0 is out of date, and a
    // later release does not offer it the delta from 1.0.0.
    const a = rollouts.deployments.offer('pump-a')!;
    rollouts.deployments.feedback('pump-a', a.actionId, closed('success'));
    const m2 = release('2.1.0', { phases: [{ share: 100 }], failureThreshold: 0.5, maxRetries: 0 });
    rollouts.start(m2);
    expect(rollouts.deployments.offer('pump-a')!.artifact.sha256).toBe(sha(full));
    expect(rollouts.deployments.offer('pump-b')!.version).toBe('2.1.0');
  });

  it('resumes a halted rollout: the failures so far are accepted and the next phase opens', () => {
    const ds = devices(10);
    poll(ds);
    const m = release('2.0.0', { phases: [{ share: 20 }, { share: 100 }], failureThreshold: 0.2, maxRetries: 0 });
    rollouts.start(m);
    for (const [d, id] of poll(ds)) rollouts.deployments.feedback(d, id, closed('failure'));
    expect(rollouts.status(m.release)!.state).toBe('halted');
    expect(rollouts.resume(m.release)).toBe(true);
    expect(rollouts.status(m.release)!.state).toBe('running');
    const next = poll(ds);
    expect(next.size).toBe(8);
    // New failures in the next phase count against its threshold again.
    const ids = [...next];
    for (const [d, id] of ids.slice(0, 2)) rollouts.deployments.feedback(d, id, closed('failure'));
    expect(rollouts.status(m.release)!.state).toBe('halted');
  });

  it('keeps a pause for a release still downloading and starts its rollout paused; an abort ends the release at once', () => {
    const ds = devices(4);
    poll(ds);
    const a = release('2.0.0', { phases: [{ share: 100 }], failureThreshold: 0.5, maxRetries: 0 });
    store.setState(a.release, 'fetching');
    expect(rollouts.command(a.release, 'pause', 1000)).toEqual({ applied: true, state: 'not-started' });
    // The same retained command again: applied once.
    expect(rollouts.command(a.release, 'pause', 1000)).toEqual({ applied: false, state: 'not-started' });
    rollouts.start(a);
    expect(rollouts.status(a.release)!.state).toBe('paused');
    expect(poll(ds).size).toBe(0);
    expect(rollouts.command(a.release, 'resume', 2000).state).toBe('running');
    expect(poll(ds).size).toBe(4);
    const b = release('2.1.0', { phases: [{ share: 100 }], failureThreshold: 0.5, maxRetries: 0 });
    store.setState(b.release, 'fetching');
    expect(rollouts.command(b.release, 'abort')).toEqual({ applied: true, state: 'aborted' });
    expect(store.get(b.release)!.state).toBe('aborted');
    expect(rollouts.command('no-such-release', 'pause')).toEqual({ applied: false, state: undefined });
  });

  it('does not start a release that expired while its artifacts were downloading', () => {
    poll(devices(2));
    const m = release('2.0.0', { phases: [{ share: 100 }] }, ['pump-*'], clock.t + 60_000);
    clock.t += 60_000;
    rollouts.start(m);
    expect(rollouts.status(m.release)).toBeUndefined();
    expect(store.get(m.release)!.state).toBe('aborted');
    expect(poll(devices(2)).size).toBe(0);
    expect(events.at(-1)!.event).toBe('expired');
  });

  it('an expiring rollout starts no new device: devices at work finish, the others are cancelled, then the release is done', async () => {
    const ds = devices(10);
    poll(ds);
    const m = release('2.0.0', { phases: [{ share: 20, waitMs: 0 }, { share: 100 }], failureThreshold: 0.5, maxRetries: 0 }, ['pump-*'], clock.t + 3_600_000);
    rollouts.start(m);
    const first = poll(ds);
    expect(first.size).toBe(2);
    const [busy, busyId] = [...first][0]!;
    const [done, doneId] = [...first][1]!;
    rollouts.deployments.feedback(done, doneId, closed('success'));
    rollouts.deployments.feedback(busy, busyId, proceeding);
    await clock.advance(3_600_000);
    const st = rollouts.status(m.release)!;
    expect(st.state).toBe('expired');
    // Only the device at work still gets its action; nobody else gets anything.
    const after = poll(ds);
    expect([...after.keys()]).toEqual([busy]);
    expect(store.get(m.release)!.state).toBe('ready');
    expect(rollouts.deployments.feedback(busy, busyId, closed('success'))).toBe(true);
    expect(store.get(m.release)!.state).toBe('done');
    expect(rollouts.status(m.release)!.phases.reduce((n, p) => n + p.succeeded, 0)).toBe(2);
    expect(poll(ds).size).toBe(0);
    expect(events.some((e) => e.event === 'expired')).toBe(true);
  });

  it('never offers a downgrade on a report of a lower version: the floor is the install the gateway recorded', () => {
    poll(['pump-1']);
    const old = release('2.0.0', { phases: [{ share: 100 }] });
    const newer = release('3.0.0', { phases: [{ share: 100 }] });
    rollouts.command(old.release, 'pause', 1);
    rollouts.start(old);
    rollouts.start(newer);
    const o = rollouts.deployments.offer('pump-1')!;
    expect(o.version).toBe('3.0.0');
    rollouts.deployments.feedback('pump-1', o.actionId, closed('success'));
    expect(store.installed('pump-1', 'pump-fw')).toBe('3.0.0');
    // The device (or anyone speaking for it) now says it runs 1.0.0, and 2.0.0 resumes.
    rollouts.deployments.configData('pump-1', { version: '1.0.0' });
    rollouts.command(old.release, 'resume', 2);
    expect(rollouts.deployments.offer('pump-1')).toBeUndefined();
    expect(events.filter((e) => e.release === old.release && e.device === 'pump-1').map((e) => [e.event, e.details])).toEqual([['superseded', ['runs 3.0.0']]]);
  });
});

