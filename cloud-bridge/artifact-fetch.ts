import { closeSync, ftruncateSync, openSync, statSync, writeSync } from 'node:fs';
import { FetchError, type FetchOptions, type FetchTarget, errorMessage, redactText, redactUrl } from '../runtime/contracts/index.js';

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/**
 * fetch() refuses a URL with user info (WHATWG Fetch: "Request cannot be constructed from a URL
 * that includes credentials"), so an origin given as `https://user:pass@host/…` gets them as HTTP
 * Basic credentials instead (RFC 7617), which is what such a URL means to an HTTP origin. fetch
 * drops the header on a redirect to another origin.
 */
function splitUserInfo(url: string): { url: string; authorization?: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return { url };
  }
  if (u.username === '' && u.password === '') return { url };
  const decode = (s: string): string => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  };
  const credentials = `${decode(u.username)}:${decode(u.password)}`;
  u.username = '';
  u.password = '';
  return { url: u.toString(), authorization: `Basic ${Buffer.from(credentials).toString('base64')}` };
}

/**
 * Brings `target.path` up to `target.size` bytes from `target.url`, resuming from what the file
 * holds with `Range: bytes=N-` (RFC 9110 §14). An origin that answers 200 instead of 206 sends
 * the whole file: the file starts again. Never writes past `size`: an origin sending more is
 * refused. Resolves with the bytes fetched by this call; throws FetchError otherwise. The caller
 * verifies the digest (ArtifactCache.commit).
 */
export async function fetchArtifact(target: FetchTarget, opts: FetchOptions = {}): Promise<number> {
  let have = fileSize(target.path);
  if (have > target.size) have = 0;
  if (have === target.size) return 0;
  const idleMs = opts.idleTimeoutMs ?? 30_000;
  // Errors name the origin; they reach logs, the status and the cloud (a release's failure detail),
  // so they name it without the credentials a presigned or user-info URL carries.
  const shown = redactUrl(target.url);
  const ctl = new AbortController();
  const onAbort = (): void => ctl.abort(opts.signal?.reason);
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  let idle: NodeJS.Timeout | undefined;
  const arm = (): void => {
    clearTimeout(idle);
    idle = setTimeout(() => ctl.abort(new FetchError(`no data from the origin for ${idleMs} ms`, true)), idleMs);
  };
  let fd: number | undefined;
  let fetched = 0;
  try {
    arm();
    let res: Response;
    try {
      const { url, authorization } = splitUserInfo(target.url);
      res = await fetch(url, {
        headers: { ...(authorization ? { authorization } : {}), ...opts.headers, ...(have > 0 ? { range: `bytes=${have}-` } : {}) },
        signal: ctl.signal,
        redirect: 'follow',
      });
    } catch (err) {
      throw asFetchError(err, ctl.signal, `GET ${shown}`);
    }
    if (res.status === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
      if (!m || Number(m[1]) !== have) {
        await res.body?.cancel();
        throw new FetchError(`origin answered range ${have}- with Content-Range ${JSON.stringify(res.headers.get('content-range'))}`, true);
      }
      if (m[3] !== '*' && Number(m[3]) !== target.size) {
        await res.body?.cancel();
        throw new FetchError(`origin's file is ${m[3]} bytes, the manifest says ${target.size}`, false);
      }
    } else if (res.status === 200) {
      const length = res.headers.get('content-length');
      if (length !== null && Number(length) !== target.size) {
        await res.body?.cancel();
        throw new FetchError(`origin's file is ${length} bytes, the manifest says ${target.size}`, false);
      }
      have = 0;
    } else if (res.status === 416) {
      await res.body?.cancel();
      // Nothing at or after byte `have`: the origin's file is shorter than the manifest says.
      const total = /^bytes \*\/(\d+)$/.exec(res.headers.get('content-range') ?? '')?.[1];
      throw new FetchError(`origin has no bytes from ${have} on${total !== undefined ? ` (its file is ${total} bytes)` : ''}, the manifest says ${target.size}`, false);
    } else {
      await res.body?.cancel();
      // 5xx, 408 and 429 are the origin's trouble for now; other answers will not change.
      const retry = res.status >= 500 || res.status === 408 || res.status === 429;
      throw new FetchError(`origin answered ${res.status} ${res.statusText} for ${shown}`, retry);
    }
    fd = openSync(target.path, have === 0 ? 'w' : 'r+');
    if (have === 0) ftruncateSync(fd, 0);
    if (!res.body) throw new FetchError('origin sent no body', true);
    try {
      for await (const chunk of res.body) {
        const b = chunk as Uint8Array;
        if (have + b.length > target.size) {
          ctl.abort();
          throw new FetchError(`origin sent more than the manifest's ${target.size} bytes`, false);
        }
        opts.admit?.(b.length);
        writeSync(fd, b, 0, b.length, have);
        have += b.length;
        fetched += b.length;
        opts.onProgress?.(have, fetched);
        if (opts.pace) {
          // Waiting here is ours, not the origin's silence.
          clearTimeout(idle);
          await opts.pace();
        }
        arm();
      }
    } catch (err) {
      throw asFetchError(err, ctl.signal, `download of ${shown} broke at byte ${have}`);
    }
    if (have < target.size) throw new FetchError(`origin closed the transfer at byte ${have} of ${target.size}`, true);
    return fetched;
  } finally {
    clearTimeout(idle);
    opts.signal?.removeEventListener('abort', onAbort);
    if (fd !== undefined) closeSync(fd);
  }
}

function asFetchError(err: unknown, signal: AbortSignal, what: string): FetchError {
  if (err instanceof FetchError) return err;
  if (signal.aborted && signal.reason instanceof FetchError) return signal.reason;
  const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : '';
  // undici's messages quote the URL it was given ("a URL that includes credentials: …").
  const text = `${what}: ${errorMessage(err)}${cause}`;
  const safe = redactText(text);
  // A cause would bring the unredacted text back: errorMessage() appends a cause's message.
  return new FetchError(safe, true, safe === text ? { cause: err } : undefined);
}
