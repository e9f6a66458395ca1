import { createHash } from 'node:crypto';
import { createTask, type ScheduledTask } from 'node-cron';
import semver from 'semver';
import type { Clock, Counter, Logger, Metrics, TimerHandle } from '../runtime/contracts/index.js';
import { withStatementCache, type Db, type Migration } from '../runtime/contracts/index.js';
import type { ArtifactCache } from './artifact-cache.js';
import type { DdiFeedback, DdiOffer, DeploymentSource } from './ddi/server.js';
import type { ArtifactRef, Manifest } from './manifest.js';
import { artifactsOf, type ReleaseStore } from './release-store.js';

export const rolloutMigrations: readonly Migration[] = [
  {
    version: 2,
    sql: `
    -- Child devices the update server has seen (poll or attributes), with their attributes.
    CREATE TABLE ota_devices (
      device TEXT PRIMARY KEY,
      first_seen INTEGER NOT NULL,
      last_seen INTEGER NOT NULL,
      attributes TEXT NOT NULL DEFAULT '{}'
    );
    -- running | paused | halted | aborted | done
    CREATE TABLE ota_rollouts (
      release TEXT PRIMARY KEY,
      state TEXT NOT NULL,
      phase INTEGER NOT NULL,
      -- when the current phase's devices all finished (its wait runs from here)
      phase_done_at INTEGER,
      started_at INTEGER NOT NULL,
      updated_at INTEGER NOT NULL,
      detail TEXT,
      -- issue time of the last cloud command applied (a retained command applies once)
      command_at INTEGER
    );
    -- One row per device and release: its phase, where it stands, attempts so far.
    -- state: waiting (phase not reached) | pending | offered | proceeding | success | failed
    --        | canceling | canceled
    CREATE TABLE ota_targets (
      release TEXT NOT NULL,
      device TEXT NOT NULL,
      phase INTEGER NOT NULL,
      state TEXT NOT NULL,
      attempts INTEGER NOT NULL DEFAULT 0,
      action_id INTEGER,
      artifact TEXT,
      updated_at INTEGER NOT NULL,
      detail TEXT,
      PRIMARY KEY (release, device)
    );
    CREATE UNIQUE INDEX ota_targets_by_action ON ota_targets (action_id);
    CREATE TABLE ota_action_seq (n INTEGER NOT NULL);
    INSERT INTO ota_action_seq (n) VALUES (0);`,
  },
  {
    version: 3,
    sql: `
    -- Failures of the current phase an operator accepted by resuming a halted rollout.
    ALTER TABLE ota_rollouts ADD COLUMN accepted_failures INTEGER NOT NULL DEFAULT 0;
    -- A pause or resume for a release whose rollout has not started (its artifacts are still
    -- downloading): applied when it starts.
    CREATE TABLE ota_commands (release TEXT PRIMARY KEY, action TEXT NOT NULL, at INTEGER);`,
  },
];

/** A cancellation the device has not confirmed for this long is closed by the gateway. */
const CANCEL_CONFIRM_MS = 3_600_000;

export type RolloutState = 'running' | 'paused' | 'halted' | 'aborted' | 'done';
type TargetState = 'waiting' | 'pending' | 'offered' | 'proceeding' | 'success' | 'failed' | 'canceling' | 'canceled';

interface TargetRow {
  release: string;
  device: string;
  phase: number;
  state: TargetState;
  attempts: number;
  action_id: number | null;
  artifact: string | null;
}

export interface PhaseStatus {
  readonly share: number;
  readonly devices: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly active: number;
}

export interface RolloutStatus {
  readonly release: string;
  readonly version: string;
  readonly state: RolloutState;
  readonly phase: number;
  readonly detail: string | undefined;
  readonly phases: readonly PhaseStatus[];
}

/** What the rollout reports to the cloud (through the outbox). */
export interface OtaEvent {
  readonly release: string;
  readonly device?: string | undefined;
  readonly actionId?: number | undefined;
  /** DDI execution for device feedback; for the rollout itself: started, phase, halted, paused, resumed, aborted, done. */
  readonly event: string;
  readonly result?: string | undefined;
  readonly details?: readonly string[] | undefined;
}

const ACTIVE: readonly TargetState[] = ['offered', 'proceeding'];
const FINISHED: readonly TargetState[] = ['success', 'failed', 'canceled'];

/**
 * Staged rollouts on the gateway. Each release that is ready (artifacts verified in the cache)
 * rolls out to the devices it targets in phases: a phase covers a cumulative share of them
 * (assigned by a hash of release and device, so the same devices go first after a restart),
 * the next phase starts once every device of the current one finished and the phase's wait
 * passed. A phase whose failed share exceeds the threshold halts the rollout. A device that
 * failed is offered the release again up to maxRetries times; one that succeeded never again.
 * Works from its SQLite tables alone: the cloud may be unreachable throughout.
 */
export class Rollouts implements DeploymentSource {
  private readonly windows = new Map<string, ScheduledTask>();
  /** Phase-wait timers, one per release; cleared by stop(). */
  private readonly timers = new Map<string, TimerHandle>();
  private stopped = false;
  private registryFullLogged = false;
  private readonly mRegistryFull: Counter;
  private readonly mFeedback: Counter;
  private readonly mOutcomes: Counter;

  private readonly db: Db;

  constructor(
    db: Db,
    private readonly releases: ReleaseStore,
    private readonly cache: ArtifactCache,
    private readonly clock: Clock,
    private readonly log: Logger,
    metrics: Metrics,
    private readonly report: (e: OtaEvent) => void,
    /** Child devices the update server keeps track of at most. */
    private readonly maxDevices = 100_000,
  ) {
    this.db = withStatementCache(db);
    this.mFeedback = metrics.counter('outpost_ota_feedback_total', 'DDI feedback messages from child devices, by execution', ['execution']);
    this.mRegistryFull = metrics.counter('outpost_ota_devices_refused_total', 'Devices not registered by the update server: its registry is full');
    this.mOutcomes = metrics.counter('outpost_ota_device_outcomes_total', 'Device install outcomes, by result', ['result']);
  }

  // ---- lifecycle ----------------------------------------------------------------------------

  /** A release's artifacts are ready: start its rollout over the targeted devices known now. */
  start(m: Manifest): void {
    const now = this.clock.now();
    const exists = this.db.prepare('SELECT 1 FROM ota_rollouts WHERE release = ?').get(m.release);
    if (exists) return;
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
    this.advance(m.release);
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
  private seen(device: string): void {
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
    const ok = this.setState(release, ['running', 'paused', 'halted'], 'aborted', 'aborted');
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
    if (!ro || ro.state !== 'running') return;
    const m = this.releases.get(release)?.manifest;
    if (!m) return;
    const now = this.clock.now();
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
    for (const t of this.timers.values()) this.clock.clearTimeout(t);
    this.timers.clear();
  }

  /** Re-arms phase waits after a restart. */
  resumeAll(): void {
    for (const { release } of this.db.prepare("SELECT release FROM ota_rollouts WHERE state = 'running'").all() as { release: string }[]) this.advance(release);
  }

  // ---- DeploymentSource (the DDI server asks) ------------------------------------------------

  private inWindow(m: Manifest): boolean {
    const expr = m.rollout.maintenanceWindow;
    if (!expr) return true;
    let task = this.windows.get(m.release);
    if (!task) {
      task = createTask(expr, () => undefined);
      this.windows.set(m.release, task);
    }
    return task.match(new Date(this.clock.now()));
  }

  offer(device: string): DdiOffer | undefined {
    this.seen(device);
    const rows = this.db
      .prepare(
        `SELECT t.* FROM ota_targets t JOIN ota_rollouts r ON r.release = t.release
         WHERE t.device = ? AND t.state IN ('pending', 'offered', 'proceeding') AND r.state IN ('running', 'paused', 'halted')
         ORDER BY r.started_at`,
      )
      .all(device) as TargetRow[];
    for (const t of rows) {
      const ro = this.db.prepare('SELECT state FROM ota_rollouts WHERE release = ?').get(t.release) as { state: RolloutState };
      // Paused or halted: devices already working finish, no one starts.
      if (t.state === 'pending' && ro.state !== 'running') continue;
      const m = this.releases.get(t.release)?.manifest;
      if (!m) continue;
      const current = this.current(device, m.product);
      if (t.state === 'pending' && current !== undefined && !semver.lt(current, m.version)) {
        // Never a downgrade (a newer release of the product reached the device first), and nothing
        // to do when it runs this version already.
        const same = semver.eq(current, m.version);
        this.db
          .prepare('UPDATE ota_targets SET state = ?, detail = ?, updated_at = ? WHERE release = ? AND device = ?')
          .run(same ? 'success' : 'canceled', `runs ${current}`, this.clock.now(), t.release, device);
        this.report({ release: t.release, device, event: same ? 'already-installed' : 'superseded', details: [`runs ${current}`] });
        this.advance(t.release);
        continue;
      }
      if (t.state === 'pending' && !this.inWindow(m)) continue;
      const chosen = this.choose(m, device, current);
      const digests = this.releases.artifact(chosen.sha256);
      const moduleId = this.moduleId(chosen.sha256);
      if (!digests || moduleId === undefined || !this.cache.blobPath(chosen.sha256)) continue;
      let actionId = t.action_id;
      if (t.state === 'pending' || actionId === null) {
        actionId = this.nextActionId();
        this.db
          .prepare("UPDATE ota_targets SET state = 'offered', action_id = ?, artifact = ?, attempts = attempts + 1, updated_at = ? WHERE release = ? AND device = ?")
          .run(actionId, chosen.sha256, this.clock.now(), t.release, device);
      }
      return {
        actionId,
        name: m.product,
        version: m.version,
        artifact: { moduleId, filename: chosen.name, size: chosen.size, sha256: chosen.sha256, sha1: digests.sha1, md5: digests.md5 },
        maintenanceWindow: m.rollout.maintenanceWindow ? 'available' : undefined,
      };
    }
    return undefined;
  }

  /** The delta for the version the device runs, when the release has one; else the full image. */
  private choose(m: Manifest, device: string, current = this.current(device, m.product)): ArtifactRef {
    return m.deltas.find((d) => current !== undefined && semver.eq(d.from, current))?.artifact ?? m.artifact;
  }

  /**
   * The version of `product` a device runs: what it last reported (configData `version`, a
   * device runs one firmware), else the last success the gateway recorded for it.
   */
  private current(device: string, product: string): string | undefined {
    const r = this.db.prepare('SELECT attributes FROM ota_devices WHERE device = ?').get(device) as { attributes: string } | undefined;
    if (r) {
      try {
        const v = (JSON.parse(r.attributes) as { version?: unknown }).version;
        if (typeof v === 'string' && semver.valid(v)) return v;
      } catch {
        // attributes are written by configData as JSON; nothing else to fall back on
      }
    }
    return this.releases.installed(device, product);
  }

  private moduleId(sha256: string): number | undefined {
    const r = this.db.prepare('SELECT rowid AS id FROM ota_artifacts WHERE sha256 = ?').get(sha256) as { id: number } | undefined;
    return r?.id;
  }

  private nextActionId(): number {
    this.db.prepare('UPDATE ota_action_seq SET n = n + 1').run();
    return (this.db.prepare('SELECT n FROM ota_action_seq').get() as { n: number }).n;
  }

  private byAction(device: string, actionId: number): TargetRow | undefined {
    if (!Number.isSafeInteger(actionId)) return undefined;
    return this.db.prepare('SELECT * FROM ota_targets WHERE action_id = ? AND device = ?').get(actionId, device) as TargetRow | undefined;
  }

  /**
   * The action the device is asked to cancel. One it has not confirmed for CANCEL_CONFIRM_MS (an
   * agent without cancel support) is closed by the gateway, so the device can get other work.
   */
  cancellation(device: string): number | undefined {
    const r = this.db.prepare("SELECT release, action_id, updated_at FROM ota_targets WHERE device = ? AND state = 'canceling' ORDER BY updated_at LIMIT 1").get(device) as
      | { release: string; action_id: number; updated_at: number }
      | undefined;
    if (!r) return undefined;
    const now = this.clock.now();
    if (now - r.updated_at < CANCEL_CONFIRM_MS) return r.action_id;
    const detail = `cancellation not confirmed in ${CANCEL_CONFIRM_MS / 3_600_000} h; closed by the gateway`;
    this.db.prepare("UPDATE ota_targets SET state = 'canceled', detail = ?, updated_at = ? WHERE release = ? AND device = ?").run(detail, now, r.release, device);
    this.report({ release: r.release, device, actionId: r.action_id, event: 'cancel-expired', details: [detail] });
    return this.cancellation(device);
  }

  feedback(device: string, actionId: number, fb: DdiFeedback): boolean {
    const t = this.byAction(device, actionId);
    if (!t || !(ACTIVE.includes(t.state) || t.state === 'canceling')) return false;
    const { execution, result } = fb.status;
    this.mFeedback.inc({ execution });
    const now = this.clock.now();
    const details = fb.status.details?.slice(-5);
    const m = this.releases.get(t.release)?.manifest;
    let next: TargetState = t.state === 'canceling' ? 'canceling' : 'proceeding';
    if (execution === 'closed' && result.finished === 'success') next = 'success';
    else if ((execution === 'closed' && result.finished === 'failure') || execution === 'rejected' || execution === 'canceled') next = 'failed';
    if (next === 'failed' && m && t.attempts <= m.rollout.maxRetries && t.state !== 'canceling') {
      // Another attempt later, with a new action id.
      this.db.prepare("UPDATE ota_targets SET state = 'pending', detail = ?, updated_at = ? WHERE release = ? AND device = ?").run(details?.join(' | ') ?? null, now, t.release, device);
      this.mOutcomes.inc({ result: 'retry' });
    } else {
      this.db
        .prepare('UPDATE ota_targets SET state = ?, detail = coalesce(?, detail), updated_at = ? WHERE release = ? AND device = ?')
        .run(next === 'failed' && t.state === 'canceling' ? 'canceled' : next, details?.join(' | ') ?? null, now, t.release, device);
      if (next === 'success' || next === 'failed') this.mOutcomes.inc({ result: next });
      if (next === 'success' && m) {
        this.releases.setInstalled(device, m.product, m.version, now);
        // A version the device reported before this install is out of date now.
        this.db
          .prepare("UPDATE ota_devices SET attributes = json_set(attributes, '$.version', ?) WHERE device = ? AND json_valid(attributes) AND json_extract(attributes, '$.version') IS NOT NULL")
          .run(m.version, device);
      }
    }
    this.report({ release: t.release, device, actionId, event: execution, result: result.finished, ...(details ? { details } : {}) });
    if (FINISHED.includes(next)) this.advance(t.release);
    return true;
  }

  cancelFeedback(device: string, actionId: number, fb: DdiFeedback): boolean {
    const t = this.byAction(device, actionId);
    if (!t || t.state !== 'canceling') return false;
    const { execution, result } = fb.status;
    this.mFeedback.inc({ execution: `cancel-${execution}` });
    // canceled or closed/success: the device stopped; rejected: it goes on and reports as usual.
    if (execution === 'canceled' || (execution === 'closed' && result.finished === 'success')) {
      this.db.prepare("UPDATE ota_targets SET state = 'canceled', updated_at = ? WHERE release = ? AND device = ?").run(this.clock.now(), t.release, device);
    } else if (execution === 'rejected') {
      this.db.prepare("UPDATE ota_targets SET state = 'proceeding', updated_at = ? WHERE release = ? AND device = ?").run(this.clock.now(), t.release, device);
    }
    this.report({ release: t.release, device, actionId, event: `cancel-${execution}`, result: result.finished });
    return true;
  }

  configData(device: string, data: Readonly<Record<string, string>>): void {
    this.seen(device);
    this.db.prepare('UPDATE ota_devices SET attributes = ? WHERE device = ?').run(JSON.stringify(data), device);
  }

  artifact(device: string, moduleId: number, filename: string): { path: string; sha256: string; md5: string; size: number } | undefined {
    const rows = this.db
      .prepare("SELECT release, artifact FROM ota_targets WHERE device = ? AND state IN ('offered', 'proceeding') AND artifact IS NOT NULL")
      .all(device) as { release: string; artifact: string }[];
    for (const { release, artifact } of rows) {
      if (this.moduleId(artifact) !== moduleId) continue;
      // The file name must be the one the device's release offers for this artifact.
      const m = this.releases.get(release)?.manifest;
      if (!m || !artifactsOf(m).some((a) => a.sha256 === artifact && a.name === filename)) continue;
      const d = this.releases.artifact(artifact);
      const path = this.cache.blobPath(artifact);
      if (!d || !path) continue;
      return { path, sha256: d.sha256, md5: d.md5, size: d.size };
    }
    return undefined;
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
