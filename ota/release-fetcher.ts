import { Backoff, DownloadPaused, FetchError, type Clock, type ArtifactLink, type Counter, type Logger, type Metrics, type TimerHandle, errorMessage } from '../runtime/contracts/index.js';
import { ArtifactMismatch, CacheFull, type ArtifactCache } from './artifact-cache.js';
import type { ArtifactRef, Manifest } from './manifest.js';
import { artifactsOf, type ReleaseStore } from './release-store.js';

/**
 * A running transfer waits this long at most for the link's rate cap (holding the origin back);
 * a longer wait, or a closed link (a sync window ended, the daily budget spent), stops it, to resume
 * later with a Range request from the bytes on disk.
 */
const MAX_THROTTLE_MS = 5000;

export interface ReleaseFetcherOptions {
  readonly backoff?: { initialMs: number; maxMs: number } | undefined;
  readonly idleTimeoutMs?: number | undefined;
  /** A download whose digest does not match this many times in a row fails its release. */
  readonly maxMismatches?: number | undefined;
  /** Called when every artifact of a release is verified in the cache. */
  readonly onReady?: ((m: Manifest) => void) | undefined;
  /** Called when a release cannot be fetched (origin refuses, wrong digest, cache full). */
  readonly onFailed?: ((m: Manifest, reason: string, detail: string) => void) | undefined;
}

export interface FetchProgress {
  readonly release: string;
  readonly artifact: string;
  readonly have: number;
  readonly size: number;
}

/**
 * Fetches the artifacts of accepted releases into the cache, once each, oldest release first:
 * resumable (the partial file survives link drops and restarts), verified before it counts,
 * within what the link gate allows, with backoff between attempts.
 */
export class ReleaseFetcher {
  private stopped = false;
  private running: Promise<void> | undefined;
  private abort: AbortController | undefined;
  private sleeping: { timer: TimerHandle; resolve: () => void } | undefined;
  private current: FetchProgress | undefined;
  private readonly backoff: Backoff;
  private readonly mismatches = new Map<string, number>();
  private readonly mBytes: Counter;
  private readonly mResults: Counter;

  constructor(
    private readonly store: ReleaseStore,
    private readonly cache: ArtifactCache,
    private readonly gate: ArtifactLink,
    private readonly clock: Clock,
    private readonly log: Logger,
    metrics: Metrics,
    private readonly opts: ReleaseFetcherOptions = {},
  ) {
    const b = opts.backoff ?? { initialMs: 1000, maxMs: 60_000 };
    this.backoff = new Backoff(b.initialMs, b.maxMs);
    this.mBytes = metrics.counter('outpost_ota_fetched_bytes_total', 'Artifact bytes downloaded from the cloud origin');
    this.mResults = metrics.counter('outpost_ota_fetches_total', 'Artifact download attempts by outcome', ['outcome']);
  }

  get progress(): FetchProgress | undefined {
    return this.current;
  }

  start(): void {
    this.running ??= this.loop().finally(() => {
      this.running = undefined;
    });
  }

  /** A release arrived or the link came back: look again now. */
  wake(): void {
    const s = this.sleeping;
    if (s) {
      this.sleeping = undefined;
      this.clock.clearTimeout(s.timer);
      s.resolve();
    }
    if (!this.running && !this.stopped) this.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort?.abort();
    this.wake();
    await this.running;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = this.clock.setTimeout(() => {
        this.sleeping = undefined;
        resolve();
      }, ms);
      this.sleeping = { timer, resolve };
    });
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      const next = this.store.list(['fetching'])[0];
      if (!next) return;
      const m = next.manifest;
      const missing = artifactsOf(m).find((a) => !this.cache.blobPath(a.sha256) || !this.store.artifact(a.sha256));
      if (!missing) {
        this.store.setState(m.release, 'ready');
        this.log.info({ release: m.release }, 'release artifacts verified in the cache');
        this.opts.onReady?.(m);
        continue;
      }
      const wait = this.gate.delayMs();
      if (wait > 0) {
        await this.sleep(Math.min(wait, 60_000));
        continue;
      }
      try {
        await this.fetchOne(m, missing);
        this.backoff.reset();
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof DownloadPaused) {
          this.mResults.inc({ outcome: 'paused' });
          this.log.info({ release: m.release, artifact: missing.name, resumeInMs: err.resumeInMs }, 'artifact download paused: the link is closed for downloads');
          continue;
        }
        const failure = this.classify(m, missing, err);
        if (failure) {
          this.store.setState(m.release, 'failed', failure.detail);
          this.log.warn({ release: m.release, reason: failure.reason, detail: failure.detail }, 'release not fetched');
          this.opts.onFailed?.(m, failure.reason, failure.detail);
          continue;
        }
        const delay = this.backoff.next();
        this.log.info({ release: m.release, err: errorMessage(err), retryInMs: delay }, 'artifact download interrupted; resuming later');
        await this.sleep(delay);
      }
    }
  }

  /** Undefined: try again later. Otherwise the release fails for this reason. */
  private classify(m: Manifest, a: ArtifactRef, err: unknown): { reason: string; detail: string } | undefined {
    const detail = errorMessage(err);
    if (err instanceof CacheFull) {
      this.mResults.inc({ outcome: 'cache-full' });
      return { reason: 'cache-full', detail };
    }
    if (err instanceof ArtifactMismatch) {
      this.mResults.inc({ outcome: 'mismatch' });
      const n = (this.mismatches.get(a.sha256) ?? 0) + 1;
      this.mismatches.set(a.sha256, n);
      return n >= (this.opts.maxMismatches ?? 3) ? { reason: 'artifact-mismatch', detail: `${a.name}: ${detail} (${n} downloads)` } : undefined;
    }
    if (err instanceof FetchError) {
      this.mResults.inc({ outcome: err.retryable ? 'interrupted' : 'refused' });
      return err.retryable ? undefined : { reason: 'origin-refused', detail: `${a.name}: ${detail}` };
    }
    this.mResults.inc({ outcome: 'error' });
    this.log.error({ release: m.release, err: detail }, 'artifact download failed unexpectedly');
    return undefined;
  }

  /**
   * A chunk arrived: it counts against the link (it crossed it). A link closed for downloads (sync
   * window ended, daily budget spent) stops the transfer before the chunk is written.
   */
  private admit(bytes: number): void {
    this.gate.spend(bytes);
    if (this.stopped) throw new DownloadPaused('the gateway is stopping', 0);
    if (this.gate.closed()) throw new DownloadPaused(`the link is closed for downloads for ${Math.round(this.gate.delayMs() / 1000)} s`, this.gate.delayMs());
  }

  /**
   * After a chunk was written: the transfer goes on when the link allows, at once or after a short
   * wait for the rate cap; a longer wait stops it (DownloadPaused; it resumes from the file).
   */
  private async pace(): Promise<void> {
    for (;;) {
      if (this.stopped) throw new DownloadPaused('the gateway is stopping', 0);
      const wait = this.gate.delayMs();
      if (wait === 0) return;
      if (wait > MAX_THROTTLE_MS || this.gate.closed()) throw new DownloadPaused(`the link allows downloads again in ${Math.round(wait / 1000)} s`, wait);
      await this.sleep(wait);
    }
  }

  private async fetchOne(m: Manifest, a: ArtifactRef): Promise<void> {
    if (this.cache.blobPath(a.sha256)) {
      // In the cache from an earlier run, but its digests row is missing: verify it again.
      const digests = await this.cache.reverify(a.sha256, a.size);
      this.store.recordArtifact(digests, this.clock.now());
      return;
    }
    const have = this.cache.partialBytes(a.sha256);
    this.cache.reserve(a.size - Math.min(have, a.size), this.store.referenced());
    this.current = { release: m.release, artifact: a.name, have, size: a.size };
    this.abort = new AbortController();
    let last = 0;
    try {
      await this.gate.download(
        { url: a.url, size: a.size, path: this.cache.partialPath(a.sha256) },
        {
          signal: this.abort.signal,
          idleTimeoutMs: this.opts.idleTimeoutMs,
          admit: (bytes) => this.admit(bytes),
          pace: () => this.pace(),
          onProgress: (now, fetched) => {
            this.current = { release: m.release, artifact: a.name, have: now, size: a.size };
            this.mBytes.inc({}, fetched - last);
            last = fetched;
          },
        },
      );
    } finally {
      this.abort = undefined;
      this.current = undefined;
    }
    const digests = await this.cache.commit(a.sha256, a.size);
    this.mismatches.delete(a.sha256);
    this.store.recordArtifact(digests, this.clock.now());
    this.mResults.inc({ outcome: 'verified' });
    this.log.info({ release: m.release, artifact: a.name, bytes: a.size }, 'artifact verified');
  }
}
