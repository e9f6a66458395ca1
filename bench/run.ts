import { spawnSync } from 'node:child_process';
import { cpus, loadavg, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { mosquittoBinary } from '../sim/mosquitto.js';
import { emergencyCleanup, fmtInt, StatusLine, type Benchmark, type BenchOptions, type BenchResult, type Figure } from './harness.js';
import { drainBenchmark } from './drain.js';
import { ingestBenchmark, ingestSecurityBenchmark } from './ingest.js';
import { outboxAppendBenchmark } from './outbox-append.js';
import { uplinkBytesBenchmark } from './uplink-bytes.js';
import { modbusPollBenchmark } from './modbus-poll.js';
import { rulesBenchmark } from './rules.js';
import { actuationBenchmark } from './actuation.js';
import { nodeRedFlowBenchmark } from './node-red-flow.js';
import { nodeRedE2eBenchmark } from './node-red-e2e.js';
import { otaBenchmark } from './ota.js';
import { twinsBenchmark } from './twins.js';
import { footprintBenchmark } from './footprint.js';
import { scaleBenchmark } from './scale.js';
import { errorMessage } from '../runtime/contracts/index.js';

/** Sizes of the benchmarks that are not counted in messages; each has its own option. */
interface Sizes {
  readonly rows: number;
  readonly readings: number;
  readonly imageMb: number;
  readonly chunkCacheMb: number;
  /** --children and --seconds: undefined means each benchmark's own default (they differ). */
  readonly children?: number | undefined;
  readonly seconds?: number | undefined;
}

const DEFAULT_SIZES: Sizes = { rows: 200_000, readings: 300_000, imageMb: 8, chunkCacheMb: 32 };
/** Defaults of --seconds and --children per benchmark. */
const UPLINK_SECONDS = 20;
const TWINS_CHILDREN = 2000;
const SCALE = { children: 10_000, seconds: 60 } as const;

/**
 * Every benchmark, in run order. A new benchmark is a module exporting a `Benchmark` (or a
 * function of its size that returns one), listed here.
 */
function benchmarks(sizes: Sizes): readonly Benchmark[] {
  return [
    ingestBenchmark,
    ingestSecurityBenchmark,
    outboxAppendBenchmark(sizes.rows),
    drainBenchmark(sizes.readings),
    uplinkBytesBenchmark(sizes.seconds ?? UPLINK_SECONDS),
    modbusPollBenchmark,
    rulesBenchmark,
    nodeRedFlowBenchmark,
    nodeRedE2eBenchmark,
    actuationBenchmark,
    otaBenchmark(sizes.imageMb, sizes.chunkCacheMb),
    twinsBenchmark(sizes.children ?? TWINS_CHILDREN),
    footprintBenchmark,
    scaleBenchmark({ children: sizes.children ?? SCALE.children, seconds: sizes.seconds ?? SCALE.seconds }),
  ];
}

const NAMES = benchmarks(DEFAULT_SIZES).map((b) => b.name);

const HELP = `npm run bench -- [options]   (builds, then runs node dist/bench/run.js)

Each benchmark runs Outpost and a baseline on the same load in the same run and reports the ratio.

  --only NAME       run one benchmark (${NAMES.join(', ')})
  --messages N      ingest, ingest-security, node-red-e2e: messages per scenario (default 50000)
  --rows N          outbox-append: rows per variant and round (default ${DEFAULT_SIZES.rows})
  --readings N      drain: readings ingested during the outage (default ${DEFAULT_SIZES.readings})
  --seconds S       uplink-bytes: seconds the demo site runs per setting (default ${UPLINK_SECONDS});
                    scale: seconds every child publishes once a second (default ${SCALE.seconds})
  --image-mb N      ota: release image size in MiB (default ${DEFAULT_SIZES.imageMb})
  --chunk-cache-mb N  ota: the update server's in-memory chunk cache in MiB, 0 for none (default ${DEFAULT_SIZES.chunkCacheMb})
  --children N      twins: child devices in the fleet (default ${TWINS_CHILDREN});
                    scale: child devices connecting at once (default ${fmtInt(SCALE.children)})
  --timeout S       hard limit per scenario in seconds (default 120)
  --json            print one JSON object keyed by benchmark name, plus "machine"
  --list            list the benchmarks
`;

function machine(): Record<string, Figure> {
  const cpu = cpus();
  const mosquitto = spawnSync(mosquittoBinary(), ['-h'], { encoding: 'utf8' }).stdout.split('\n')[0] ?? '';
  return {
    date: new Date().toISOString(),
    cpus: cpu.length,
    cpu_model: cpu[0]?.model.trim() ?? 'unknown',
    memory_gb: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    mosquitto: mosquitto.replace(/^mosquitto version\s*/, ''),
    // Other work on the machine depresses every figure; the load at the start says how much.
    load_avg_1m_at_start: Math.round(loadavg()[0]! * 100) / 100,
  };
}

function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  // First column is a name (left-aligned); the rest are figures (right-aligned).
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** A mistake on the command line: reported in one line with exit code 2, not as a crash. */
class UsageError extends Error {}

function positiveInt(name: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name}: expected a positive integer, got "${v}"`);
  return n;
}

function nonNegativeInt(name: string, v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name}: expected an integer >= 0, got "${v}"`);
  return n;
}

async function main(): Promise<number> {
  try {
    return await runSelected();
  } catch (err) {
    // parseArgs reports unknown options and missing values as TypeErrors with an ERR_PARSE_ARGS code.
    const code = (err as { code?: unknown }).code;
    if (err instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))) {
      process.stderr.write(`bench: ${errorMessage(err)}\n\n${HELP}`);
      return 2;
    }
    throw err;
  }
}

async function runSelected(): Promise<number> {
  const { values } = parseArgs({
    options: {
      only: { type: 'string' },
      messages: { type: 'string', default: '50000' },
      rows: { type: 'string', default: String(DEFAULT_SIZES.rows) },
      readings: { type: 'string', default: String(DEFAULT_SIZES.readings) },
      seconds: { type: 'string' },
      'image-mb': { type: 'string', default: String(DEFAULT_SIZES.imageMb) },
      'chunk-cache-mb': { type: 'string', default: String(DEFAULT_SIZES.chunkCacheMb) },
      children: { type: 'string' },
      timeout: { type: 'string', default: '120' },
      json: { type: 'boolean', default: false },
      list: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const all = benchmarks({
    rows: positiveInt('rows', values.rows),
    readings: positiveInt('readings', values.readings),
    seconds: values.seconds === undefined ? undefined : positiveInt('seconds', values.seconds),
    imageMb: positiveInt('image-mb', values['image-mb']),
    chunkCacheMb: nonNegativeInt('chunk-cache-mb', values['chunk-cache-mb']),
    children: values.children === undefined ? undefined : positiveInt('children', values.children),
  });
  if (values.list) {
    for (const b of all) process.stdout.write(`${b.name.padEnd(14)} ${b.description}\n`);
    return 0;
  }
  const selected = values.only === undefined ? all : all.filter((b) => b.name === values.only);
  if (selected.length === 0) {
    process.stderr.write(`unknown benchmark "${values.only}"; known: ${NAMES.join(', ')}\n`);
    return 2;
  }
  const progress = new StatusLine();
  const opts: BenchOptions = {
    messages: positiveInt('messages', values.messages),
    timeoutMs: positiveInt('timeout', values.timeout) * 1000,
    progress,
  };

  const host = machine();
  const output: Record<string, Record<string, Figure>> = {};
  let ok = true;
  if (!values.json) {
    process.stdout.write(
      `Outpost benchmarks  ${host.date}  ${host.cpus} × ${host.cpu_model}, Node ${host.node}, Mosquitto ${host.mosquitto}, load ${host.load_avg_1m_at_start}\n`,
    );
  }
  for (const bench of selected) {
    // A last resort for a hang no scenario timeout catches (a broker that never answers):
    // exiting runs the emergency cleanup of child processes and temp dirs.
    const watchdog = setTimeout(() => {
      progress.clear();
      process.stderr.write(`bench ${bench.name}: still running after ${bench.maxDurationMs(opts) / 1000} s; aborting\n`);
      process.exit(1);
    }, bench.maxDurationMs(opts));
    watchdog.unref();
    let result: BenchResult;
    try {
      result = await bench.run(opts);
    } catch (err) {
      ok = false;
      const message = err instanceof Error ? `${err.message}${err.cause instanceof Error ? ` (${err.cause.message})` : ""}` : String(err);
      if (process.env.OUTPOST_BENCH_DEBUG) process.stderr.write(`${(err as Error).stack ?? ""}\n`);
      output[bench.name] = { error: message };
      if (!values.json) process.stdout.write(`\n${bench.name}: FAILED: ${message}\n`);
      continue;
    } finally {
      clearTimeout(watchdog);
    }
    ok &&= result.ok;
    output[bench.name] = result.figures;
    if (!values.json) {
      // Only ingest and node-red-e2e are sized by --messages; the others name their size in their description.
      const size = [ingestBenchmark.name, ingestSecurityBenchmark.name, nodeRedE2eBenchmark.name].includes(bench.name) ? `, ${opts.messages.toLocaleString('en-US')} messages` : '';
      process.stdout.write(`\n${bench.name}: ${bench.description}${size}\n`);
      process.stdout.write(`${table(result.table.head, result.table.rows)}\n`);
      for (const note of result.notes) process.stdout.write(`${note}\n`);
    }
  }
  output.machine = host;
  if (values.json) process.stdout.write(`${JSON.stringify(output)}\n`);
  return ok ? 0 : 1;
}

// Exiting runs the 'exit' handler, which kills the brokers and gateway we started and removes
// their temp dirs. `on`, not `once`: the handler stays installed, so a second signal arriving
// while we exit cannot take the default action and skip the cleanup.
process.on('exit', emergencyCleanup);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    process.stderr.write(`\nbench: ${sig}, cleaning up\n`);
    process.exit(130);
  });
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
