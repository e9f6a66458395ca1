import { compileGlob } from '../runtime/contracts/index.js';
import { withStatementCache, type Db, type Migration } from '../runtime/contracts/index.js';
import type { ArtifactDigests } from './artifact-cache.js';
import { ManifestRefused, olderThan, openManifest, type ArtifactRef, type Manifest, type TrustedKeys } from './manifest.js';

export const otaMigrations: readonly Migration[] = [
  {
    version: 1,
    sql: `
    -- Releases the gateway accepted: the signed envelope as received (re-verified on load).
    CREATE TABLE ota_releases (
      release TEXT PRIMARY KEY,
      product TEXT NOT NULL,
      version TEXT NOT NULL,
      signed TEXT NOT NULL,
      received_at INTEGER NOT NULL,
      -- fetching | ready | failed | aborted | done
      state TEXT NOT NULL,
      detail TEXT
    );
    -- Artifacts once verified in the cache, with the digests update agents ask for.
    CREATE TABLE ota_artifacts (
      sha256 TEXT PRIMARY KEY,
      size INTEGER NOT NULL,
      sha1 TEXT NOT NULL,
      md5 TEXT NOT NULL,
      verified_at INTEGER NOT NULL
    );
    -- What each child device runs, per product (from successful installs and device reports).
    CREATE TABLE ota_installed (
      device TEXT NOT NULL,
      product TEXT NOT NULL,
      version TEXT NOT NULL,
      updated_at INTEGER NOT NULL,
      PRIMARY KEY (device, product)
    );`,
  },
];

export type ReleaseState = 'fetching' | 'ready' | 'failed' | 'aborted' | 'done';

export interface StoredRelease {
  readonly manifest: Manifest;
  readonly state: ReleaseState;
  readonly detail: string | undefined;
  readonly receivedAt: number;
}

/** Every artifact a manifest names: the full image first, then the deltas. */
export function artifactsOf(m: Manifest): ArtifactRef[] {
  return [m.artifact, ...m.deltas.map((d) => d.artifact)];
}

/**
 * The releases a gateway holds, in SQLite: intake (signature, validity, anti-rollback), their
 * state, verified artifacts' digests, and the versions installed on child devices.
 */
export class ReleaseStore {
  /** Opened manifests by release: a stored manifest never changes, so it is verified once. */
  private readonly opened = new Map<string, Manifest>();
  /** Stored releases that no longer verify (their key left the config): skipped, reported once. */
  private readonly untrusted = new Set<string>();
  /** Told once per stored release that no longer verifies. */
  onUntrusted: ((release: string, why: string) => void) | undefined;

  private readonly db: Db;

  constructor(
    db: Db,
    private readonly keys: TrustedKeys,
    /** This gateway's id: a release must name it in `target.gateways`. */
    private readonly gatewayId: string,
  ) {
    this.db = withStatementCache(db);
  }

  /**
   * Accepts a signed release envelope, or throws ManifestRefused naming why. Anti-rollback: a
   * release older than one already accepted for its product, or than what a device it targets
   * runs, is refused. The same release sent again is accepted again (returns `known: true`); a
   * different manifest under a known release name or a known version is a conflict.
   */
  accept(raw: unknown, now: number): { manifest: Manifest; known: boolean } {
    const m = openManifest(raw, this.keys, now, this.gatewayId);
    const payload = (raw as { payload: string }).payload;
    const same = this.db.prepare('SELECT signed FROM ota_releases WHERE release = ?').get(m.release) as { signed: string } | undefined;
    if (same) {
      if ((JSON.parse(same.signed) as { payload: string }).payload === payload) return { manifest: m, known: true };
      throw new ManifestRefused('conflict', `release ${m.release} is already known with a different manifest`);
    }
    const versions = this.db.prepare("SELECT release, version FROM ota_releases WHERE product = ? AND state != 'aborted'").all(m.product) as { release: string; version: string }[];
    for (const v of versions) {
      if (v.version === m.version) throw new ManifestRefused('conflict', `version ${m.version} of ${m.product} is already release ${v.release}`);
      if (olderThan(m.version, v.version)) {
        throw new ManifestRefused('rollback', `${m.product} ${m.version} is older than ${v.version} (release ${v.release}), refused (anti-rollback)`);
      }
    }
    const targeted = this.targets(m);
    const installed = this.db.prepare('SELECT device, version FROM ota_installed WHERE product = ?').all(m.product) as { device: string; version: string }[];
    for (const d of installed) {
      if (targeted(d.device) && olderThan(m.version, d.version)) {
        throw new ManifestRefused('rollback', `${m.product} ${m.version} is older than ${d.version} installed on ${d.device}, refused (anti-rollback)`);
      }
    }
    this.db
      .prepare("INSERT INTO ota_releases (release, product, version, signed, received_at, state) VALUES (?, ?, ?, ?, ?, 'fetching')")
      .run(m.release, m.product, m.version, JSON.stringify(raw), now);
    return { manifest: m, known: false };
  }

  /** A predicate: does the manifest target this device id? */
  targets(m: Manifest): (device: string) => boolean {
    const globs = m.target.devices.map((g) => compileGlob(g));
    return (device) => globs.some((g) => g(device));
  }

  /**
   * A stored release, or undefined when there is none or it is no longer trusted (its signing key
   * was removed from the config since: reported once through onUntrusted, then skipped).
   */
  get(release: string): StoredRelease | undefined {
    const r = this.db.prepare('SELECT signed, state, detail, received_at AS receivedAt FROM ota_releases WHERE release = ?').get(release) as
      | { signed: string; state: ReleaseState; detail: string | null; receivedAt: number }
      | undefined;
    if (!r) return undefined;
    // Stored envelopes were verified on intake; opening them again keeps one code path, and a
    // trusted key removed from the config since then is respected. Time 0: expiry is the rollout's
    // business once a release was accepted (rollout.ts).
    let manifest = this.opened.get(release);
    if (!manifest) {
      try {
        manifest = openManifest(JSON.parse(r.signed) as unknown, this.keys, 0, this.gatewayId);
      } catch (err) {
        if (!(err instanceof ManifestRefused)) throw err;
        if (!this.untrusted.has(release)) {
          this.untrusted.add(release);
          this.onUntrusted?.(release, err.message);
        }
        return undefined;
      }
      this.opened.set(release, manifest);
    }
    return { manifest, state: r.state, detail: r.detail ?? undefined, receivedAt: r.receivedAt };
  }

  /**
   * The manifest of a stored, trusted release, as get() gives it, without reading the stored
   * envelope again once it was opened (releases are never deleted, and the trusted keys are fixed
   * for the store's life): the update server asks for every range a device downloads.
   */
  manifest(release: string): Manifest | undefined {
    return this.opened.get(release) ?? this.get(release)?.manifest;
  }

  list(states?: readonly ReleaseState[]): StoredRelease[] {
    const rows = this.db.prepare('SELECT release FROM ota_releases ORDER BY received_at').all() as { release: string }[];
    const out: StoredRelease[] = [];
    for (const { release } of rows) {
      const r = this.get(release);
      if (r && (!states || states.includes(r.state))) out.push(r);
    }
    return out;
  }

  setState(release: string, state: ReleaseState, detail?: string): void {
    this.db.prepare('UPDATE ota_releases SET state = ?, detail = ? WHERE release = ?').run(state, detail ?? null, release);
  }

  /** Digests of every artifact that releases in these states reference (what the cache keeps). */
  referenced(states: readonly ReleaseState[] = ['fetching', 'ready']): Set<string> {
    const keep = new Set<string>();
    for (const r of this.list(states)) for (const a of artifactsOf(r.manifest)) keep.add(a.sha256);
    return keep;
  }

  recordArtifact(d: ArtifactDigests, now: number): void {
    this.db
      .prepare('INSERT INTO ota_artifacts (sha256, size, sha1, md5, verified_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (sha256) DO UPDATE SET verified_at = excluded.verified_at')
      .run(d.sha256, d.size, d.sha1, d.md5, now);
  }

  artifact(sha256: string): ArtifactDigests | undefined {
    return this.db.prepare('SELECT sha256, size, sha1, md5 FROM ota_artifacts WHERE sha256 = ?').get(sha256) as ArtifactDigests | undefined;
  }

  forgetArtifact(sha256: string): void {
    this.db.prepare('DELETE FROM ota_artifacts WHERE sha256 = ?').run(sha256);
  }

  setInstalled(device: string, product: string, version: string, now: number): void {
    this.db
      .prepare('INSERT INTO ota_installed (device, product, version, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (device, product) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at')
      .run(device, product, version, now);
  }

  installed(device: string, product: string): string | undefined {
    const r = this.db.prepare('SELECT version FROM ota_installed WHERE device = ? AND product = ?').get(device, product) as { version: string } | undefined;
    return r?.version;
  }
}
