import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import ModbusSerial from 'modbus-serial';
import type { ModbusRTU as Client } from 'modbus-serial/ModbusRTU.js';
import { ModbusBus } from '../drivers/modbus/bus.js';
import { MAX_BITS, MAX_REGISTERS } from '../drivers/modbus/planner.js';
import type { ModbusDevice, ModbusPoint, Table } from '../drivers/modbus/types.js';
import { systemClock } from '../runtime/contracts/index.js';
import type { SiteConfigInput } from '../runtime/config/schema.js';
import { createLogger } from '../runtime/logger.js';
import { PromMetrics } from '../runtime/metrics.js';
import { Mosquitto } from '../sim/mosquitto.js';
import { ConfiguredGateway } from './configured-gateway.js';
import { CpuMeter, fmtInt, rssMiB, Scope, sleep, type Benchmark, type BenchOptions, type BenchResult, type Figure } from './harness.js';
import { median, round } from './stats.js';
import { CountingSequence } from '../runtime/sequence.js';

const ModbusRTU = ModbusSerial as unknown as new () => Client;
const FARM = fileURLToPath(new URL('../sim/modbus-farm.js', import.meta.url));

/** Slaves polled flat out in the throughput part, each over its own connection. */
const THROUGHPUT_SLAVES = 4;
const THROUGHPUT_MS = 3000;
const ROUNDS = 3;
/** The site of the resource part: 10,000 points at 1 s across 50 slaves. */
const SITE_SLAVES = 50;
const POINTS_PER_SLAVE = 200;
const WARMUP_MS = 5000;
const MEASURE_MS = 20_000;
const MAX_GAP = 10;
/** Work added per request in the sensitivity line: about what decoding and recording 125 points costs. */
const BUSY_US = 2.5;

interface Farm {
  readonly ports: readonly number[];
  readonly pid: number | undefined;
}

async function startFarm(scope: Scope, slaves: number): Promise<Farm> {
  const proc = spawn(process.execPath, [FARM, '--slaves', String(slaves)], { stdio: ['pipe', 'pipe', 'pipe'] });
  scope.pid(proc.pid);
  scope.defer(async () => {
    proc.kill('SIGTERM');
    await new Promise<void>((resolve) => (proc.exitCode !== null ? resolve() : proc.once('exit', () => resolve())));
  });
  let out = '';
  let err = '';
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const ports = await new Promise<number[]>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`modbus farm did not start: ${err}`)), 30_000);
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) {
        clearTimeout(timer);
        resolve((JSON.parse(line) as { ports: number[] }).ports);
      }
    });
    proc.once('exit', (code) => reject(new Error(`modbus farm exited (${code}): ${err}`)));
  });
  return { ports, pid: proc.pid };
}

const point = (name: string, table: Table, address: number, type: ModbusPoint['type'], order: ModbusPoint['order'] = 'ABCD'): ModbusPoint => ({
  name,
  table,
  address,
  type,
  order,
  scale: 1,
  offset: 0,
  writable: false,
});

/** A plausible register map of one slave: scattered registers, floats, counters and coils, with gaps. */
function addressMap(seed: number): ModbusPoint[] {
  let s = seed;
  const rand = (n: number): number => (s = (s * 16807) % 2147483647) % n;
  const out: ModbusPoint[] = [];
  let a = 0;
  for (let i = 0; i < 120; i++, a += 1 + rand(4) + (rand(20) === 0 ? 30 : 0)) out.push(point(`h${i}`, 'holding', a, 'uint16'));
  a += 5;
  for (let i = 0; i < 20; i++, a += 2 + rand(3)) out.push(point(`l${i}`, 'holding', a, 'int32'));
  a = 0;
  for (let i = 0; i < 30; i++, a += 2 + (rand(6) === 0 ? 14 : 0)) out.push(point(`f${i}`, 'input', a, 'float32', 'CDAB'));
  a = 0;
  for (let i = 0; i < POINTS_PER_SLAVE - 170; i++, a += 1 + rand(40)) out.push(point(`c${i}`, 'coil', a, 'bool'));
  return out;
}

const widthOf = (p: ModbusPoint): number => (p.type === 'int32' || p.type === 'float32' ? 2 : 1);

/** The fewest reads that cover `points` (dynamic programming over address-sorted runs), per table. */
function minimalCover(points: readonly ModbusPoint[]): number {
  let total = 0;
  for (const table of ['holding', 'input', 'coil', 'discrete'] as const) {
    const ps = points.filter((p) => p.table === table).sort((x, y) => x.address - y.address);
    const limit = table === 'coil' || table === 'discrete' ? MAX_BITS : MAX_REGISTERS;
    const best = new Array<number>(ps.length + 1).fill(Infinity);
    best[0] = 0;
    for (let j = 1; j <= ps.length; j++) {
      // Run ps[i..j-1]: span within the limit, every gap at most MAX_GAP.
      let end = ps[j - 1]!.address + widthOf(ps[j - 1]!);
      for (let i = j - 1; i >= 0; i--) {
        end = Math.max(end, ps[i]!.address + widthOf(ps[i]!));
        if (end - ps[i]!.address > limit) break;
        if (i < j - 1 && ps[i + 1]!.address - (ps[i]!.address + widthOf(ps[i]!)) > MAX_GAP) break;
        best[j] = Math.min(best[j]!, best[i]! + 1);
      }
    }
    total += best[ps.length]!;
  }
  return total;
}

/**
 * A tight modbus-serial loop: 125-register reads back to back, one connection per slave.
 * `busyUs`: CPU spent after each answer (a busy wait), to show how sensitive the loop is to work
 * per request.
 */
async function rawLoop(ports: readonly number[], ms: number, busyUs = 0): Promise<number> {
  const clients = await Promise.all(
    ports.map(async (port) => {
      const c = new ModbusRTU();
      c.setTimeout(2000);
      await c.connectTCP('127.0.0.1', { port });
      c.setID(1);
      return c;
    }),
  );
  const deadline = performance.now() + ms;
  let registers = 0;
  const t0 = performance.now();
  await Promise.all(
    clients.map(async (c) => {
      while (performance.now() < deadline) {
        // Awaited first, then added: `registers += await …` would read `registers` before the
        // await and lose the other connections' counts.
        const r = await c.readHoldingRegisters(0, MAX_REGISTERS);
        registers += r.data.length;
        if (busyUs > 0) for (const until = performance.now() + busyUs / 1000; performance.now() < until; );
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  for (const c of clients) c.close(() => undefined);
  return registers / seconds;
}

/**
 * Our bus, one per slave, each polling 125 uint16 points back to back into a counting sink.
 * `exception`: the points have a deadband (the slaves' values do not move), so a poll reports
 * nothing, as on a steady plant; otherwise every point is reported on every poll.
 */
async function busLoop(ports: readonly number[], ms: number, exception: boolean): Promise<number> {
  let reported = 0;
  const buses = ports.map(
    (port, i) =>
      new ModbusBus({ kind: 'tcp', host: '127.0.0.1', port }, [
        {
          id: `s${i}`,
          connection: { kind: 'tcp', host: '127.0.0.1', port },
          unitId: 1,
          // 0: the next poll starts as soon as the last one ended, as the raw loop does.
          pollIntervalMs: 0,
          timeoutMs: 2000,
          retries: 0,
          maxGap: 0,
          breaker: { failures: 3, openMs: 1000, maxOpenMs: 1000 },
          points: Array.from({ length: MAX_REGISTERS }, (_, a) => ({
            ...point(`r${a}`, 'holding', a, 'uint16'),
            ...(exception ? { deadband: { absolute: 1 } } : {}),
          })),
        } satisfies ModbusDevice,
      ]),
  );
  const sequence = new CountingSequence('b:');
  const t0 = performance.now();
  for (const bus of buses) {
    await bus.start({
      sink: {
        submit: (readings) => {
          reported += readings.length;
          return Promise.resolve();
        },
      },
      sequence,
      clock: systemClock,
      log: createLogger({ level: 'silent' }),
      metrics: new PromMetrics(),
    });
  }
  await sleep(ms);
  // Points polled: every point of every answered request, reported or not.
  const polled = buses.reduce((n, b) => n + ((b.status() as { devices: Array<{ requests: number; errors: number }> }).devices[0]!.requests - (b.status() as { devices: Array<{ errors: number }> }).devices[0]!.errors), 0) * MAX_REGISTERS;
  const reportedThen = reported;
  const seconds = (performance.now() - t0) / 1000;
  for (const bus of buses) await bus.stop();
  // Every point polled is reported (one request per bus may be in flight at the snapshot).
  if (!exception && Math.abs(reportedThen - polled) > buses.length * MAX_REGISTERS) throw new Error(`reported ${reportedThen} of ${polled} points polled`);
  return polled / seconds;
}

interface BusStatus {
  devices?: Array<{ polls: number; requests: number; requestsPerCycle: number; requestsLastCycle: number; errors: number }>;
}

export const modbusPollBenchmark: Benchmark = {
  name: 'modbus-poll',
  description: `Modbus polling: points/s vs a raw modbus-serial loop; requests vs minimal cover; CPU and RSS at ${fmtInt(SITE_SLAVES * POINTS_PER_SLAVE)} points/s across ${SITE_SLAVES} slaves`,
  maxDurationMs: () => 180_000,
  async run(opts: BenchOptions): Promise<BenchResult> {
    const scope = new Scope();
    const notes: string[] = [];
    const figures: Record<string, Figure> = {};
    const rows: string[][] = [];
    let ok = true;
    try {
      opts.progress.show('modbus-poll  starting the slave farm');
      const farm = await startFarm(scope, SITE_SLAVES);

      // 1. Throughput, interleaved rounds.
      const ports = farm.ports.slice(0, THROUGHPUT_SLAVES);
      const raw: number[] = [];
      const every: number[] = [];
      const rbe: number[] = [];
      const busy: number[] = [];
      for (let r = 0; r < ROUNDS; r++) {
        opts.progress.show(`modbus-poll  throughput round ${r + 1}/${ROUNDS}: raw modbus-serial`);
        raw.push(await rawLoop(ports, THROUGHPUT_MS));
        opts.progress.show(`modbus-poll  throughput round ${r + 1}/${ROUNDS}: Outpost bus, every point reported`);
        every.push(await busLoop(ports, THROUGHPUT_MS, false));
        opts.progress.show(`modbus-poll  throughput round ${r + 1}/${ROUNDS}: Outpost bus, report by exception`);
        rbe.push(await busLoop(ports, THROUGHPUT_MS, true));
        opts.progress.show(`modbus-poll  throughput round ${r + 1}/${ROUNDS}: raw modbus-serial + ${BUSY_US} µs per request`);
        busy.push(await rawLoop(ports, THROUGHPUT_MS, BUSY_US));
      }
      const span = (v: number[], unit: string): string => `${fmtInt(Math.min(...v))} / ${fmtInt(median(v))} / ${fmtInt(Math.max(...v))} ${unit}`;
      const ratioEvery = median(every) / median(raw);
      const ratioRbe = median(rbe) / median(raw);
      figures.throughput_raw_registers_per_s = Math.round(median(raw));
      figures.throughput_every_points_per_s = Math.round(median(every));
      figures.throughput_rbe_points_per_s = Math.round(median(rbe));
      figures.throughput_ratio_every = round(ratioEvery, 3);
      figures.throughput_ratio_rbe = round(ratioRbe, 3);
      rows.push(['raw modbus-serial, 125-register reads [baseline]', span(raw, 'registers/s'), '1.00']);
      rows.push(['Outpost bus, 125 points/request, every point reported', span(every, 'points/s'), ratioEvery.toFixed(2)]);
      rows.push(['Outpost bus, 125 points/request, report by exception', span(rbe, 'points/s'), ratioRbe.toFixed(2)]);
      const ratioBusy = median(busy) / median(raw);
      figures.throughput_ratio_raw_busy = round(ratioBusy, 3);
      rows.push([`raw modbus-serial + ${BUSY_US} µs busy wait per request (sensitivity)`, span(busy, 'registers/s'), ratioBusy.toFixed(2)]);
      notes.push(`throughput: ${THROUGHPUT_SLAVES} slaves in another process, one connection each, ${ROUNDS} interleaved rounds of ${THROUGHPUT_MS / 1000} s; min / median / max; points polled = points of answered requests`);
      notes.push(`points/s ÷ raw registers/s: ${ratioRbe.toFixed(2)} with report by exception on steady values, ${ratioEvery.toFixed(2)} with a reading per point and poll (aim >= 0.9): ${ratioRbe >= 0.9 ? 'met' : 'MISSED'} / ${ratioEvery >= 0.9 ? 'met' : 'MISSED'}`);

      // 2 + 3. The site: 10,000 points at 1 s across 50 slaves, the whole gateway in its own process.
      const maps = farm.ports.map((_, i) => addressMap(i + 1));
      const minimal = maps.reduce((n, m) => n + minimalCover(m), 0);
      const dir = scope.dir(mkdtempSync(join(tmpdir(), 'outpost-bench-modbus-')));
      const cloud = await Mosquitto.start({ dir: join(dir, 'cloud') });
      scope.defer(() => cloud.stop());
      const config: SiteConfigInput = {
        gateway: { id: 'bench-modbus-gw' },
        broker: { host: '127.0.0.1', port: 0 },
        http: { host: '127.0.0.1', port: 0 },
        devices: farm.ports.map((port, i) => ({
          id: `slave-${i + 1}`,
          protocol: 'modbus-tcp' as const,
          host: '127.0.0.1',
          port,
          pollIntervalMs: 1000,
          maxGap: MAX_GAP,
          points: maps[i]!.map(({ name, table, address, type, order }) => ({ name, table, address, type, order })),
        })),
        rules: [{ id: 'all-to-cloud', type: 'filter', match: { device: '*', point: '*' } }],
        cloud: { url: cloud.url },
        storage: { path: join(dir, 'outpost.db'), synchronous: 'normal' },
      };
      opts.progress.show('modbus-poll  starting the gateway');
      const gw = await ConfiguredGateway.start(dir, config);
      scope.defer(() => gw.stop());
      await sleep(WARMUP_MS);
      const before = await gw.status();
      const cpu = new CpuMeter({ gateway: gw.pid, farm: farm.pid });
      let rssMax = 0;
      const t0 = performance.now();
      while (performance.now() - t0 < MEASURE_MS) {
        await sleep(1000);
        rssMax = Math.max(rssMax, rssMiB(gw.pid) ?? 0);
        opts.progress.show(`modbus-poll  site of ${fmtInt(SITE_SLAVES * POINTS_PER_SLAVE)} points: ${((performance.now() - t0) / 1000).toFixed(0)}/${MEASURE_MS / 1000} s, RSS ${rssMax.toFixed(0)} MiB`);
      }
      const usage = cpu.percent();
      const after = await gw.status();
      const seconds = (performance.now() - t0) / 1000;
      const readingsPerS = ((Number(after?.readingsIn) || 0) - (Number(before?.readingsIn) || 0)) / seconds;
      const devs = ((after?.drivers ?? []) as BusStatus[]).flatMap((b) => b.devices ?? []);
      const planned = devs.reduce((n, d) => n + d.requestsPerCycle, 0);
      const errors = devs.reduce((n, d) => n + d.errors, 0);
      // Requests each device's last complete poll issued (retries would show here), summed: what
      // one cycle of the site costs, ÷ the minimal cover.
      const issuedPerCycle = devs.reduce((n, d) => n + d.requestsLastCycle, 0);
      const coverRatio = issuedPerCycle / minimal;
      figures.site_points = SITE_SLAVES * POINTS_PER_SLAVE;
      figures.site_readings_per_s = Math.round(readingsPerS);
      figures.site_minimal_cover_requests = minimal;
      figures.site_planned_requests = planned;
      figures.site_requests_per_cycle = round(issuedPerCycle, 2);
      figures.site_cover_ratio = round(coverRatio, 3);
      figures.site_gateway_cpu_percent = usage.gateway ?? -1;
      figures.site_gateway_rss_max_mib = round(rssMax, 1);
      figures.site_errors = errors;
      rows.push(['requests per cycle ÷ minimal cover', `${issuedPerCycle.toFixed(1)} issued (planned ${planned}) ÷ ${minimal}`, coverRatio.toFixed(3)]);
      rows.push([`whole gateway, ${fmtInt(SITE_SLAVES * POINTS_PER_SLAVE)} points at 1 s, ${SITE_SLAVES} slaves`, `${fmtInt(readingsPerS)} readings/s, CPU ${usage.gateway ?? '?'} % of a core, RSS max ${rssMax.toFixed(0)} MiB`, '']);
      notes.push(`requests ÷ minimal cover: ${coverRatio.toFixed(3)} (aim = 1.0) ${Math.abs(coverRatio - 1) < 0.005 ? 'met' : 'MISSED'}`);
      notes.push(
        `site: CPU ${usage.gateway ?? '?'} % of one core (aim <= 100) ${(usage.gateway ?? 999) <= 100 ? 'met' : 'MISSED'}; RSS max ${rssMax.toFixed(0)} MiB (aim <= 150) ${rssMax <= 150 ? 'met' : 'MISSED'}; every reading forwarded to a cloud Mosquitto; farm CPU ${usage.farm ?? '?'} %`,
      );
      if (readingsPerS < SITE_SLAVES * POINTS_PER_SLAVE * 0.95 || errors > 0) {
        ok = false;
        notes.push(`site did not keep up: ${fmtInt(readingsPerS)} readings/s, ${errors} errors`);
      }
      return { figures, table: { head: ['what', 'measured', 'ratio'], rows }, notes, ok };
    } finally {
      opts.progress.clear();
      await scope.close();
    }
  },
};
