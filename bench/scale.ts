import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Mosquitto } from '../sim/mosquitto.js';
import { withOpenFiles } from '../sim/open-files.js';
import { ConfiguredGateway, forwardAllConfig } from './configured-gateway.js';
import { CpuMeter, fmtInt, rssMiB, Scope, sleep, type Benchmark, type BenchOptions, type BenchResult, type Figure } from './harness.js';
import { awaitPath, BENCH_GROUP_SECRET, CloudCounter, POINT } from './load.js';
import { epochMs, type Progress, type ScaleCommand, type ScaleReport, type ScaleSetup } from './scale-children.js';
import { round } from './stats.js';

const WORKER = fileURLToPath(new URL('./scale-children.js', import.meta.url));
/** Children per load-generator process. */
const PER_WORKER = 2500;
const MAX_WORKERS = 4;
/** The aim: every child of the site connected, born and its first reading acknowledged within this. */
const CONNECT_AIM_S = 30;
/** After the last PUBACK, how long the children wait for the ones still outstanding. */
const DRAIN_MS = 30_000;
/**
 * After the children stopped, how long nothing new may arrive at the consumer before the rest
 * counts as lost: a gateway that fell behind still has its intake and outbox to work through, and
 * its uplink may be waiting out a reconnect backoff (at most 30 s by default).
 */
const QUIET_MS = 45_000;
/** The longest wait for the consumer after the children stopped. */
const DELIVERY_MS = 300_000;
const GATEWAY_ID = 'bench-scale-gw';
/** Device ids of the load; CloudCounter counts readings of devices named `bench-…`. */
const PREFIX = 'bench-c';

export interface ScaleSize {
  readonly children: number;
  readonly seconds: number;
}

type Kind = 'outpost' | 'mosquitto';

interface Outcome {
  readonly kind: Kind;
  /** Children whose birth and first reading were acknowledged. */
  readonly born: number;
  /** From the moment every child starts connecting to the last of those acknowledgements. */
  readonly connectSeconds: number;
  readonly connectTimedOut: boolean;
  readonly reconnects: number;
  readonly refused: number;
  readonly connectErrors: number;
  readonly errorsByCode: Record<string, number>;
  readonly rssAfterConnectMiB: number;
  readonly rssMaxMiB: number;
  readonly published: number;
  readonly acked: number;
  readonly skipped: number;
  readonly unacked: number;
  readonly delivered: number;
  /** Acknowledged to the child, never seen by the consumer. */
  readonly lost: number;
  readonly duplicates: number;
  /** Percent of one core over the once-a-second phase. */
  readonly cpu: { site: number; cloud: number; loadgen: number; consumer: number };
  readonly ackMs: { p50: number; p99: number; max: number };
  readonly crashed: boolean;
  readonly consumerReconnects: number;
  readonly diagnosis?: string | undefined;
}

/** Site limits for `children` devices on one address, each limit at least its default. */
function scaleLimits(children: number): Record<string, unknown> {
  const room = children + 1000;
  return {
    maxConnections: Math.max(10_000, room),
    maxConnectionsPerAddress: Math.max(256, room),
    // Every child may connect at once: the storm is what is measured. The default (200/s, burst
    // 400) would spread 10,000 children over 50 s on purpose.
    connectRate: { perSecond: Math.max(200, children), burst: Math.max(400, children) },
    // One retained birth per child.
    maxRetained: Math.max(10_000, room),
  };
}

/**
 * The heap a site of `children` gives the gateway (NODE_OPTIONS, docs/operations.md): the launch
 * flags' 128 MiB and 24 MiB per 1,000 children (each holds about 11 KiB while connected, and the
 * broker takes no new connection past 85 % of the heap).
 */
export function siteHeapMiB(children: number): number {
  return 128 + Math.ceil((children / 1000) * 24);
}

class Workers {
  private readonly procs: ChildProcess[] = [];
  private readonly latest = new Map<number, Progress>();
  private readonly waiting = new Map<string, Array<{ resolve: (r: ScaleReport[]) => void; got: ScaleReport[]; count: number }>>();
  private exitedEarly: string | undefined;

  constructor(
    private readonly scope: Scope,
    private readonly children: number,
  ) {}

  get pids(): Record<string, number | undefined> {
    return Object.fromEntries(this.procs.map((p, i) => [`w${i}`, p.pid]));
  }

  get problem(): string | undefined {
    return this.exitedEarly;
  }

  progress(): Progress {
    const sum = (k: keyof Progress): number => [...this.latest.values()].reduce((n, p) => n + p[k], 0);
    return { connected: sum('connected'), phase1Done: sum('phase1Done'), acked: sum('acked'), published: sum('published'), reconnects: sum('reconnects'), refused: sum('refused') };
  }

  async start(): Promise<void> {
    const workers = Math.min(MAX_WORKERS, Math.max(1, Math.ceil(this.children / PER_WORKER)));
    const perWorker = Math.ceil(this.children / workers) + 256;
    const ready = this.expect('ready', workers);
    for (let w = 0; w < workers; w++) {
      const setup: ScaleSetup = { worker: w, workers, total: this.children, prefix: PREFIX, groupSecret: BENCH_GROUP_SECRET, point: POINT };
      const cmd = withOpenFiles(perWorker, process.execPath, [WORKER, JSON.stringify(setup)]);
      const proc = spawn(cmd.command, cmd.args, { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
      let stderr = '';
      proc.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
      this.scope.pid(proc.pid);
      this.procs.push(proc);
      proc.on('message', (m: ScaleReport) => this.onReport(w, m));
      proc.once('exit', (code, signal) => {
        if (!this.closing) this.exitedEarly ??= `load worker ${w} exited (${signal ?? code}): ${stderr.trim().slice(-500)}`;
      });
    }
    this.scope.defer(() => this.close());
    await withTimeout(ready, 30_000, 'the load workers did not start');
  }

  private closing = false;

  private onReport(w: number, m: ScaleReport): void {
    if (m.type === 'progress' || m.type === 'phase1' || m.type === 'phase2') {
      const { connected, phase1Done, acked, published, reconnects, refused } = m;
      this.latest.set(w, { connected, phase1Done, acked, published, reconnects, refused });
    }
    const list = this.waiting.get(m.type);
    const waiter = list?.[0];
    if (!waiter) return;
    waiter.got.push(m);
    if (waiter.got.length === waiter.count) {
      list.shift();
      waiter.resolve(waiter.got);
    }
  }

  /** Resolves with one report of `type` from every worker. */
  expect<T extends ScaleReport['type']>(type: T, count = this.procs.length): Promise<Array<Extract<ScaleReport, { type: T }>>> {
    return new Promise((resolve) => {
      const list = this.waiting.get(type) ?? [];
      list.push({ resolve: resolve as (r: ScaleReport[]) => void, got: [], count });
      this.waiting.set(type, list);
    });
  }

  send(cmd: ScaleCommand): void {
    for (const p of this.procs) p.send(cmd);
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const alive = this.procs.filter((p) => p.exitCode === null && p.signalCode === null && p.connected);
    const gone = Promise.all(this.procs.map((p) => (p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => p.once('exit', () => r())))));
    for (const p of alive) p.send({ cmd: 'close' } satisfies ScaleCommand);
    const timer = setTimeout(() => {
      for (const p of this.procs) p.kill('SIGKILL');
    }, 15_000);
    await gone;
    clearTimeout(timer);
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} within ${ms / 1000} s`)), ms)))]).finally(() => clearTimeout(timer));
}

/** Resolves with `p`'s value, or undefined after `ms`. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  try {
    return await withTimeout(p, ms, 'timed out');
  } catch {
    return undefined;
  }
}

function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

async function runScenario(kind: Kind, size: ScaleSize, opts: BenchOptions): Promise<Outcome> {
  const scope = new Scope();
  const label = `scale/${kind}`;
  try {
    opts.progress.show(`${label}  starting`);
    const dir = scope.dir(mkdtempSync(join(tmpdir(), `outpost-bench-scale-${kind}-`)));
    const openFiles = size.children + 1024;
    let siteUrl: string;
    let sitePid: number | undefined;
    let cloudPid: number | undefined;
    let gateway: ConfiguredGateway | undefined;
    let counter: CloudCounter;
    if (kind === 'mosquitto') {
      // The baseline: a plain Mosquitto taking the same connections; the consumer subscribes on it.
      const site = await Mosquitto.start({ dir: join(dir, 'site'), openFiles });
      scope.pid(site.pid);
      scope.defer(() => site.stop());
      siteUrl = site.url;
      sitePid = site.pid;
      counter = new CloudCounter(site.url, 'messages');
    } else {
      const cloud = await Mosquitto.start({ dir: join(dir, 'cloud') });
      scope.pid(cloud.pid);
      scope.defer(() => cloud.stop());
      cloudPid = cloud.pid;
      counter = new CloudCounter(cloud.url, 'batches');
      const gwDir = join(dir, 'gateway');
      mkdirSync(gwDir);
      const config = forwardAllConfig(gwDir, GATEWAY_ID, cloud.url);
      config.broker = { ...config.broker, limits: scaleLimits(size.children) };
      const heap = siteHeapMiB(size.children);
      gateway = await ConfiguredGateway.start(gwDir, config, { openFiles, nodeFlags: heap > 128 ? [`--max-old-space-size=${heap}`] : [] });
      const gw = gateway;
      scope.pid(gw.pid);
      scope.defer(() => gw.stop());
      siteUrl = gw.brokerUrl;
      sitePid = gw.pid;
    }
    const consumer = counter;
    scope.defer(() => consumer.stop());
    await counter.start();
    await awaitPath(siteUrl, counter, 15_000);

    const workers = new Workers(scope, size.children);
    await workers.start();

    let rssMax = 0;
    const sampler = setInterval(() => (rssMax = Math.max(rssMax, rssMiB(sitePid) ?? 0)), 250);
    scope.defer(() => clearInterval(sampler));
    const siteAlive = (): boolean => (sitePid === undefined ? false : rssMiB(sitePid) !== undefined);

    // Phase 1: every child at once.
    const t0 = epochMs() + 300;
    const phase1 = workers.expect('phase1');
    const show1 = setInterval(() => {
      const p = workers.progress();
      opts.progress.show(`${label}  connect: ${fmtInt(p.connected)} connected, ${fmtInt(p.phase1Done)}/${fmtInt(size.children)} acked, ${fmtInt(p.reconnects)} reconnects  ${((epochMs() - t0) / 1000).toFixed(1)}s  RSS ${rssMax.toFixed(0)} MiB`);
    }, 250);
    workers.send({ cmd: 'connect', port: Number(new URL(siteUrl).port), at: t0 });
    const p1 = await within(phase1, opts.timeoutMs);
    clearInterval(show1);
    const p1Progress = workers.progress();
    const connectTimedOut = p1 === undefined;
    const connectSeconds = p1 ? (Math.max(...p1.map((r) => r.lastDoneAt)) - t0) / 1000 : (epochMs() - t0) / 1000;
    await sleep(1000);
    const rssAfterConnect = rssMiB(sitePid) ?? 0;

    // Phase 2: one reading a second per child.
    const at = epochMs() + 500;
    const phase2 = workers.expect('phase2');
    workers.send({ cmd: 'run', at, seconds: size.seconds, drainMs: DRAIN_MS });
    await sleep(at - epochMs());
    const cpu = new CpuMeter({ site: sitePid, cloud: cloudPid, ...workers.pids });
    const show2 = setInterval(() => {
      const p = workers.progress();
      opts.progress.show(`${label}  ${fmtInt(size.children)} children at 1/s: ${((epochMs() - at) / 1000).toFixed(0)}/${size.seconds}s, ${fmtInt(p.acked)} acked, ${fmtInt(counter.unique)} at the consumer, RSS max ${rssMax.toFixed(0)} MiB`);
    }, 250);
    await sleep(size.seconds * 1000);
    const usage = cpu.percent();
    const p2 = await within(phase2, DRAIN_MS + 30_000);
    clearInterval(show2);

    // Delivery: every acknowledged reading must reach the consumer.
    const expected: string[] = [];
    for (const r of p2 ?? []) for (const [device, ranges] of r.ackedRuns) for (const [a, b] of ranges) for (let n = a; n <= b; n++) expected.push(`${device}:${n}:${POINT}`);
    const deadline = epochMs() + DELIVERY_MS;
    for (;;) {
      if (expected.every((id) => counter.has(id))) break;
      const quiet = performance.now() - counter.lastArrivalAt;
      if (quiet > QUIET_MS || epochMs() > deadline) break;
      opts.progress.show(`${label}  waiting for the consumer: ${fmtInt(counter.unique)} of ${fmtInt(expected.length)}`);
      await sleep(250);
    }
    const lost = expected.reduce((n, id) => (counter.has(id) ? n : n + 1), 0);
    const crashed = !siteAlive() || workers.problem !== undefined;
    let diagnosis: string | undefined;
    if (gateway && (lost > 0 || connectTimedOut || crashed || !p2)) {
      diagnosis = `gateway status: ${JSON.stringify(await gateway.status(10_000))?.slice(0, 1500)}; log: ${gateway.log.trim().slice(-1500)}`;
    }
    if (workers.problem) diagnosis = `${diagnosis ?? ''} ${workers.problem}`.trim();
    const samples = (p2 ?? []).flatMap((r) => r.ackMs).sort((a, b) => a - b);
    const sumW = (k: 'skipped' | 'unacked' | 'published' | 'acked'): number => (p2 ?? []).reduce((n, r) => n + r[k], 0);
    const loadgen = Object.keys(workers.pids).reduce((n, k) => n + (usage[k] ?? 0), 0);
    return {
      kind,
      born: p1Progress.phase1Done,
      connectSeconds,
      connectTimedOut,
      reconnects: p1Progress.reconnects,
      refused: p1Progress.refused,
      connectErrors: (p1 ?? []).reduce((n, r) => n + r.connectErrors, 0),
      errorsByCode: (p1 ?? []).reduce<Record<string, number>>((all, r) => {
        for (const [k, v] of Object.entries(r.errorsByCode)) all[k] = (all[k] ?? 0) + v;
        return all;
      }, {}),
      consumerReconnects: counter.reconnects,
      rssAfterConnectMiB: rssAfterConnect,
      rssMaxMiB: rssMax,
      published: sumW('published'),
      acked: sumW('acked'),
      skipped: sumW('skipped'),
      unacked: sumW('unacked'),
      delivered: expected.length - lost,
      lost,
      duplicates: counter.duplicates,
      cpu: { site: usage.site ?? -1, cloud: usage.cloud ?? 0, loadgen, consumer: usage.self ?? -1 },
      ackMs: { p50: percentile(samples, 0.5), p99: percentile(samples, 0.99), max: samples.at(-1) ?? 0 },
      crashed,
      diagnosis,
    };
  } finally {
    opts.progress.clear();
    await scope.close();
  }
}

function figures(prefix: string, o: Outcome): Record<string, Figure> {
  return {
    [`${prefix}_connect_all_acked_s`]: round(o.connectSeconds, 2),
    [`${prefix}_connect_timed_out`]: o.connectTimedOut,
    [`${prefix}_born`]: o.born,
    [`${prefix}_reconnects`]: o.reconnects,
    [`${prefix}_refused`]: o.refused,
    [`${prefix}_connect_errors`]: o.connectErrors,
    [`${prefix}_connect_errors_by_code`]: JSON.stringify(o.errorsByCode),
    [`${prefix}_consumer_reconnects`]: o.consumerReconnects,
    [`${prefix}_rss_after_connect_mib`]: round(o.rssAfterConnectMiB, 1),
    [`${prefix}_rss_max_mib`]: round(o.rssMaxMiB, 1),
    [`${prefix}_published`]: o.published,
    [`${prefix}_acked`]: o.acked,
    [`${prefix}_skipped`]: o.skipped,
    [`${prefix}_unacked`]: o.unacked,
    [`${prefix}_delivered`]: o.delivered,
    [`${prefix}_lost`]: o.lost,
    [`${prefix}_duplicates`]: o.duplicates,
    [`${prefix}_cpu_pct_site`]: o.cpu.site,
    [`${prefix}_cpu_pct_cloud`]: o.cpu.cloud,
    [`${prefix}_cpu_pct_loadgen`]: o.cpu.loadgen,
    [`${prefix}_cpu_pct_consumer`]: o.cpu.consumer,
    [`${prefix}_ack_ms_p50`]: round(o.ackMs.p50, 2),
    [`${prefix}_ack_ms_p99`]: round(o.ackMs.p99, 2),
    [`${prefix}_crashed`]: o.crashed,
  };
}

function row(o: Outcome, children: number): string[] {
  return [
    o.kind === 'outpost' ? 'Outpost gateway (commit before PUBACK, to a cloud Mosquitto)' : 'Mosquitto alone (consumer on it)',
    `${o.connectSeconds.toFixed(2)}${o.connectTimedOut ? ' TIMED OUT' : ''}`,
    `${fmtInt(o.born)}/${fmtInt(children)}`,
    fmtInt(o.reconnects),
    o.rssAfterConnectMiB.toFixed(0),
    String(o.cpu.site),
    o.rssMaxMiB.toFixed(0),
    `${fmtInt(o.delivered)}/${fmtInt(o.acked)}`,
    fmtInt(o.lost),
    `${o.ackMs.p50.toFixed(1)}/${o.ackMs.p99.toFixed(1)}`,
    o.crashed ? 'CRASHED' : 'ok',
  ];
}

/**
 * A site of `children` child devices on one gateway: all of them connecting at once (the site
 * after a power cut), each with its birth and one QoS 1 reading; then each publishing a reading a
 * second. The same load on a plain Mosquitto is the baseline.
 */
export function scaleBenchmark(size: ScaleSize): Benchmark {
  return {
    name: 'scale',
    description: `${fmtInt(size.children)} children connecting at once (birth + one QoS 1 reading each), then one reading a second each for ${size.seconds} s; Outpost vs a plain Mosquitto`,
    // Per scenario: start-up, connect phase (its timeout), the steady phase, drain and delivery, cleanup.
    maxDurationMs: (opts) => 2 * (60_000 + opts.timeoutMs + size.seconds * 1000 + DRAIN_MS + 30_000 + DELIVERY_MS + 30_000),
    async run(opts: BenchOptions): Promise<BenchResult> {
      const base = await runScenario('mosquitto', size, opts);
      const ours = await runScenario('outpost', size, opts);
      const ratio = (a: number, b: number): number => (b > 0 ? round(a / b, 2) : 0);
      const connectRatio = ratio(ours.connectSeconds, base.connectSeconds);
      const cpuRatio = ratio(ours.cpu.site, base.cpu.site);
      const rssRatio = ratio(ours.rssMaxMiB, base.rssMaxMiB);
      const met = ours.connectSeconds <= CONNECT_AIM_S && !ours.connectTimedOut && ours.born === size.children;
      const notes = [
        `connect: all ${fmtInt(size.children)} acknowledged in ${ours.connectSeconds.toFixed(2)} s (aim <= ${CONNECT_AIM_S} s: ${met ? 'met' : 'MISSED'}); ratio Outpost/Mosquitto ${connectRatio} (time to all acked)`,
        `at 1 reading/s per child: gateway CPU ${ours.cpu.site} % of a core vs Mosquitto ${base.cpu.site} % (ratio ${cpuRatio}); RSS max ${ours.rssMaxMiB.toFixed(0)} vs ${base.rssMaxMiB.toFixed(0)} MiB (ratio ${rssRatio})`,
        `delivered/acked counts every reading of both phases; lost = acknowledged to the child, never at the consumer. Outpost: consumer on a cloud Mosquitto, readings forwarded in batches; Mosquitto: consumer on the same broker, nothing stored or forwarded`,
        `CPU % of one core over the ${size.seconds} s: load generator ${ours.cpu.loadgen} / ${base.cpu.loadgen} (Outpost / Mosquitto runs), consumer ${ours.cpu.consumer} / ${base.cpu.consumer}, cloud Mosquitto ${ours.cpu.cloud}`,
        `reconnects during the connect phase: Outpost ${fmtInt(ours.reconnects)} (refused ${fmtInt(ours.refused)}, errors ${JSON.stringify(ours.errorsByCode)}), Mosquitto ${fmtInt(base.reconnects)} (refused ${fmtInt(base.refused)}, errors ${JSON.stringify(base.errorsByCode)}); skipped (window full) ${fmtInt(ours.skipped)} / ${fmtInt(base.skipped)}; consumer reconnects ${ours.consumerReconnects} / ${base.consumerReconnects}`,
      ];
      for (const o of [ours, base]) if (o.diagnosis) notes.push(`${o.kind}: ${o.diagnosis}`);
      return {
        figures: {
          children: size.children,
          seconds: size.seconds,
          ...figures('outpost', ours),
          ...figures('mosquitto', base),
          ratio_connect_time: connectRatio,
          ratio_cpu: cpuRatio,
          ratio_rss: rssRatio,
          connect_aim_met: met,
        },
        table: {
          head: ['path', 'connect s', 'acked', 'reconnects', 'RSS MiB', 'CPU %', 'RSS max', 'delivered/acked', 'lost', 'ack ms p50/p99', 'status'],
          rows: [row(ours, size.children), row(base, size.children)],
        },
        notes,
        ok: met && ours.lost === 0 && !ours.crashed && !base.crashed && ours.acked > 0,
      };
    },
  };
}
