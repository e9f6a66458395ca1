import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { SiteConfigInput } from '../runtime/config/schema.js';
import { GATEWAY_ENV, GATEWAY_NODE_FLAGS } from '../runtime/launch-flags.js';
import { deriveDeviceKey } from '../runtime/contracts/index.js';
import { freePort } from '../sim/free-port.js';
import { Mosquitto } from '../sim/mosquitto.js';
import { SimChildDevice } from '../sim/child-device.js';
import { ConfiguredGateway } from './configured-gateway.js';
import { CpuMeter, fmtInt, rssMiB, Scope, sleep, type Benchmark, type BenchOptions, type BenchResult, type Figure } from './harness.js';
import { BENCH_GROUP_SECRET, benchIdentities } from './load.js';
import { POINTS_PER_SLAVE, SITE_SLAVES, siteDevices, startFarm } from './modbus-poll.js';
import { round } from './stats.js';

const require = createRequire(import.meta.url);
const RED_JS = require.resolve('node-red/red.js');
const bcrypt = require('bcryptjs') as { hashSync(p: string, rounds: number): string };

/** How long a process runs before its settled RSS is read: V8 gives back what start-up left behind after some idle seconds. */
const SETTLE_MS = 40_000;
/** When the start-up figure is read. */
const EARLY_MS = 5_000;
const SITE_CHILDREN = 2000;
const SITE_MEASURE_MS = 30_000;

/** RSS of a process at EARLY_MS and after SETTLE_MS (the smallest of the last five seconds' samples). */
async function settledRss(pid: number | undefined, label: string, opts: BenchOptions, t0 = performance.now()): Promise<{ early: number; settled: number; max: number }> {
  let early = 0;
  let max = 0;
  const last: number[] = [];
  while (performance.now() - t0 < SETTLE_MS) {
    await sleep(1000);
    const rss = rssMiB(pid);
    if (rss === undefined) throw new Error(`${label} exited`);
    max = Math.max(max, rss);
    if (early === 0 && performance.now() - t0 >= EARLY_MS) early = rss;
    last.push(rss);
    if (last.length > 5) last.shift();
    opts.progress.show(`footprint  ${label}: ${((performance.now() - t0) / 1000).toFixed(0)}/${SETTLE_MS / 1000} s, RSS ${rss.toFixed(1)} MiB`);
  }
  return { early, settled: Math.min(...last), max };
}

/** A process the scope stops (SIGTERM, then waits for it). */
function spawnStopped(scope: Scope, args: string[]): number | undefined {
  // The baselines get the gateway's environment too (malloc arenas), so only the code differs.
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...GATEWAY_ENV } });
  proc.stderr.resume();
  scope.pid(proc.pid);
  scope.defer(async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    await new Promise<void>((resolve) => (proc.exitCode !== null || proc.signalCode !== null ? resolve() : proc.once('exit', () => resolve())));
  });
  return proc.pid;
}

/** Node-RED on its own, as a site would run it next to a gateway: editor on loopback with a login, no flows. */
async function nodeRedAlone(scope: Scope, dir: string, passwordHash: string): Promise<{ pid: number | undefined; port: number }> {
  const userDir = join(dir, 'node-red-alone');
  mkdirSync(userDir);
  writeFileSync(join(userDir, 'flows.json'), '[]');
  const port = await freePort();
  writeFileSync(
    join(userDir, 'settings.cjs'),
    `module.exports = ${JSON.stringify({
      flowFile: 'flows.json',
      uiHost: '127.0.0.1',
      uiPort: port,
      credentialSecret: 'footprint-bench',
      adminAuth: { type: 'credentials', users: [{ username: 'admin', password: passwordHash, permissions: '*' }] },
      logging: { console: { level: 'warn', metrics: false, audit: false } },
      externalModules: { autoInstall: false, palette: { allowInstall: false }, modules: { allowInstall: false } },
      telemetry: { enabled: false, updateNotification: false },
    })};\n`,
  );
  const pid = spawnStopped(scope, [...GATEWAY_NODE_FLAGS, RED_JS, '--userDir', userDir, '--settings', join(userDir, 'settings.cjs'), '--port', String(port)]);
  // Up when its editor answers.
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(1000) })).ok) break;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error('Node-RED alone did not start within 30 s');
    await sleep(200);
  }
  return { pid, port };
}

function gatewayConfig(dir: string, cloudUrl: string, extra: Partial<SiteConfigInput> = {}): SiteConfigInput {
  return {
    gateway: { id: 'bench-footprint-gw' },
    broker: { host: '127.0.0.1', port: 0 },
    http: { host: '127.0.0.1', port: 0 },
    cloud: { url: cloudUrl },
    storage: { path: join(dir, 'outpost.db') },
    ...extra,
  };
}

/** A gateway started twice on the same state dir: the second start (no certificate to make) is the one measured. */
async function measuredGateway(scope: Scope, dir: string, config: SiteConfigInput): Promise<ConfiguredGateway> {
  const first = await ConfiguredGateway.start(dir, config);
  await first.stop();
  const gw = await ConfiguredGateway.start(dir, config);
  scope.defer(() => gw.stop());
  return gw;
}

/**
 * What the gateway costs in memory, each figure against its baseline in the same run:
 * 1. nothing configured (no devices, rules, OTA or Node-RED) ÷ bare Node with the same V8 flags;
 * 2. with Node-RED hosted ÷ Node-RED on its own;
 * 3. a busy site: 2,000 connected children and 10,000 Modbus points/s (absolute aim).
 */
export const footprintBenchmark: Benchmark = {
  name: 'footprint',
  description: `RSS: nothing configured ÷ bare Node; with Node-RED − Node-RED alone; ${fmtInt(SITE_CHILDREN)} children + ${fmtInt(SITE_SLAVES * POINTS_PER_SLAVE)} Modbus points/s`,
  maxDurationMs: () => 5 * SETTLE_MS + SITE_MEASURE_MS + 180_000,
  async run(opts: BenchOptions): Promise<BenchResult> {
    const scope = new Scope();
    const figures: Record<string, Figure> = {};
    const rows: string[][] = [];
    const notes: string[] = [];
    try {
      const dir = scope.dir(mkdtempSync(join(tmpdir(), 'outpost-bench-footprint-')));
      const cloud = await Mosquitto.start({ dir: join(dir, 'cloud') });
      scope.defer(() => cloud.stop());
      const row = (what: string, r: { early: number; settled: number; max: number }, ratio: string): string[] => [what, r.early.toFixed(1), r.settled.toFixed(1), r.max.toFixed(1), ratio];

      // 1. Nothing configured vs bare Node, side by side in time (both idle).
      opts.progress.show('footprint  bare Node and an unconfigured gateway');
      const bareScope = new Scope();
      const gwScope = new Scope();
      const bare = spawnStopped(bareScope, [...GATEWAY_NODE_FLAGS, '-e', 'setInterval(() => {}, 1000)']);
      const idleDir = join(dir, 'idle');
      mkdirSync(idleDir);
      const idle = await measuredGateway(gwScope, idleDir, gatewayConfig(idleDir, cloud.url));
      const t1 = performance.now();
      const [bareRss, idleRss] = await Promise.all([settledRss(bare, 'bare Node', opts, t1), settledRss(idle.pid, 'gateway, nothing configured', opts, t1)]);
      await gwScope.close();
      await bareScope.close();
      const idleRatio = idleRss.settled / bareRss.settled;
      figures.bare_node_rss_mib = round(bareRss.settled, 1);
      figures.idle_gateway_rss_mib = round(idleRss.settled, 1);
      figures.idle_gateway_rss_early_mib = round(idleRss.early, 1);
      figures.idle_ratio = round(idleRatio, 2);
      rows.push(row('bare Node, same V8 flags [baseline]', bareRss, '1.00'));
      rows.push(row('gateway, nothing configured', idleRss, idleRatio.toFixed(2)));
      notes.push(`nothing configured ÷ bare Node, settled: ${idleRatio.toFixed(2)} (aim <= 2) ${idleRatio <= 2 ? 'met' : 'MISSED'}; at ${EARLY_MS / 1000} s: ${(idleRss.early / bareRss.early).toFixed(2)}`);

      // 2. Node-RED alone vs the gateway hosting it (editor with a login, no flows, in both).
      const passwordHash = bcrypt.hashSync('footprint', 8);
      opts.progress.show('footprint  Node-RED alone');
      const redScope = new Scope();
      const red = await nodeRedAlone(redScope, dir, passwordHash);
      const redRss = await settledRss(red.pid, 'Node-RED alone', opts);
      await redScope.close();
      const nrDir = join(dir, 'node-red');
      mkdirSync(nrDir);
      const nrScope = new Scope();
      const withRed = await measuredGateway(nrScope, nrDir, gatewayConfig(nrDir, cloud.url, { http: { host: '127.0.0.1', port: 0, admin: { username: 'admin', passwordHash } }, nodeRed: { enabled: true } }));
      const withRedRss = await settledRss(withRed.pid, 'gateway with Node-RED', opts);
      await nrScope.close();
      const extra = withRedRss.settled - redRss.settled;
      figures.node_red_alone_rss_mib = round(redRss.settled, 1);
      figures.gateway_with_node_red_rss_mib = round(withRedRss.settled, 1);
      figures.node_red_extra_mib = round(extra, 1);
      rows.push(row('Node-RED alone, editor with login, no flows [baseline]', redRss, '1.00'));
      rows.push(row('gateway hosting Node-RED, the same', withRedRss, (withRedRss.settled / redRss.settled).toFixed(2)));
      notes.push(`with Node-RED − Node-RED alone, settled: ${extra.toFixed(1)} MiB (aim <= 30) ${extra <= 30 ? 'met' : 'MISSED'}`);

      // 3. A busy site: 2,000 children connected and publishing every 10 s, 10,000 Modbus points at 1 s.
      opts.progress.show('footprint  the site: Modbus farm');
      const farm = await startFarm(scope, SITE_SLAVES);
      const siteDir = join(dir, 'site');
      mkdirSync(siteDir);
      const site = await measuredGateway(
        scope,
        siteDir,
        gatewayConfig(siteDir, cloud.url, {
          broker: { host: '127.0.0.1', port: 0, limits: { maxConnectionsPerAddress: SITE_CHILDREN + 100, maxConnections: SITE_CHILDREN + 100, connectRate: { perSecond: 2000, burst: 4000 } } },
          identities: benchIdentities,
          devices: siteDevices(farm.ports),
          rules: [{ id: 'all-to-cloud', type: 'filter', match: { device: '*', point: '*' } }],
        }),
      );
      const children = Array.from(
        { length: SITE_CHILDREN },
        (_, i) => new SimChildDevice({ url: site.brokerUrl, deviceId: `fp-${i}`, password: deriveDeviceKey(BENCH_GROUP_SECRET, `fp-${i}`), intervalMs: 10_000, points: { t: { kind: 'counter' } } }),
      );
      scope.defer(() => Promise.all(children.map((c) => c.kill())).then(() => undefined));
      for (let i = 0; i < children.length; i += 250) {
        opts.progress.show(`footprint  the site: connecting children ${i}/${SITE_CHILDREN}`);
        for (const c of children.slice(i, i + 250)) c.start();
        await sleep(300);
      }
      const connectDeadline = Date.now() + 60_000;
      while (children.some((c) => !c.connected)) {
        if (Date.now() > connectDeadline) throw new Error(`only ${children.filter((c) => c.connected).length} of ${SITE_CHILDREN} children connected`);
        await sleep(500);
      }
      const before = await site.status();
      const cpu = new CpuMeter({ gateway: site.pid });
      const t0 = performance.now();
      let siteMax = 0;
      while (performance.now() - t0 < SITE_MEASURE_MS) {
        await sleep(1000);
        siteMax = Math.max(siteMax, rssMiB(site.pid) ?? 0);
        opts.progress.show(`footprint  the site: ${((performance.now() - t0) / 1000).toFixed(0)}/${SITE_MEASURE_MS / 1000} s, RSS ${siteMax.toFixed(1)} MiB`);
      }
      const after = await site.status();
      const seconds = (performance.now() - t0) / 1000;
      const readingsPerS = ((Number(after?.readingsIn) || 0) - (Number(before?.readingsIn) || 0)) / seconds;
      const connected = (after?.children as { connected?: number } | undefined)?.connected ?? 0;
      const usage = cpu.percent();
      figures.site_children_connected = connected;
      figures.site_readings_per_s = Math.round(readingsPerS);
      figures.site_gateway_rss_max_mib = round(siteMax, 1);
      figures.site_gateway_cpu_percent = usage.gateway ?? -1;
      rows.push([`site: ${fmtInt(connected)} children connected, ${fmtInt(readingsPerS)} readings/s, CPU ${usage.gateway ?? '?'} %`, '', '', siteMax.toFixed(1), '']);
      notes.push(`site with ${fmtInt(SITE_CHILDREN)} children and ${fmtInt(SITE_SLAVES * POINTS_PER_SLAVE)} Modbus points/s: RSS max ${siteMax.toFixed(1)} MiB (aim <= 150) ${siteMax <= 150 ? 'met' : 'MISSED'}`);
      notes.push(`RSS in MiB; settled = the lowest of the last 5 one-second samples after ${SETTLE_MS / 1000} s; every process runs with the gateway's V8 flags and environment (${GATEWAY_NODE_FLAGS.join(' ')}, ${Object.entries(GATEWAY_ENV).map(([k, v]) => `${k}=${v}`).join(' ')})`);
      const ok = connected === SITE_CHILDREN && readingsPerS >= SITE_SLAVES * POINTS_PER_SLAVE * 0.95;
      if (!ok) notes.push(`the site did not run as set up: ${connected} children connected, ${fmtInt(readingsPerS)} readings/s`);
      return { figures, table: { head: ['what', `RSS at ${EARLY_MS / 1000} s`, 'settled', 'max', 'ratio'], rows }, notes, ok };
    } finally {
      opts.progress.clear();
      await scope.close();
    }
  },
};
