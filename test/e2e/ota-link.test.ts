import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Clock } from '../../runtime/contracts/index.js';
import { manifest, otaSite } from '../helpers/ota-site.js';
import { sleep, waitFor } from '../helpers/wait.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const DAY_MS = 86_400_000;

/** The gateway's clock: real time plus an offset the test may move (timers stay real). */
function offsetClock(): Clock & { offset: number } {
  const c = {
    offset: 0,
    now: () => Date.now() + c.offset,
    setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
    clearTimeout: (h: unknown) => clearTimeout(h as ReturnType<typeof setTimeout>),
  };
  return c;
}

describe('OTA downloads on a metered link', () => {
  it('downloads only inside sync windows, held to the rate cap, resuming across windows with Range requests', async () => {
    const RATE = 400_000;
    // A 1.5 s window every 5 s (node-cron with a seconds field).
    const s = await otaSite(cleanup, {}, { cloud: { syncWindows: [{ cron: '*/5 * * * * *', durationMs: 1500 }], maxBytesPerS: RATE } });
    const image = randomBytes(1_600_000);
    const m = manifest(s, '2.0.0', image, { phases: [{ share: 100 }], failureThreshold: 0.5, maxRetries: 1 });
    // Retained: the gateway gets it when its link next opens.
    await s.publish(m);
    const fetched = (): Promise<number> => s.gateway.metrics.total('outpost_ota_fetched_bytes_total');
    const samples: Array<{ t: number; link: string; fetched: number }> = [];
    const ready = (): boolean => s.gateway.status().ota?.releases.find((r) => r.release === 'sensor-fw-2.0.0')?.state === 'ready';
    const deadline = Date.now() + 30_000;
    while (!ready()) {
      if (Date.now() > deadline) throw new Error(`not ready after 30 s: ${JSON.stringify(samples.at(-1))}, requests ${JSON.stringify(s.origin.requests)}`);
      samples.push({ t: Date.now(), link: s.gateway.status().link, fetched: await fetched() });
      await sleep(50);
    }
    // Nothing was downloaded while the link was idle (between windows).
    let idlePairs = 0;
    for (let i = 1; i < samples.length; i++) {
      if (samples[i - 1]!.link === 'idle' && samples[i]!.link === 'idle') {
        idlePairs++;
        expect(samples[i]!.fetched, `sample ${i}`).toBe(samples[i - 1]!.fetched);
      }
    }
    expect(idlePairs).toBeGreaterThan(10);
    // The download spanned windows: paused at each close, resumed from the bytes on disk.
    const ranges = s.origin.requests.filter((r) => r.path.endsWith('.swu')).map((r) => r.range);
    expect(ranges.length).toBeGreaterThanOrEqual(2);
    expect(ranges[0]).toBeUndefined();
    const from = ranges.slice(1).map((r) => Number(/^bytes=(\d+)-$/.exec(r ?? '')?.[1]));
    for (let i = 0; i < from.length; i++) expect(from[i]).toBeGreaterThan(i === 0 ? 0 : from[i - 1]!);
    expect(await fetched()).toBe(image.length);
    // Held to the rate cap: one second of burst, the rest at RATE.
    const first = samples.find((x) => x.fetched > 0)!;
    expect(Date.now() - first.t).toBeGreaterThanOrEqual(((image.length - RATE - 2 * 65_536) / RATE) * 1000);
    expect(existsSync(join(s.dir, 'ota-cache', 'blobs', sha(image)))).toBe(true);
    // The download's bytes count against the link like telemetry.
    expect(s.gateway.status().uplink.sentToday).toBeGreaterThanOrEqual(image.length);
  });

  it('pauses a download when the daily budget is spent and resumes it from the partial file the next UTC day', async () => {
    const clock = offsetClock();
    const BUDGET = 1_000_000;
    const s = await otaSite(cleanup, {}, { cloud: { dailyBytes: BUDGET }, clock });
    const image = randomBytes(1_500_000);
    const m = manifest(s, '2.0.0', image, { phases: [{ share: 100 }], failureThreshold: 0.5, maxRetries: 1 });
    // The gateway's day ends in 10 s.
    const midnight = Math.ceil((Date.now() + 20_000) / DAY_MS) * DAY_MS;
    clock.offset = midnight - 10_000 - Date.now();
    const state = (): string | undefined => s.gateway.status().ota?.releases.find((r) => r.release === 'sensor-fw-2.0.0')?.state;
    await s.publish(m);
    await waitFor('the download paused', async () => (await s.gateway.metrics.total('outpost_ota_fetches_total')) >= 1, 8000);
    const partial = join(s.dir, 'ota-cache', 'partial', sha(image));
    const paused = await s.gateway.metrics.total('outpost_ota_fetched_bytes_total');
    expect(paused).toBeGreaterThan(0);
    expect(paused).toBeLessThanOrEqual(BUDGET);
    expect(state()).toBe('fetching');
    expect(existsSync(partial)).toBe(true);
    expect(s.gateway.status().uplink.sentToday).toBeGreaterThanOrEqual(BUDGET);
    // Nothing more until midnight (gateway time).
    while (clock.now() < midnight - 500) {
      expect(await s.gateway.metrics.total('outpost_ota_fetched_bytes_total')).toBe(paused);
      expect(s.origin.requests).toHaveLength(1);
      await sleep(200);
    }
    await waitFor('the release ready on the next day', () => state() === 'ready', 10_000);
    expect(clock.now()).toBeGreaterThanOrEqual(midnight);
    expect(s.origin.requests.map((r) => r.range)).toEqual([undefined, `bytes=${paused}-`]);
    expect(await s.gateway.metrics.total('outpost_ota_fetched_bytes_total')).toBe(image.length);
    expect(existsSync(partial)).toBe(false);
    expect(existsSync(join(s.dir, 'ota-cache', 'blobs', sha(image)))).toBe(true);
    // The new day's budget carries the rest of the download.
    expect(s.gateway.status().uplink.sentToday).toBeGreaterThanOrEqual(image.length - paused);
    expect(s.gateway.status().uplink.sentToday).toBeLessThan(BUDGET);
  });
});
