import { createTask, type ScheduledTask } from 'node-cron';
import semver from 'semver';
import { withStatementCache, type Clock, type Counter, type Db, type Metrics } from '../runtime/contracts/index.js';
import type { ArtifactCache } from './artifact-cache.js';
import type { DdiFeedback, DdiOffer, DeploymentSource } from './ddi/contract.js';
import type { ArtifactRef, Manifest } from './manifest.js';
import { artifactsOf, type ReleaseStore } from './release-store.js';
import { ACTIVE, FINISHED, type OtaEvent, type RolloutState, type TargetRow, type TargetState } from './rollout-schema.js';

/** A cancellation the device has not confirmed for this long is closed by the gateway. */
const CANCEL_CONFIRM_MS = 3_600_000;

/** What the deployments need of the rollouts: a device seen, a release to move along. */
export interface RolloutEngine {
  deviceSeen(device: string): void;
  advance(release: string): void;
}

/**
 * What the update server asks (DeploymentSource): which action a device works on now (the full
 * image, or a delta for the version it runs; never a downgrade), its feedback and cancellations,
 * its attributes, and the artifact files it may download. Progress goes to the rollout engine.
 */
export class Deployments implements DeploymentSource {
  private readonly windows = new Map<string, ScheduledTask>();
  private readonly db: Db;
  private readonly mFeedback: Counter;
  private readonly mOutcomes: Counter;

  constructor(
    db: Db,
    private readonly releases: ReleaseStore,
    private readonly cache: ArtifactCache,
    private readonly clock: Clock,
    metrics: Metrics,
    private readonly report: (e: OtaEvent) => void,
    private readonly rollouts: RolloutEngine,
  ) {
    this.db = withStatementCache(db);
    this.mFeedback = metrics.counter('outpost_ota_feedback_total', 'DDI feedback messages from child devices, by execution', ['execution']);
    this.mOutcomes = metrics.counter('outpost_ota_device_outcomes_total', 'Device install outcomes, by result', ['result']);
  }

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
    this.rollouts.deviceSeen(device);
    const rows = this.db
      .prepare(
        `SELECT t.* FROM ota_targets t JOIN ota_rollouts r ON r.release = t.release
         WHERE t.device = ? AND t.state IN ('pending', 'offered', 'proceeding') AND r.state IN ('running', 'paused', 'halted', 'expired')
         ORDER BY r.started_at`,
      )
      .all(device) as TargetRow[];
    for (const t of rows) {
      const ro = this.db.prepare('SELECT state FROM ota_rollouts WHERE release = ?').get(t.release) as { state: RolloutState };
      // Paused or halted: devices already working finish, no one starts.
      if (t.state === 'pending' && ro.state !== 'running') continue;
      const m = this.releases.get(t.release)?.manifest;
      if (!m) continue;
      const { installed, reported } = this.versions(device, m.product);
      const current = installed !== undefined && (reported === undefined || semver.lt(reported, installed)) ? installed : reported;
      if (t.state === 'pending' && current !== undefined && !semver.lt(current, m.version)) {
        // Never a downgrade, and nothing to do when the device runs this version already. The
        // floor is the install the gateway recorded (a device's success feedback); a reported
        // version can only raise it: a report of a lower version never brings an older release.
        const same = semver.eq(current, m.version);
        this.db
          .prepare('UPDATE ota_targets SET state = ?, detail = ?, updated_at = ? WHERE release = ? AND device = ?')
          .run(same ? 'success' : 'canceled', `runs ${current}`, this.clock.now(), t.release, device);
        this.report({ release: t.release, device, event: same ? 'already-installed' : 'superseded', details: [`runs ${current}`] });
        this.rollouts.advance(t.release);
        continue;
      }
      // Past its expiry a release starts on no new device (docs/ota.md); work under way goes on.
      if (t.state === 'pending' && m.expiresAt <= this.clock.now()) continue;
      if (t.state === 'pending' && !this.inWindow(m)) continue;
      // A delta only when the device's report does not contradict the recorded install (a device
      // that reports less than it was recorded installing gets the full image).
      const chosen = installed !== undefined && reported !== undefined && semver.lt(reported, installed) ? m.artifact : this.choose(m, current);
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
  private choose(m: Manifest, current: string | undefined): ArtifactRef {
    return m.deltas.find((d) => current !== undefined && semver.eq(d.from, current))?.artifact ?? m.artifact;
  }

  /**
   * What the gateway knows of the version of `product` a device runs: the last install it recorded
   * (success feedback), and what the device last reported (configData `version`: a device runs
   * one firmware). Both come from the authenticated device only (server.ts).
   */
  private versions(device: string, product: string): { installed: string | undefined; reported: string | undefined } {
    let reported: string | undefined;
    const r = this.db.prepare('SELECT attributes FROM ota_devices WHERE device = ?').get(device) as { attributes: string } | undefined;
    if (r) {
      try {
        const v = (JSON.parse(r.attributes) as { version?: unknown }).version;
        if (typeof v === 'string' && semver.valid(v)) reported = v;
      } catch {
        // attributes are written by configData as JSON; nothing else to fall back on
      }
    }
    return { installed: this.releases.installed(device, product), reported };
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
    if (FINISHED.includes(next)) this.rollouts.advance(t.release);
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
    this.rollouts.deviceSeen(device);
    this.db.prepare('UPDATE ota_devices SET attributes = ? WHERE device = ?').run(JSON.stringify(data), device);
  }

  artifact(device: string, moduleId: number, filename: string): { path: string; sha256: string; md5: string; size: number } | undefined {
    if (!Number.isSafeInteger(moduleId)) return undefined;
    // One indexed query per download request (each range of every device asks): the device's open
    // actions whose artifact has this module id, with the artifact's digests.
    const rows = this.db
      .prepare(
        `SELECT t.release, a.sha256, a.size, a.md5 FROM ota_targets t JOIN ota_artifacts a ON a.sha256 = t.artifact
         WHERE t.device = ? AND t.state IN ('offered', 'proceeding') AND a.rowid = ?`,
      )
      .all(device, moduleId) as { release: string; sha256: string; size: number; md5: string }[];
    for (const d of rows) {
      // The file name must be the one the device's release offers for this artifact.
      const m = this.releases.manifest(d.release);
      if (!m || !artifactsOf(m).some((a) => a.sha256 === d.sha256 && a.name === filename)) continue;
      const path = this.cache.blobPath(d.sha256);
      if (!path) continue;
      return { path, sha256: d.sha256, md5: d.md5, size: d.size };
    }
    return undefined;
  }
}
