import { dirname, join } from 'node:path';
import { z } from 'zod';
import type { SiteConfig } from '../config/schema.js';
import { makeEnvelope, type Clock, type Counter, type Logger, type Metrics, type SequenceSource } from '../contracts/index.js';
import type { IngestPipeline } from '../ingest.js';
import { migrate, type Db } from '../store/database.js';
import { ArtifactCache } from './artifact-cache.js';
import { DdiServer } from './ddi-server.js';
import { ManifestRefused, TrustedKeys } from './manifest.js';
import { ReleaseFetcher, type LinkGate } from './release-fetcher.js';
import { otaMigrations, ReleaseStore } from './release-store.js';
import { rolloutMigrations, Rollouts, type OtaEvent, type RolloutStatus } from './rollout.js';

/** The cloud link as OTA needs it (the uplink provides it). */
export interface CloudLink extends LinkGate {
  subscribe(filter: string, handler: (topic: string, payload: Buffer) => void): void;
  onLinkUp(fn: () => void): void;
}

export const otaTopics = {
  /** Retained signed release envelopes, one topic per release. */
  releases: (prefix: string, gw: string) => `${prefix}/v1/gw/${gw}/releases/+`,
  /** Rollout commands `{"action":"pause"|"resume"|"abort","at":ms}`, retained per release. */
  commands: (prefix: string, gw: string) => `${prefix}/v1/gw/${gw}/rollouts/+/command`,
};

const commandSchema = z.strictObject({ action: z.enum(['pause', 'resume', 'abort']), at: z.number().int().positive() });

/** Point name of OTA events in the readings sent to the cloud. */
export const OTA_POINT = 'ota';

export interface OtaServiceDeps {
  readonly config: SiteConfig;
  readonly db: Db;
  readonly link: CloudLink;
  readonly pipeline: IngestPipeline;
  readonly sequence: SequenceSource;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: Metrics;
}

/**
 * OTA assembled: release intake from the cloud link, the artifact fetcher, the rollout engine
 * and the DDI update server for child devices. Events (release accepted or refused, rollout
 * progress, device feedback) go to the cloud as readings of point `ota` through the outbox.
 */
export class OtaService {
  readonly store: ReleaseStore;
  readonly rollouts: Rollouts;
  readonly fetcher: ReleaseFetcher;
  readonly server: DdiServer;
  private readonly stream: string;
  private readonly mReleases: Counter;

  private constructor(
    private readonly deps: OtaServiceDeps,
    readonly cache: ArtifactCache,
  ) {
    const { config, db, clock, log, metrics } = deps;
    const ota = config.ota!;
    this.stream = config.streams.some((s) => s.name === 'ota') ? 'ota' : config.streams[0]!.name;
    this.mReleases = metrics.counter('outpost_ota_releases_total', 'Release manifests received, by outcome', ['outcome']);
    this.store = new ReleaseStore(db, new TrustedKeys(ota.trustedKeys));
    this.store.onUntrusted = (release, why) => {
      log.warn({ release, why }, 'stored release no longer verifies with the configured keys; skipped');
      this.report({ release, event: 'untrusted', details: [why] });
    };
    this.rollouts = new Rollouts(db, this.store, cache, clock, log.child({ component: 'rollout' }), metrics, (e) => this.report(e));
    this.fetcher = new ReleaseFetcher(this.store, cache, deps.link, clock, log.child({ component: 'ota-fetch' }), metrics, {
      idleTimeoutMs: ota.fetchIdleTimeoutMs,
      onReady: (m) => {
        this.report({ release: m.release, event: 'cached' });
        this.rollouts.start(m);
      },
      onFailed: (m, reason, detail) => this.report({ release: m.release, event: 'fetch-failed', result: reason, details: [detail] }),
    });
    this.server = new DdiServer(
      this.rollouts,
      {
        tenant: ota.server.tenant,
        pollSeconds: ota.server.pollSeconds,
        gatewayToken: ota.server.gatewayToken,
        targetTokens: ota.server.targetTokens,
        maxTransfers: ota.server.maxTransfers,
        chunkCacheBytes: ota.server.chunkCacheBytes,
        publicUrl: ota.server.publicUrl,
      },
      log.child({ component: 'ddi' }),
      metrics,
    );
  }

  static async start(deps: OtaServiceDeps): Promise<OtaService> {
    const ota = deps.config.ota;
    if (!ota) throw new Error('no ota section in the config');
    migrate(deps.db, 'ota', [...otaMigrations, ...rolloutMigrations]);
    const cache = new ArtifactCache(ota.cacheDir ?? join(dirname(deps.config.storage.path), 'ota-cache'), ota.cacheBytes);
    const svc = new OtaService(deps, cache);
    const { topicPrefix } = deps.config.cloud;
    const gw = deps.config.gateway.id;
    deps.link.subscribe(otaTopics.releases(topicPrefix, gw), (_t, payload) => svc.receive(payload));
    deps.link.subscribe(otaTopics.commands(topicPrefix, gw), (topic, payload) => svc.cloudCommand(topic, payload));
    deps.link.onLinkUp(() => svc.fetcher.wake());
    // Releases that were ready when the gateway stopped roll on; unfinished downloads resume.
    for (const r of svc.store.list(['ready'])) svc.rollouts.start(r.manifest);
    svc.rollouts.resumeAll();
    svc.fetcher.start();
    await svc.server.listen(ota.server.host, ota.server.port);
    return svc;
  }

  get port(): number {
    return this.server.port;
  }

  /** A signed release envelope from the cloud (or the CLI). */
  receive(payload: Buffer | string): { accepted: boolean; release?: string; reason?: string; message?: string } {
    const now = this.deps.clock.now();
    let raw: unknown;
    try {
      raw = JSON.parse(payload.toString());
    } catch (err) {
      return this.refused(new ManifestRefused('malformed', `release message is not JSON: ${(err as Error).message}`), undefined);
    }
    try {
      const { manifest, known } = this.store.accept(raw, now);
      if (known) return { accepted: true, release: manifest.release };
      this.mReleases.inc({ outcome: 'accepted' });
      this.deps.log.info({ release: manifest.release, version: manifest.version }, 'release accepted');
      this.report({ release: manifest.release, event: 'accepted' });
      this.fetcher.wake();
      return { accepted: true, release: manifest.release };
    } catch (err) {
      if (err instanceof ManifestRefused) return this.refused(err, raw);
      throw err;
    }
  }

  private refused(err: ManifestRefused, raw: unknown): { accepted: false; reason: string; message: string; release?: string } {
    this.mReleases.inc({ outcome: err.reason });
    // The release name, when the payload says one (for the report only: nothing else is used).
    let release = '?';
    try {
      const p = (raw as { payload?: unknown } | undefined)?.payload;
      const name = typeof p === 'string' ? (JSON.parse(p) as { release?: unknown }).release : undefined;
      if (typeof name === 'string' && /^[A-Za-z0-9._-]{1,64}$/.test(name)) release = name;
    } catch {
      // not JSON: no name
    }
    this.deps.log.warn({ release, reason: err.reason, detail: err.message }, 'release refused');
    this.report({ release, event: 'refused', result: err.reason, details: [err.message] });
    return { accepted: false, reason: err.reason, message: err.message, release };
  }

  private cloudCommand(topic: string, payload: Buffer): void {
    const release = topic.split('/').at(-2) ?? '';
    let parsed: z.ZodSafeParseResult<z.output<typeof commandSchema>>;
    try {
      parsed = commandSchema.safeParse(JSON.parse(payload.toString()));
    } catch (err) {
      this.deps.log.warn({ topic, err: (err as Error).message }, 'rollout command is not JSON');
      this.mReleases.inc({ outcome: 'bad-command' });
      return;
    }
    if (!parsed.success) {
      this.deps.log.warn({ topic, problems: parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`) }, 'rollout command refused');
      this.mReleases.inc({ outcome: 'bad-command' });
      return;
    }
    this.rollouts.command(release, parsed.data.action, parsed.data.at);
  }

  /** An OTA event to the cloud, as a reading of point `ota` (device: the child, or the gateway). */
  private report(e: OtaEvent): void {
    const { sequence, config, clock, pipeline, log } = this.deps;
    const next = sequence.next();
    let text = JSON.stringify(e);
    if (text.length > 1024) text = JSON.stringify({ ...e, details: e.details?.map((d) => d.slice(0, 120)).slice(-3) }).slice(0, 1024);
    const envelope = makeEnvelope({ id: next.id, seq: next.seq, device: e.device ?? config.gateway.id, point: OTA_POINT, value: text, quality: 'good', ts: clock.now() });
    pipeline.append([{ stream: this.stream, envelope }]).catch((err: unknown) => log.error({ err: (err as Error).message, event: e.event }, 'ota event not stored'));
  }

  status(): { releases: Array<{ release: string; version: string; state: string; detail?: string }>; rollouts: RolloutStatus[]; fetching?: unknown; cache: { usedBytes: number; quotaBytes: number } } {
    return {
      releases: this.store.list().map((r) => ({ release: r.manifest.release, version: r.manifest.version, state: r.state, ...(r.detail ? { detail: r.detail } : {}) })),
      rollouts: this.rollouts.list(),
      ...(this.fetcher.progress ? { fetching: this.fetcher.progress } : {}),
      cache: { usedBytes: this.cache.usedBytes(), quotaBytes: this.cache.quotaBytes },
    };
  }

  async stop(): Promise<void> {
    await this.fetcher.stop();
    await this.server.close();
    this.rollouts.stop();
  }
}
