import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { SiteConfigInput } from '../runtime/config/schema.js';
import { errorMessage } from '../runtime/contracts/index.js';
import { SimCloud } from '../sim/cloud.js';
import { LinkProxy } from '../sim/link-proxy.js';
import { SimSite } from '../sim/site.js';
import { ConfiguredGateway } from './configured-gateway.js';
import { emergencyCleanup, fmtInt, rssMiB, Scope, sleep } from './harness.js';
import { median, round } from './stats.js';

/**
 * The soak: does the gateway leak? The demo site (runtime/demo.ts: two energy meters and a boiler
 * over Modbus TCP, four MQTT pumps, the demo's rules) at a multiple of its rates, against the
 * simulated cloud behind a fault proxy that takes the link away on a schedule, for a bounded time.
 * The gateway runs as `outpost start` in its own process with its launch flags; its RSS
 * (/proc/PID/status) and V8 heap in use (`memory.heapUsed` of GET /api/v1/status) are sampled.
 * At the end: the growth of RSS and heap between the outage cycle around minute 5 and the last
 * one (aim < 5 %), and that every reading the children had acknowledged, and every reading the
 * outbox took, reached the cloud. Not part of `npm run bench` and not run in CI: `npm run soak`.
 */

const HELP = `npm run soak -- [options]   (builds, then runs node dist/bench/soak.js)

  --minutes M         how long the site runs (default 30; growth needs at least 8)
  --rate N            the demo site's rates times N (default 10: pumps every 25 ms, polls every 50 ms)
  --outage-every S    the cloud link goes down every S seconds (default 120)
  --outage-for S      for S seconds (default 30)
  --json              one JSON object on stdout at the end
`;

const GATEWAY_ID = 'soak-gw1';
const SAMPLE_MS = 5000;
/** Where the first comparison window starts: the gateway has warmed up (JIT, caches, SQLite pages). */
const BASELINE_FROM_MS = 4 * 60_000;
const GROWTH_AIM = 0.05;

interface Sample {
  readonly t: number;
  readonly rssMiB: number;
  readonly heapMiB: number | undefined;
  readonly outbox: number | undefined;
  readonly linkUp: boolean;
}

/** The demo's rules (runtime/demo.ts): what an engineer would send to the cloud from this site. */
const RULES: SiteConfigInput['rules'] = [
  { id: 'pumps-raw', type: 'filter', match: { device: 'pump-*', point: '*' } },
  { id: 'meter-electrical', type: 'filter', match: { device: 'meter-*', point: '*' } },
  { id: 'meter-temperature-plausible', type: 'filter', match: { device: 'meter-*', point: 'temperature' }, min: -40, max: 150 },
  { id: 'power-5s', type: 'window', match: { device: 'meter-*', point: 'power' }, windowMs: 5000, aggregates: ['avg', 'min', 'max', 'count'] },
  { id: 'boilers', type: 'filter', match: { device: 'boiler-*', point: '*' } },
];

/** One line now and then: in place on a terminal, every 30 s otherwise (a log file). */
class Live {
  private last = 0;
  private readonly tty = process.stderr.isTTY;
  show(text: string): void {
    if (this.tty) process.stderr.write(`\r\x1b[2K${text}`);
    else if (Date.now() - this.last >= 30_000) {
      this.last = Date.now();
      process.stderr.write(`${text}\n`);
    }
  }
  end(): void {
    if (this.tty) process.stderr.write('\n');
  }
}

interface Window {
  readonly from: number;
  readonly to: number;
  readonly samples: number;
  readonly rssMedian: number;
  readonly heapMedian: number;
  /** The lowest heap in use of the window: after a full collection, the live set. */
  readonly heapFloor: number;
}

function window(samples: readonly Sample[], from: number, to: number): Window {
  const w = samples.filter((s) => s.t >= from && s.t < to);
  const heaps = w.flatMap((s) => (s.heapMiB === undefined ? [] : [s.heapMiB]));
  return { from, to, samples: w.length, rssMedian: median(w.map((s) => s.rssMiB)), heapMedian: median(heaps), heapFloor: heaps.length > 0 ? Math.min(...heaps) : 0 };
}

const growth = (a: number, b: number): number => (a > 0 ? (b - a) / a : 0);
const pct = (x: number): string => `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)} %`;

async function soak(opts: { minutes: number; rate: number; outageEveryS: number; outageForS: number; json: boolean }): Promise<number> {
  const scope = new Scope();
  const live = new Live();
  try {
    const dir = scope.dir(mkdtempSync(join(tmpdir(), 'outpost-soak-')));
    const cloud = await SimCloud.start();
    scope.defer(() => cloud.stop());
    const link = await LinkProxy.start({ port: cloud.port });
    scope.defer(() => link.close());
    const site = await SimSite.start({ meters: 2, boilers: 1, children: 4, childIntervalMs: Math.max(1, Math.round(250 / opts.rate)), pollIntervalMs: Math.max(10, Math.round(500 / opts.rate)) });
    scope.defer(() => site.stop());
    const groupSecret = randomBytes(32).toString('base64url');
    const gwDir = join(dir, 'gateway');
    mkdirSync(gwDir);
    const config: SiteConfigInput = {
      gateway: { id: GATEWAY_ID },
      broker: { host: '127.0.0.1', port: 0 },
      identities: { groups: [{ name: 'pumps', devices: 'pump-*', secret: groupSecret }] },
      http: { host: '127.0.0.1', port: 0 },
      // Spread: the entries become plain objects, as a config file would give them.
      devices: site.devices().map((d) => ({ ...d })),
      rules: RULES,
      cloud: { url: link.url, batchSize: 200, backoff: { initialMs: 200, maxMs: 2000 } },
      storage: { path: join(gwDir, 'outpost.db') },
    };
    const gw = await ConfiguredGateway.start(gwDir, config);
    scope.pid(gw.pid);
    scope.defer(() => gw.stop());
    site.startChildren(gw.brokerUrl, groupSecret);

    const t0 = Date.now();
    const runMs = opts.minutes * 60_000;
    const samples: Sample[] = [];
    let crashed = false;
    // Outages on a fixed schedule: down at every multiple of outageEvery, for outageFor.
    const outages = setInterval(() => {
      link.down();
      setTimeout(() => link.restore(), opts.outageForS * 1000).unref();
    }, opts.outageEveryS * 1000);
    scope.defer(() => clearInterval(outages));
    while (Date.now() - t0 < runMs) {
      const rss = rssMiB(gw.pid);
      if (rss === undefined) {
        crashed = true;
        break;
      }
      const st = await gw.status();
      const memory = st?.memory as { heapUsed?: number } | undefined;
      const outbox = (st?.outbox as { depth?: number } | undefined)?.depth;
      samples.push({ t: Date.now() - t0, rssMiB: rss, heapMiB: memory?.heapUsed, outbox, linkUp: link.up });
      const first = window(samples, BASELINE_FROM_MS, BASELINE_FROM_MS + opts.outageEveryS * 1000);
      const now = samples.at(-1)!;
      live.show(
        `soak ${((now.t / 60_000) | 0).toString().padStart(2)}:${String(Math.floor(now.t / 1000) % 60).padStart(2, '0')}/${opts.minutes}:00  link ${link.up ? 'up  ' : 'DOWN'}  RSS ${rss.toFixed(1)} MiB  heap ${now.heapMiB?.toFixed(1) ?? '?'} MiB` +
          `  outbox ${fmtInt(outbox ?? 0)}  delivered ${fmtInt(cloud.ledger.uniqueFrom(GATEWAY_ID))}  acked by pumps ${fmtInt(site.children.reduce((n, c) => n + c.acked.length, 0))}` +
          (first.samples > 0 && now.t >= first.to ? `  since minute 5: RSS ${pct(growth(first.rssMedian, rss))}` : ''),
      );
      await sleep(SAMPLE_MS - ((Date.now() - t0) % SAMPLE_MS));
    }
    clearInterval(outages);

    // The end: the pumps stop (their last PUBACKs awaited) and the link comes back. The Modbus
    // devices are still polled, so the outbox is never quite empty: the pump readings are checked
    // one by one, the rest by the outbox's accounts.
    link.restore();
    await site.stopChildren();
    const acked = site.childAcked();
    const drainUntil = Date.now() + 120_000;
    while (!crashed && Date.now() < drainUntil && cloud.ledger.missing(acked).length > 0) {
      live.show(`soak draining: outbox ${fmtInt((await gw.outboxDepth()) ?? 0)}`);
      await sleep(1000);
    }
    live.end();
    const final = crashed ? undefined : await gw.status();
    const outbox = final?.outbox as { appended: number; delivered: number; replayed: number; dropped: number; expired: number; deadLettered: number; depth: number } | undefined;
    const delivered = cloud.ledger.uniqueFrom(GATEWAY_ID);
    const childMissing = cloud.ledger.missing(acked).length;
    // As the demo counts it: what the outbox took is delivered, dropped or expired by a counted
    // policy, dead-lettered or still queued; anything else is lost. And the cloud holds at least
    // what the gateway was told it received (it may hold more: batches not yet acknowledged).
    const unaccounted = outbox ? outbox.appended + outbox.replayed - outbox.dropped - outbox.expired - outbox.deadLettered - outbox.depth - outbox.delivered : -1;
    const notAtCloud = outbox ? Math.max(0, outbox.delivered - delivered) : -1;

    const endMs = crashed ? (samples.at(-1)?.t ?? 0) : runMs;
    const span = opts.outageEveryS * 1000;
    const enough = endMs >= BASELINE_FROM_MS + 2 * span;
    const first = window(samples, BASELINE_FROM_MS, BASELINE_FROM_MS + span);
    const last = window(samples, endMs - span, endMs);
    const rssGrowth = growth(first.rssMedian, last.rssMedian);
    const heapGrowth = growth(first.heapMedian, last.heapMedian);
    const floorGrowth = growth(first.heapFloor, last.heapFloor);
    const perMinute = Array.from({ length: Math.ceil(endMs / 60_000) }, (_, m) => window(samples, m * 60_000, (m + 1) * 60_000));
    const ok = !crashed && enough && rssGrowth < GROWTH_AIM && heapGrowth < GROWTH_AIM && childMissing === 0 && unaccounted === 0 && notAtCloud === 0;
    const figures = {
      minutes: opts.minutes,
      rate: opts.rate,
      outage_every_s: opts.outageEveryS,
      outage_for_s: opts.outageForS,
      outages: link.outages,
      samples: samples.length,
      crashed,
      baseline_window_min: `${first.from / 60_000}-${first.to / 60_000}`,
      last_window_min: `${round(last.from / 60_000, 2)}-${round(last.to / 60_000, 2)}`,
      rss_mib_baseline: round(first.rssMedian, 1),
      rss_mib_last: round(last.rssMedian, 1),
      rss_growth_pct: round(rssGrowth * 100, 2),
      heap_mib_baseline: round(first.heapMedian, 1),
      heap_mib_last: round(last.heapMedian, 1),
      heap_growth_pct: round(heapGrowth * 100, 2),
      heap_floor_mib_baseline: round(first.heapFloor, 1),
      heap_floor_mib_last: round(last.heapFloor, 1),
      heap_floor_growth_pct: round(floorGrowth * 100, 2),
      rss_mib_max: round(Math.max(0, ...samples.map((s) => s.rssMiB)), 1),
      produced: outbox?.appended ?? -1,
      delivered_per_gateway: outbox?.delivered ?? -1,
      delivered,
      not_at_cloud: notAtCloud,
      in_outbox_at_end: outbox?.depth ?? -1,
      duplicates: cloud.ledger.duplicates,
      unaccounted,
      pump_readings_acked: acked.length,
      pump_readings_missing: childMissing,
      ok,
    };
    if (opts.json) process.stdout.write(`${JSON.stringify(figures)}\n`);
    else {
      const lines = [
        `Outpost soak: the demo site at ${opts.rate}× its rates for ${opts.minutes} min, the cloud link down ${opts.outageForS} s every ${opts.outageEveryS} s (${link.outages} outages)${crashed ? '; THE GATEWAY EXITED' : ''}`,
        `minute  RSS MiB (median)  heap MiB (median / lowest)`,
        ...perMinute.map((w, m) => `${String(m + 1).padStart(6)}  ${w.rssMedian.toFixed(1).padStart(16)}  ${w.heapMedian.toFixed(1).padStart(10)} / ${w.heapFloor.toFixed(1)}`),
        enough
          ? `growth from minutes ${first.from / 60_000}-${first.to / 60_000} to the last ${span / 60_000} min: RSS ${first.rssMedian.toFixed(1)} -> ${last.rssMedian.toFixed(1)} MiB (${pct(rssGrowth)}), heap ${first.heapMedian.toFixed(1)} -> ${last.heapMedian.toFixed(1)} MiB (${pct(heapGrowth)}; lowest ${first.heapFloor.toFixed(1)} -> ${last.heapFloor.toFixed(1)}, ${pct(floorGrowth)}); aim < ${GROWTH_AIM * 100} %: ${rssGrowth < GROWTH_AIM && heapGrowth < GROWTH_AIM ? 'met' : 'MISSED'}`
          : `growth: run at least ${(BASELINE_FROM_MS + 2 * span) / 60_000} minutes to compare two whole outage cycles from minute ${BASELINE_FROM_MS / 60_000}`,
        `delivery: ${fmtInt(outbox?.appended ?? 0)} readings into the outbox, ${fmtInt(outbox?.delivered ?? 0)} delivered by the gateway's account (${fmtInt(outbox?.depth ?? 0)} still queued, the Modbus devices still polled), ${fmtInt(delivered)} at the cloud (${fmtInt(cloud.ledger.duplicates)} duplicates removed by id); ${unaccounted} unaccounted, ${notAtCloud} delivered but not at the cloud; ${fmtInt(acked.length)} pump readings acknowledged, ${fmtInt(childMissing)} missing at the cloud`,
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    }
    return ok ? 0 : 1;
  } catch (err) {
    live.end();
    process.stderr.write(`soak: ${errorMessage(err)}\n`);
    return 1;
  } finally {
    await scope.close();
  }
}

async function main(): Promise<number> {
  let values;
  try {
    values = parseArgs({
      options: {
        minutes: { type: 'string', default: '30' },
        rate: { type: 'string', default: '10' },
        'outage-every': { type: 'string', default: '120' },
        'outage-for': { type: 'string', default: '30' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }).values;
  } catch (err) {
    process.stderr.write(`soak: ${errorMessage(err)}\n\n${HELP}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const num = (name: string, v: string, min: number): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name}: expected a number >= ${min}, got "${v}"`);
    return n;
  };
  let opts;
  try {
    opts = { minutes: num('minutes', values.minutes, 1), rate: num('rate', values.rate, 0.1), outageEveryS: num('outage-every', values['outage-every'], 10), outageForS: num('outage-for', values['outage-for'], 1), json: values.json };
    if (opts.outageForS >= opts.outageEveryS) throw new Error('--outage-for must be shorter than --outage-every');
  } catch (err) {
    process.stderr.write(`soak: ${errorMessage(err)}\n\n${HELP}`);
    return 2;
  }
  // A hang nothing else catches ends the run: the site's time, the drain, and room to stop.
  const watchdog = setTimeout(
    () => {
      process.stderr.write('\nsoak: still running well past its time; aborting\n');
      process.exit(1);
    },
    opts.minutes * 60_000 + 5 * 60_000,
  );
  watchdog.unref();
  return soak(opts);
}

process.on('exit', emergencyCleanup);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    process.stderr.write(`\nsoak: ${sig}, cleaning up\n`);
    process.exit(130);
  });
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`soak: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
