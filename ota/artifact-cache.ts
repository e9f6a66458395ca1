import { createHash } from 'node:crypto';
import { createReadStream, closeSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, statSync, utimesSync } from 'node:fs';
import { join } from 'node:path';

const SHA256 = /^[0-9a-f]{64}$/;

/** Digests of a verified artifact: sha256 is its name; some update agents also want sha1 and md5. */
export interface ArtifactDigests {
  readonly sha256: string;
  readonly sha1: string;
  readonly md5: string;
  readonly size: number;
}

export class CacheFull extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CacheFull';
  }
}

export class ArtifactMismatch extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ArtifactMismatch';
  }
}

/**
 * Content-addressed artifact cache under one directory: `blobs/{sha256}` holds verified files
 * only, `partial/{sha256}` downloads in progress. A name from a manifest never becomes a path:
 * the only file names are sha256 hex digests, checked against a strict pattern. A blob appears
 * by rename after its digest was checked and the file synced, so a crash never leaves a partial
 * file where a verified one is served.
 */
export class ArtifactCache {
  private readonly blobs: string;
  private readonly partial: string;

  constructor(
    readonly root: string,
    readonly quotaBytes: number,
  ) {
    this.blobs = join(root, 'blobs');
    this.partial = join(root, 'partial');
    mkdirSync(this.blobs, { recursive: true });
    mkdirSync(this.partial, { recursive: true });
    // Anything that is not a digest name (a temp file of an interrupted rename, a stray file) goes.
    for (const dir of [this.blobs, this.partial]) {
      for (const f of readdirSync(dir)) if (!SHA256.test(f)) rmSync(join(dir, f), { force: true, recursive: true });
    }
  }

  private static check(sha256: string): string {
    if (!SHA256.test(sha256)) throw new Error(`not a sha256 digest: ${JSON.stringify(sha256.slice(0, 80))}`);
    return sha256;
  }

  /** Path of the verified artifact, or undefined when it is not (yet) in the cache. */
  blobPath(sha256: string): string | undefined {
    const p = join(this.blobs, ArtifactCache.check(sha256));
    try {
      return statSync(p).isFile() ? p : undefined;
    } catch {
      return undefined;
    }
  }

  /** Where the download of `sha256` goes (it may already hold a prefix of it). */
  partialPath(sha256: string): string {
    return join(this.partial, ArtifactCache.check(sha256));
  }

  /** Bytes of `sha256` downloaded so far (0 when nothing). */
  partialBytes(sha256: string): number {
    try {
      return statSync(this.partialPath(sha256)).size;
    } catch {
      return 0;
    }
  }

  removePartial(sha256: string): void {
    rmSync(this.partialPath(sha256), { force: true });
  }

  /** Bytes in the cache: verified artifacts and downloads in progress. */
  usedBytes(): number {
    let n = 0;
    for (const dir of [this.blobs, this.partial]) for (const f of readdirSync(dir)) n += statSync(join(dir, f)).size;
    return n;
  }

  /** The verified artifacts, least recently used first. */
  list(): Array<{ sha256: string; size: number; usedAt: number }> {
    return readdirSync(this.blobs)
      .map((f) => {
        const s = statSync(join(this.blobs, f));
        return { sha256: f, size: s.size, usedAt: s.mtimeMs };
      })
      .sort((a, b) => a.usedAt - b.usedAt);
  }

  /** Marks an artifact as used now (eviction takes the least recently used first). */
  touch(sha256: string, now = Date.now()): void {
    const p = this.blobPath(sha256);
    if (p) utimesSync(p, now / 1000, now / 1000);
  }

  /**
   * Makes room for `bytes` more: removes verified artifacts that no active release references
   * (`keep`), least recently used first, and downloads in progress of artifacts nobody wants.
   * Throws CacheFull, naming the figures, when even that is not enough.
   */
  reserve(bytes: number, keep: ReadonlySet<string>): string[] {
    const evicted: string[] = [];
    for (const f of readdirSync(this.partial)) {
      if (!keep.has(f)) {
        rmSync(join(this.partial, f), { force: true });
        evicted.push(f);
      }
    }
    let used = this.usedBytes();
    for (const a of this.list()) {
      if (used + bytes <= this.quotaBytes) break;
      if (keep.has(a.sha256)) continue;
      rmSync(join(this.blobs, a.sha256), { force: true });
      used -= a.size;
      evicted.push(a.sha256);
    }
    if (used + bytes > this.quotaBytes) {
      throw new CacheFull(`artifact cache quota ${this.quotaBytes} bytes: ${used} in use by active releases, ${bytes} more needed`);
    }
    return evicted;
  }

  /** Removes every verified artifact and download that `keep` does not name. */
  evictUnreferenced(keep: ReadonlySet<string>): string[] {
    const evicted: string[] = [];
    for (const dir of [this.blobs, this.partial]) {
      for (const f of readdirSync(dir)) {
        if (keep.has(f)) continue;
        rmSync(join(dir, f), { force: true });
        evicted.push(f);
      }
    }
    return evicted;
  }

  /** Checks a cached artifact again and returns its digests (removed when it does not match). */
  async reverify(sha256: string, size: number): Promise<ArtifactDigests> {
    const p = this.blobPath(sha256);
    if (!p) throw new ArtifactMismatch(`artifact ${sha256.slice(0, 12)}… is not in the cache`);
    return reverifyBlob(p, sha256, size);
  }

  /**
   * The download of `sha256` is complete: checks its size and digest, syncs it and moves it in
   * with the verified artifacts. A file that does not match is deleted and ArtifactMismatch thrown.
   */
  async commit(sha256: string, size: number): Promise<ArtifactDigests> {
    const src = this.partialPath(sha256);
    const digests = await digestFile(src);
    if (digests.size !== size || digests.sha256 !== sha256) {
      rmSync(src, { force: true });
      throw new ArtifactMismatch(
        digests.size !== size
          ? `artifact ${sha256.slice(0, 12)}…: ${digests.size} bytes downloaded, the manifest says ${size}`
          : `artifact ${sha256.slice(0, 12)}…: sha256 of the download is ${digests.sha256}`,
      );
    }
    const fd = openSync(src, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(src, join(this.blobs, sha256));
    syncDir(this.blobs);
    return digests;
  }
}

/** Digests of a verified artifact again (its record was lost); a file that no longer matches is removed. */
async function reverifyBlob(path: string, sha256: string, size: number): Promise<ArtifactDigests> {
  const d = await digestFile(path);
  if (d.sha256 !== sha256 || d.size !== size) {
    rmSync(path, { force: true });
    throw new ArtifactMismatch(`cached artifact ${sha256.slice(0, 12)}… no longer matches its digest; removed`);
  }
  return d;
}

function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Some filesystems do not sync directories; the rename is still atomic.
  }
}

/** sha256, sha1 and md5 of a file in one pass. */
export async function digestFile(path: string): Promise<ArtifactDigests> {
  const h256 = createHash('sha256');
  const h1 = createHash('sha1');
  const h5 = createHash('md5');
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    const b = chunk as Buffer;
    h256.update(b);
    h1.update(b);
    h5.update(b);
    size += b.length;
  }
  return { sha256: h256.digest('hex'), sha1: h1.digest('hex'), md5: h5.digest('hex'), size };
}
