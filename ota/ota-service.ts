import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  cloudTopics,
  errorMessage,
  makeEnvelope,
  type Clock,
  type CloudLink,
  type Component,
  type ComponentContext,
  type Counter,
  type HttpHost,
  type Logger,
  type OutboxWriter,
  type SequenceSource,
  type Store,
} from '../runtime/contracts/index.js';
import { otaRoutes } from './api.js';
import { ArtifactCache } from './artifact-cache.js';
import type { OtaConfig } from './config.js';
import { DeviceAuth } from './ddi/device-auth.js';
import { DdiServer } from './ddi/server.js';
import { ManifestRefused, TrustedKeys } from './manifest.js';
import { ReleaseFetcher } from './release-fetcher.js';
import { otaMigrations, ReleaseStore } from './release-store.js';
import { rolloutMigrations, Rollouts, type OtaEvent, type RolloutStatus } from './rollout.js';
import { CommandRefused, openCommand } from './rollout-command.js';

/** Point name of OTA events in the readings sent to the cloud. */
export const OTA_POINT = 'ota';

export interface OtaStatus {
  releases: Array<{ release: string; version: string; state: string; detail?: string }>;
  rollouts: RolloutStatus[];
  fetching?: unknown;
  cache: { usedBytes: number; quotaBytes: number };
}

export interface OtaServiceDeps {
  readonly config: OtaConfig;
  readonly gatewayId: string;
  readonly topicPrefix: string;
  /** Outbox stream of OTA events. */
  readonly stream: string;
  /** The artifact cache's directory when the config names none. */
  readonly defaultCacheDir: string;
  readonly store: Store;
  readonly link: CloudLink;
  readonly outbox: OutboxWriter;
  readonly sequence: SequenceSource;
  readonly http: HttpHost;
}

/**
 * OTA as one component: release intake from the cloud link, the artifact fetcher, the rollout
 * engine and the DDI update server for child devices, with its local API under /api/v1/ota.
 * Events (release accepted or refused, rollout progress, device feedback) go to the cloud as
 * readings of point `ota` through the outbox.
 */
export class OtaService implements Component {
  readonly name = 'ota';
  private parts: { store: ReleaseStore; rollouts: Rollouts; fetcher: ReleaseFetcher; server: DdiServer; cache: ArtifactCache } | undefined;
  private mReleases: Counter | undefined;
  private mCommands: Counter | undefined;
  private keys: TrustedKeys | undefined;
  /** Refusal reasons of cloud commands logged so far (each once; all counted). */
  private readonly commandRefusalsLogged = new Set<string>();
  private clock: Clock | undefined;
  private log: Logger | undefined;
  /** The status at stop (the store is closed after it). */
  private final: { ota?: OtaStatus; ports?: { ota: number } } | undefined;

  constructor(private readonly deps: OtaServiceDeps) {}

  private get running(): NonNullable<OtaService['parts']> {
    if (!this.parts) throw new Error('OTA is not started');
    return this.parts;
  }

  get rollouts(): Rollouts {
    return this.running.rollouts;
  }

  get server(): DdiServer {
    return this.running.server;
  }

  get port(): number {
    return this.parts?.server.port ?? 0;
  }

  async start(ctx: ComponentContext): Promise<void> {
    const { config: ota, store: db, link, http } = this.deps;
    const { clock, log, metrics } = ctx;
    this.clock = clock;
    this.log = log;
    db.migrate('ota', [...otaMigrations, ...rolloutMigrations]);
    this.mReleases = metrics.counter('outpost_ota_releases_total', 'Release manifests received, by outcome', ['outcome']);
    this.mCommands = metrics.counter('outpost_ota_commands_total', 'Rollout commands from the cloud, by outcome (applied, ignored, or why refused)', ['outcome']);
    const s = ota.server;
    const auth = s.closedNetwork ? 'closed-network' : new DeviceAuth({ tokenHashes: s.targetTokenHashes, groupSecret: s.groupSecret ?? readSecret(s.groupSecretFile) });
    if (auth === 'closed-network') log.warn({ host: s.host }, 'update server without device authentication (ota.server.closedNetwork): any client on the network may act as any device');
    const cache = new ArtifactCache(ota.cacheDir ?? this.deps.defaultCacheDir, ota.cacheBytes);
    const keys = new TrustedKeys(ota.trustedKeys);
    this.keys = keys;
    const store = new ReleaseStore(db.db, keys, this.deps.gatewayId);
    store.onUntrusted = (release, why) => {
      log.warn({ release, why }, 'stored release no longer verifies with the configured keys; skipped');
      this.report({ release, event: 'untrusted', details: [why] });
    };
    const rollouts = new Rollouts(db.db, store, cache, clock, log.child({ component: 'rollout' }), metrics, (e) => this.report(e));
    const fetcher = new ReleaseFetcher(store, cache, link, clock, log.child({ component: 'ota-fetch' }), metrics, {
      idleTimeoutMs: ota.fetchIdleTimeoutMs,
      onReady: (m) => {
        this.report({ release: m.release, event: 'cached' });
        rollouts.start(m);
      },
      onFailed: (m, reason, detail) => this.report({ release: m.release, event: 'fetch-failed', result: reason, details: [detail] }),
    });
    const server = new DdiServer(
      rollouts.deployments,
      { tenant: s.tenant, pollSeconds: s.pollSeconds, auth, maxTransfers: s.maxTransfers, chunkCacheBytes: s.chunkCacheBytes, publicUrl: s.publicUrl },
      log.child({ component: 'ddi' }),
      metrics,
      http,
    );
    this.parts = { store, rollouts, fetcher, server, cache };
    const { topicPrefix, gatewayId } = this.deps;
    link.subscribe(cloudTopics.releasesFilter(topicPrefix, gatewayId), (_t, payload) => this.receive(payload));
    link.subscribe(cloudTopics.rolloutCommandsFilter(topicPrefix, gatewayId), (topic, payload) => this.cloudCommand(topic, payload));
    link.onLinkUp(() => this.parts?.fetcher.wake());
    // Releases that were ready when the gateway stopped roll on; unfinished downloads resume.
    for (const r of store.list(['ready'])) rollouts.start(r.manifest);
    rollouts.resumeAll();
    fetcher.start();
    await server.listen(s.host, s.port);
  }

  async stop(): Promise<void> {
    const p = this.parts;
    if (!p || this.final) return;
    this.final = this.status();
    await p.fetcher.stop();
    await p.server.close();
    p.rollouts.stop();
  }

  /** A signed release envelope from the cloud (or the CLI). */
  receive(payload: Buffer | string): { accepted: boolean; release?: string; reason?: string; message?: string } {
    const { store, fetcher } = this.running;
    const now = this.clock!.now();
    let raw: unknown;
    try {
      raw = JSON.parse(payload.toString());
    } catch (err) {
      return this.refused(new ManifestRefused('malformed', `release message is not JSON: ${errorMessage(err)}`), undefined);
    }
    try {
      const { manifest, known } = store.accept(raw, now);
      if (known) return { accepted: true, release: manifest.release };
      this.mReleases?.inc({ outcome: 'accepted' });
      this.log?.info({ release: manifest.release, version: manifest.version }, 'release accepted');
      this.report({ release: manifest.release, event: 'accepted' });
      fetcher.wake();
      return { accepted: true, release: manifest.release };
    } catch (err) {
      if (err instanceof ManifestRefused) return this.refused(err, raw);
      throw err;
    }
  }

  private refused(err: ManifestRefused, raw: unknown): { accepted: false; reason: string; message: string; release?: string } {
    this.mReleases?.inc({ outcome: err.reason });
    // The release name, when the payload says one (for the report only: nothing else is used).
    let release = '?';
    try {
      const p = (raw as { payload?: unknown } | undefined)?.payload;
      const name = typeof p === 'string' ? (JSON.parse(p) as { release?: unknown }).release : undefined;
      if (typeof name === 'string' && /^[A-Za-z0-9._-]{1,64}$/.test(name)) release = name;
    } catch {
      // not JSON: no name
    }
    this.log?.warn({ release, reason: err.reason, detail: err.message }, 'release refused');
    this.report({ release, event: 'refused', result: err.reason, details: [err.message] });
    return { accepted: false, reason: err.reason, message: err.message, release };
  }

  /** A signed rollout command from the cloud: applied once per issue time, else refused and counted. */
  private cloudCommand(topic: string, payload: Buffer): void {
    const release = topic.split('/').at(-2) ?? '';
    let command;
    try {
      command = openCommand(payload, this.keys!, this.deps.gatewayId, release);
    } catch (err) {
      if (!(err instanceof CommandRefused)) throw err;
      this.mCommands?.inc({ outcome: err.reason });
      if (!this.commandRefusalsLogged.has(err.reason)) {
        this.commandRefusalsLogged.add(err.reason);
        this.log?.warn({ topic, reason: err.reason, detail: err.message }, 'rollout command refused (logged once per reason; counted in outpost_ota_commands_total)');
      }
      return;
    }
    const r = this.running.rollouts.command(release, command.action, command.at);
    this.mCommands?.inc({ outcome: r.applied ? 'applied' : 'ignored' });
    this.log?.info({ release, action: command.action, applied: r.applied, state: r.state }, 'rollout command from the cloud');
  }

  /** An OTA event to the cloud, as a reading of point `ota` (device: the child, or the gateway). */
  private report(e: OtaEvent): void {
    const { sequence, gatewayId, outbox, stream } = this.deps;
    const next = sequence.next();
    let text = JSON.stringify(e);
    if (text.length > 1024) text = JSON.stringify({ ...e, details: e.details?.map((d) => d.slice(0, 120)).slice(-3) }).slice(0, 1024);
    const envelope = makeEnvelope({ id: next.id, seq: next.seq, device: e.device ?? gatewayId, point: OTA_POINT, value: text, quality: 'good', ts: this.clock!.now() });
    outbox.append([{ stream, envelope }]).catch((err: unknown) => this.log?.error({ err: errorMessage(err), event: e.event }, 'ota event not stored'));
  }

  /** Releases, rollouts, the download in progress and the cache: the `ota` section of the status, also after stop. */
  status(): { ota?: OtaStatus; ports?: { ota: number } } {
    if (this.final) return this.final;
    const p = this.parts;
    if (!p) return {};
    return {
      ota: {
        releases: p.store.list().map((r) => ({ release: r.manifest.release, version: r.manifest.version, state: r.state, ...(r.detail ? { detail: r.detail } : {}) })),
        rollouts: p.rollouts.list(),
        ...(p.fetcher.progress ? { fetching: p.fetcher.progress } : {}),
        cache: { usedBytes: p.cache.usedBytes(), quotaBytes: p.cache.quotaBytes },
      },
      ports: { ota: p.server.port },
    };
  }

  /** The local API under /api/v1/ota (status, rollout commands, releases given locally). */
  routes(): ReturnType<HttpHost['router']> {
    return otaRoutes(this.deps.http, this);
  }
}

/** The group secret from its file (first line), or undefined without one; the error names the field. */
function readSecret(file: string | undefined): string | undefined {
  if (file === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`ota.server.groupSecretFile: cannot read ${file}: ${errorMessage(err)}`, { cause: err });
  }
  const secret = text.split(/\r?\n/)[0]!.trim();
  if (secret.length < 32) throw new Error(`ota.server.groupSecretFile: the secret in ${file} has fewer than 32 characters`);
  return secret;
}

/** Where OTA keeps its artifacts when `ota.cacheDir` is not set: beside the store. */
export const defaultCacheDir = (storeDir: string): string => join(storeDir, 'ota-cache');
