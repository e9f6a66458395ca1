import { createHash } from 'node:crypto';
import { withStatementCache, type Clock, type Counter, type Db, type Logger, type Metrics, type TimerHandle } from '../runtime/contracts/index.js';
import type { ArtifactCache } from './artifact-cache.js';
import { Deployments } from './deployments.js';
import type { Manifest } from './manifest.js';
import type { ReleaseStore } from './release-store.js';
import type { OtaEvent, RolloutState, RolloutStatus, TargetState } from './rollout-schema.js';

export * from './rollout-schema.js';

/**
 * Staged rollouts on the gateway. Each release that is ready (artifacts verified in the cache)
 * rolls out to the devices it targets in phases: a phase covers a cumulative share of them
 * (assigned by a hash of release and device, so the same devices go first after a restart),
 * the next phase starts once every device of the current one finished and the phase's wait
 * passed. A phase whose failed share exceeds the threshold halts the rollout. A device that
 * failed is offered the release again up to maxRetries times; one that succeeded never again.
 * Works from its SQLite tables alone: the cloud may be unreachable throughout.
 */
export class Rollouts {
  /** The update server's side: offers, feedback, cancellations, artifacts. */
  readonly deployments: Deployments;
  /** Phase-wait timers, one per release; cleared by stop(). */
  private readonly timers = new Map<string, TimerHandle>();
  /** Expiry timers, one per release (at most a day ahead, then set again); cleared by stop(). */
  private readonly expiryTimers = new Map<string, TimerHandle>();
  private stopped = false;
  private registryFullLogged = false;
  private readonly mRegistryFull: Counter;

  private readonly db: Db;

  constructor(
    db: Db,
    private readonly releases: ReleaseStore,
    cache: ArtifactCache,
    private readonly clock: Clock,
    private readonly log: Logger,
    metrics: Metrics,
    private readonly report: (e: OtaEvent) => void,
    /** Child devices the update server keeps track of at most. */
    private readonly maxDevices = 100_000,
  ) {
    this.db = withStatementCache(db);
    this.mRegistryFull = metrics.counter('outpost_ota_devices_refused_total', 'Devices not registered by the update server: its registry is full');
    this.deployments = new Deployments(db, releases, cache, clock, metrics, report, this);
  }

  // ---- lifecycle ----------------------------------------------------------------------------

  /** A release's artifacts are ready: start its rollout over the targeted devices known now. */
  start(m: Manifest): void {
    const now = this.clock.now();
    const exists = this.db.prepare('SELECT 1 FROM ota_rollouts WHERE release = ?').get(m.release);
    if (exists) return;
    if (m.expiresAt <= now) {
      // Expired while its artifacts were downloading (or the gateway was off): not started. Aborted,
      // not failed: no device got it, so the cloud may issue its version again (release-store.ts).
      const detail = `expired at ${new Date(m.expiresAt).toISOString()} before its rollout started`;
      this.releases.setState(m.release, 'aborted', detail);
      this.log.warn({ release: m.release }, 'release expired before its rollout started; not started');
      this.report({ release: m.release, event: 'expired', details: [detail] });
      return;
    }
    const pending = this.db.prepare('SELECT action, at FROM ota_commands WHERE release = ?').get(m.release) as { action: string; at: number | null } | undefined;
    const state: RolloutState = pending?.action === 'pause' ? 'paused' : 'running';
    this.db.transaction(() => {
      this.db
        .prepare('INSERT INTO ota_rollouts (release, state, phase, started_at, updated_at, command_at) VALUES (?, ?, 0, ?, ?, ?)')
        .run(m.release, state, now, now, pending?.at ?? null);
      this.db.prepare('DELETE FROM ota_commands WHERE release = ?').run(m.release);
      const targeted = this.releases.targets(m);
      const devices = (this.db.prepare('SELECT device FROM ota_devices').all() as { device: string }[]).map((d) => d.device).filter(targeted);
      this.assign(m, devices, now);
    })();
    this.report({ release: m.release, event: 'started', ...(state === 'paused' ? { details: ['paused'] } : {}) });
    this.log.info({ release: m.release, state }, 'rollout started');
    this.armExpiry(m);
    this.advance(m.release);
  }

  /** Calls advance() when the release expires (a timer at most a day ahead, set again on firing). */
  private armExpiry(m: Manifest): void {
    const old = this.expiryTimers.get(m.release);
    if (old) this.clock.clearTimeout(old);
    this.expiryTimers.delete(m.release);
    const wait = m.expiresAt - this.clock.now();
    if (wait <= 0 || this.stopped) return;
    this.expiryTimers.set(
      m.release,
      this.clock.setTimeout(() => {
        this.expiryTimers.delete(m.release);
        this.advance(m.release);
        const state = this.status(m.release)?.state;
        if (state === 'running' || state === 'paused' || state === 'halted') this.armExpiry(m);
      }, Math.min(wait, 86_400_000)),
    );
  }

  /**
   * The release expired under its rollout: no device that has not started gets it (they are
   * cancelled), devices at work finish and report as usual; the release is done once they did.
   */
  private expire(m: Manifest, now: number): void {
    const detail = `expired at ${new Date(m.expiresAt).toISOString()}: devices at work finish, no other device starts`;
    if (!this.setState(m.release, ['running', 'paused', 'halted'], 'expired', 'expired', detail)) return;
    this.db.prepare("UPDATE ota_targets SET state = 'canceled', detail = 'release expired', updated_at = ? WHERE release = ? AND state IN ('waiting', 'pending')").run(now, m.release);
  }

  /**
   * Devices sorted by a hash of release and device; phase i takes them up to its cumulative
   * share (rounded up, so a 5 % phase of 10 devices has one device).
   */
  private assign(m: Manifest, devices: readonly string[], now: number): void {
    const ordered = [...devices].sort((a, b) => (this.rank(m.release, a) < this.rank(m.release, b) ? -1 : 1));
    const ins = this.db.prepare("INSERT OR IGNORE INTO ota_targets (release, device, phase, state, updated_at) VALUES (?, ?, ?, 'waiting', ?)");
    let from = 0;
    m.rollout.phases.forEach((p, i) => {
      const upTo = Math.ceil((p.share / 100) * ordered.length);
      for (const d of ordered.slice(from, upTo)) ins.run(m.release, d, i, now);
      from = Math.max(from, upTo);
    });
  }

  private rank(release: string, device: string): string {
    return createHash('sha256').update(`${release}\0${device}`).digest('hex');
  }

  /**
   * A device seen by the update server for the first time joins the running rollouts that target
   * it, in the phase running now (or the last one, after the rollout finished its phases).
   */
  deviceSeen(device: string): void {
    const now = this.clock.now();
    const r = this.db.prepare('UPDATE ota_devices SET last_seen = ? WHERE device = ?').run(now, device);
    if (r.changes > 0) return;
    // Bounded: any id that passes authentication could register (with no tokens configured, any
    // HTTP client). A device beyond the bound gets no work; counted.
    const { n } = this.db.prepare('SELECT count(*) AS n FROM ota_devices').get() as { n: number };
    if (n >= this.maxDevices) {
      this.mRegistryFull.inc();
      if (!this.registryFullLogged) {
        this.registryFullLogged = true;
        this.log.warn({ device, max: this.maxDevices }, 'update server device registry full; new devices get no work');
      }
      return;
    }
    this.db.prepare('INSERT INTO ota_devices (device, first_seen, last_seen) VALUES (?, ?, ?)').run(device, now, now);
    for (const ro of this.db.prepare("SELECT release, phase FROM ota_rollouts WHERE state IN ('running', 'paused')").all() as { release: string; phase: number }[]) {
      const m = this.releases.get(ro.release)?.manifest;
      if (!m || !this.releases.targets(m)(device)) continue;
      this.db
        .prepare("INSERT OR IGNORE INTO ota_targets (release, device, phase, state, updated_at) VALUES (?, ?, ?, 'pending', ?)")
        .run(ro.release, device, ro.phase, now);
    }
  }

  pause(release: string): boolean {
    return this.setState(release, ['running'], 'paused', 'paused');
  }

  /** Resumes a paused rollout, or a halted one: the operator accepts the phase's failures so far. */
  resume(release: string): boolean {
    const before = this.db.prepare('SELECT state, phase FROM ota_rollouts WHERE release = ?').get(release) as { state: RolloutState; phase: number } | undefined;
    const ok = this.setState(release, ['paused', 'halted'], 'running', 'resumed');
    if (ok && before?.state === 'halted') {
      const { failed } = this.phaseCounts(release, before.phase);
      this.db.prepare('UPDATE ota_rollouts SET accepted_failures = ? WHERE release = ?').run(failed, release);
    }
    if (ok) this.advance(release);
    return ok;
  }

  /** Stops the rollout: no new offers; devices working on it are asked to cancel. */
  abort(release: string): boolean {
    const ok = this.setState(release, ['running', 'paused', 'halted', 'expired'], 'aborted', 'aborted');
    if (!ok) return false;
    const now = this.clock.now();
    this.db.prepare("UPDATE ota_targets SET state = 'canceling', updated_at = ? WHERE release = ? AND state IN ('offered', 'proceeding')").run(now, release);
    this.db.prepare("UPDATE ota_targets SET state = 'canceled', updated_at = ? WHERE release = ? AND state IN ('waiting', 'pending')").run(now, release);
    this.releases.setState(release, 'aborted');
    return true;
  }

  /**
   * A command from the cloud (or the CLI). Cloud commands carry their issue time `at`: one that
   * is not newer than the last applied (a retained message seen again on reconnect) is ignored.
   */
  command(release: string, action: 'pause' | 'resume' | 'abort', at?: number): { applied: boolean; state: RolloutState | 'not-started' | undefined } {
    if (!this.db.prepare('SELECT 1 FROM ota_rollouts WHERE release = ?').get(release)) return this.commandBeforeStart(release, action, at);
    if (at !== undefined) {
      const r = this.db.prepare('SELECT command_at FROM ota_rollouts WHERE release = ?').get(release) as { command_at: number | null } | undefined;
      if (!r || (r.command_at !== null && r.command_at >= at)) return { applied: false, state: this.status(release)?.state };
      this.db.prepare('UPDATE ota_rollouts SET command_at = ? WHERE release = ?').run(at, release);
    }
    const applied = action === 'pause' ? this.pause(release) : action === 'resume' ? this.resume(release) : this.abort(release);
    return { applied, state: this.status(release)?.state };
  }

  /**
   * A command for a release whose rollout has not started (its artifacts are downloading): abort
   * ends the release now (nothing more is fetched for it); pause and resume are kept and applied
   * when the rollout starts.
   */
  private commandBeforeStart(release: string, action: 'pause' | 'resume' | 'abort', at?: number): { applied: boolean; state: 'aborted' | 'not-started' | undefined } {
    const r = this.releases.get(release);
    if (!r || (r.state !== 'fetching' && r.state !== 'ready')) return { applied: false, state: undefined };
    if (at !== undefined) {
      const c = this.db.prepare('SELECT at FROM ota_commands WHERE release = ?').get(release) as { at: number | null } | undefined;
      if (c && c.at !== null && c.at >= at) return { applied: false, state: 'not-started' };
    }
    if (action === 'abort') {
      this.db.prepare('DELETE FROM ota_commands WHERE release = ?').run(release);
      this.releases.setState(release, 'aborted', 'aborted before its rollout started');
      this.log.info({ release }, 'release aborted before its rollout started');
      this.report({ release, event: 'aborted', details: ['before the rollout started'] });
      return { applied: true, state: 'aborted' };
    }
    this.db.prepare('INSERT OR REPLACE INTO ota_commands (release, action, at) VALUES (?, ?, ?)').run(release, action, at ?? null);
    this.report({ release, event: action === 'pause' ? 'paused' : 'resumed', details: ['before the rollout started'] });
    return { applied: true, state: 'not-started' };
  }

  private setState(release: string, from: readonly RolloutState[], to: RolloutState, event: string, detail?: string): boolean {
    const r = this.db
      .prepare(`UPDATE ota_rollouts SET state = ?, detail = ?, updated_at = ? WHERE release = ? AND state IN (${from.map(() => '?').join(',')})`)
      .run(to, detail ?? null, this.clock.now(), release, ...from);
    if (r.changes === 0) return false;
    this.log.info({ release, state: to, detail }, 'rollout state');
    this.report({ release, event, ...(detail ? { details: [detail] } : {}) });
    return true;
  }

  /**
   * Moves a running rollout along: halts a phase over its failure threshold, opens the next
   * phase once the current one finished and its wait passed, finishes after the last.
   * Called on feedback, on polls and by a timer (phase waits).
   */
  advance(release: string): void {
    if (this.stopped) return;
    const ro = this.db.prepare('SELECT state, phase, phase_done_at, accepted_failures FROM ota_rollouts WHERE release = ?').get(release) as
      | { state: RolloutState; phase: number; phase_done_at: number | null; accepted_failures: number }
      | undefined;
    if (!ro) return;
    const m = this.releases.get(release)?.manifest;
    if (!m) return;
    const now = this.clock.now();
    if (m.expiresAt <= now && (ro.state === 'running' || ro.state === 'paused' || ro.state === 'halted')) {
      this.expire(m, now);
      ro.state = 'expired';
    }
    if (ro.state === 'expired') {
      const busy = this.db.prepare("SELECT 1 FROM ota_targets WHERE release = ? AND state IN ('offered', 'proceeding', 'canceling') LIMIT 1").get(release);
      if (!busy && this.releases.get(release)?.state !== 'done') this.releases.setState(release, 'done', 'expired');
      return;
    }
    if (ro.state !== 'running') return;
    const counts = this.phaseCounts(release, ro.phase);
    if (counts.devices > 0 && (counts.failed - ro.accepted_failures) / counts.devices > m.rollout.failureThreshold) {
      const detail = `phase ${ro.phase + 1}: ${counts.failed} of ${counts.devices} devices failed (threshold ${Math.round(m.rollout.failureThreshold * 100)} %)`;
      this.setState(release, ['running'], 'halted', 'halted', detail);
      return;
    }
    // Open the current phase to its devices.
    this.db.prepare("UPDATE ota_targets SET state = 'pending', updated_at = ? WHERE release = ? AND phase <= ? AND state = 'waiting'").run(now, release, ro.phase);
    if (counts.finished < counts.devices) return;
    if (ro.phase_done_at === null) {
      this.db.prepare('UPDATE ota_rollouts SET phase_done_at = ?, updated_at = ? WHERE release = ?').run(now, now, release);
      ro.phase_done_at = now;
    }
    const wait = m.rollout.phases[ro.phase]!.waitMs;
    const last = ro.phase >= m.rollout.phases.length - 1;
    if (last) {
      // No device targeted yet (the gateway just started, devices have not polled): stay open,
      // devices that show up join the last phase.
      const any = this.db.prepare('SELECT 1 FROM ota_targets WHERE release = ? LIMIT 1').get(release);
      if (!any) return;
      this.setState(release, ['running'], 'done', 'done');
      this.releases.setState(release, 'done');
      return;
    }
    if (now < ro.phase_done_at + wait) {
      const old = this.timers.get(release);
      if (old) this.clock.clearTimeout(old);
      this.timers.set(
        release,
        this.clock.setTimeout(() => {
          this.timers.delete(release);
          this.advance(release);
        }, ro.phase_done_at + wait - now),
      );
      return;
    }
    this.db.prepare('UPDATE ota_rollouts SET phase = phase + 1, phase_done_at = NULL, accepted_failures = 0, updated_at = ? WHERE release = ?').run(now, release);
    this.report({ release, event: 'phase', details: [`phase ${ro.phase + 2} of ${m.rollout.phases.length}`] });
    this.advance(release);
  }

  private phaseCounts(release: string, phase: number): { devices: number; finished: number; failed: number } {
    const r = this.db
      .prepare(
        `SELECT count(*) AS devices,
                coalesce(sum(state IN ('success', 'failed', 'canceled')), 0) AS finished,
                coalesce(sum(state = 'failed'), 0) AS failed
         FROM ota_targets WHERE release = ? AND phase = ?`,
      )
      .get(release, phase) as { devices: number; finished: number; failed: number };
    return r;
  }

  /** No more timers: the store is about to close. */
  stop(): void {
    this.stopped = true;
    for (const t of [...this.timers.values(), ...this.expiryTimers.values()]) this.clock.clearTimeout(t);
    this.timers.clear();
    this.expiryTimers.clear();
  }

  /** Re-arms phase waits and expiries after a restart. */
  resumeAll(): void {
    for (const { release, state } of this.db.prepare("SELECT release, state FROM ota_rollouts WHERE state IN ('running', 'paused', 'halted', 'expired')").all() as { release: string; state: RolloutState }[]) {
      const m = this.releases.get(release)?.manifest;
      if (m && state !== 'expired') this.armExpiry(m);
      this.advance(release);
    }
  }

  // ---- status ---------------------------------------------------------------------------------

  status(release: string): RolloutStatus | undefined {
    const ro = this.db.prepare('SELECT state, phase, detail FROM ota_rollouts WHERE release = ?').get(release) as
      | { state: RolloutState; phase: number; detail: string | null }
      | undefined;
    const m = this.releases.get(release)?.manifest;
    if (!ro || !m) return undefined;
    const phases = m.rollout.phases.map((p, i) => {
      const rows = this.db.prepare('SELECT state, count(*) AS n FROM ota_targets WHERE release = ? AND phase = ? GROUP BY state').all(release, i) as { state: TargetState; n: number }[];
      const n = (s: readonly TargetState[]): number => rows.filter((r) => s.includes(r.state)).reduce((a, r) => a + r.n, 0);
      return { share: p.share, devices: n(['waiting', 'pending', 'offered', 'proceeding', 'success', 'failed', 'canceling', 'canceled']), succeeded: n(['success']), failed: n(['failed']), active: n(['offered', 'proceeding', 'canceling']) };
    });
    return { release, version: m.version, state: ro.state, phase: ro.phase, detail: ro.detail ?? undefined, phases };
  }

  list(): RolloutStatus[] {
    return (this.db.prepare('SELECT release FROM ota_rollouts ORDER BY started_at').all() as { release: string }[])
      .map((r) => this.status(r.release))
      .filter((s): s is RolloutStatus => s !== undefined);
  }
}
