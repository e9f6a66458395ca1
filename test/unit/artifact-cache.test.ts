import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fetchArtifact } from '../../cloud-bridge/artifact-fetch.js';
import { FetchError } from '../../runtime/contracts/index.js';
import { ArtifactCache, ArtifactMismatch, CacheFull } from '../../ota/artifact-cache.js';
import { ArtifactOrigin } from '../../sim/ota/artifact-origin.js';

/** The FetchError a download fails with (the test fails if it succeeds). */
async function fetchFailure(p: Promise<number>): Promise<FetchError> {
  const r = await p.then(
    (n) => new Error(`fetched ${n} bytes`),
    (err: unknown) => err,
  );
  if (!(r instanceof FetchError)) throw r instanceof Error ? r : new Error(String(r));
  return r;
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Every file under `dir`, as paths relative to it. */
function tree(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

describe('artifact cache and resumable download', () => {
  let dir: string;
  let origin: ArtifactOrigin;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'outpost-cache-'));
    origin = await new ArtifactOrigin().start();
  });
  afterEach(async () => {
    await origin.stop();
  });

  it('resumes an interrupted download with Range requests and serves it only once verified', async () => {
    const body = randomBytes(300_000);
    const url = origin.put('/a/fw.swu', body);
    const cache = new ArtifactCache(join(dir, 'cache'), 10_000_000);
    const h = sha(body);
    origin.breakNext(3, 70_000);
    const target = { url, size: body.length, path: cache.partialPath(h) };
    let failures = 0;
    for (;;) {
      try {
        await fetchArtifact(target, { idleTimeoutMs: 5000 });
        break;
      } catch (err) {
        expect(err).toBeInstanceOf(FetchError);
        expect((err as FetchError).retryable).toBe(true);
        failures++;
        // A broken download is never served.
        expect(cache.blobPath(h)).toBeUndefined();
      }
    }
    expect(failures).toBe(3);
    expect(origin.requests.map((r) => r.range)).toEqual([undefined, 'bytes=70000-', 'bytes=140000-', 'bytes=210000-']);
    expect(origin.bytesSent).toBe(body.length);
    const d = await cache.commit(h, body.length);
    expect(d.sha1).toBe(createHash('sha1').update(body).digest('hex'));
    expect(readFileSync(cache.blobPath(h)!).equals(body)).toBe(true);
    expect(tree(cache.root)).toEqual([`blobs/${h}`]);
  });

  it('resumes across a restart: a new cache over the same directory continues the partial file', async () => {
    const body = randomBytes(200_000);
    const url = origin.put('/a/x.bin', body);
    const h = sha(body);
    const first = new ArtifactCache(join(dir, 'c'), 1e7);
    origin.breakNext(1, 120_000);
    await expect(fetchArtifact({ url, size: body.length, path: first.partialPath(h) })).rejects.toThrow(FetchError);
    const again = new ArtifactCache(join(dir, 'c'), 1e7);
    expect(again.partialBytes(h)).toBe(120_000);
    expect(again.blobPath(h)).toBeUndefined();
    expect(await fetchArtifact({ url, size: body.length, path: again.partialPath(h) })).toBe(80_000);
    await again.commit(h, body.length);
    expect(again.blobPath(h)).toBeDefined();
  });

  it('deletes a download whose digest does not match and never serves it', async () => {
    const body = randomBytes(50_000);
    const url = origin.put('/a/y.bin', body);
    const claimed = sha(Buffer.from('something else'));
    const cache = new ArtifactCache(join(dir, 'c'), 1e7);
    await fetchArtifact({ url, size: body.length, path: cache.partialPath(claimed) });
    await expect(cache.commit(claimed, body.length)).rejects.toThrow(ArtifactMismatch);
    expect(cache.blobPath(claimed)).toBeUndefined();
    expect(tree(cache.root)).toEqual([]);
  });

  it('refuses an origin that sends more than the manifest size, or a different file size', async () => {
    const body = randomBytes(10_000);
    const url = origin.put('/a/z.bin', body);
    const cache = new ArtifactCache(join(dir, 'c'), 1e7);
    const h = sha(body);
    const e = await fetchFailure(fetchArtifact({ url, size: 5000, path: cache.partialPath(h) }));
    // Its Content-Length already says so (without one, the bytes past the size would be refused).
    expect(e.message).toBe("origin's file is 10000 bytes, the manifest says 5000");
    expect(e.retryable).toBe(false);
    writeFileSync(cache.partialPath(h), body.subarray(0, 100));
    const e2 = await fetchFailure(fetchArtifact({ url, size: 20_000, path: cache.partialPath(h) }));
    expect(e2.message).toContain('manifest says 20000');
    const e3 = await fetchFailure(fetchArtifact({ url: `${origin.url}/missing`, size: 10, path: cache.partialPath(h) }));
    expect(e3.message).toContain('404');
    expect(e3.retryable).toBe(false);
  });

  it('names are digests only: anything else is refused and nothing is written outside the cache', () => {
    const cache = new ArtifactCache(join(dir, 'c'), 1e7);
    for (const name of ['../../etc/passwd', `${'a'.repeat(63)}/`, 'A'.repeat(64), `..${'a'.repeat(62)}`, '']) {
      expect(() => cache.partialPath(name)).toThrow(/not a sha256 digest/);
      expect(() => cache.blobPath(name)).toThrow(/not a sha256 digest/);
    }
    // Stray files (an interrupted rename's temp file) are cleared when the cache opens.
    writeFileSync(join(dir, 'c', 'blobs', 'tmp-123'), 'x');
    new ArtifactCache(join(dir, 'c'), 1e7);
    expect(tree(join(dir, 'c'))).toEqual([]);
    expect(tree(dir)).toEqual([]);
  });

  it('keeps within its quota by evicting artifacts no active release references, least recently used first', async () => {
    const cache = new ArtifactCache(join(dir, 'c'), 250_000);
    const put = async (n: number, usedAt: number): Promise<string> => {
      const b = randomBytes(n);
      const h = sha(b);
      writeFileSync(cache.partialPath(h), b);
      await cache.commit(h, n);
      cache.touch(h, usedAt);
      return h;
    };
    const old = await put(100_000, 1_000_000);
    const active = await put(100_000, 500_000);
    expect(cache.usedBytes()).toBe(200_000);
    // 100 kB more: the unreferenced one goes, the referenced one stays even though it is older.
    expect(cache.reserve(100_000, new Set([active]))).toEqual([old]);
    expect(existsSync(join(cache.root, 'blobs', active))).toBe(true);
    // More than the quota allows with the active artifact kept: refused, with figures.
    expect(() => cache.reserve(200_000, new Set([active]))).toThrow(CacheFull);
    expect(cache.evictUnreferenced(new Set())).toEqual([active]);
    expect(cache.usedBytes()).toBe(0);
  });
});
