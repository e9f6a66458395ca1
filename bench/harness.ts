import { readFileSync, rmSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

/** A figure in the JSON output: numbers, or a string/boolean that says what a number means. */
export type Figure = number | string | boolean;

export interface BenchOptions {
  /** Messages per scenario. */
  readonly messages: number;
  /** Hard limit per scenario, from the first publish to the end of accounting. */
  readonly timeoutMs: number;
  readonly progress: StatusLine;
}

export interface BenchResult {
  /** Flat figures for `--json`, snake_case keys. */
  readonly figures: Record<string, Figure>;
  /** Header and rows for the human-readable table. */
  readonly table: { readonly head: readonly string[]; readonly rows: readonly (readonly string[])[] };
  /** Lines printed under the table (ratios, caveats). */
  readonly notes: readonly string[];
  /** False when our side lost data or a scenario did not finish: the run exits non-zero. */
  readonly ok: boolean;
}

/** One named benchmark; run.ts holds the list, so a new benchmark is one more entry there. */
export interface Benchmark {
  readonly name: string;
  readonly description: string;
  /** Wall-clock budget of the whole benchmark (setup included); run.ts aborts the run past it. */
  maxDurationMs(opts: BenchOptions): number;
  run(opts: BenchOptions): Promise<BenchResult>;
}

/**
 * One live status line on stderr when it is a terminal (stdout stays clean for `--json` and for
 * redirection); nothing otherwise, so logs of CI runs are not flooded.
 */
export class StatusLine {
  private readonly tty = process.stderr.isTTY;
  private shown = false;

  show(text: string): void {
    if (!this.tty) return;
    process.stderr.write(`\r\x1b[2K${text}`);
    this.shown = true;
  }

  clear(): void {
    if (this.tty && this.shown) process.stderr.write('\r\x1b[2K');
    this.shown = false;
  }
}

/**
 * Resources of a scenario, released in reverse order by `close()` however the scenario ends.
 * Child process ids and temp dirs are also kept in a process-wide registry so that an exit that
 * skips `close()` (uncaught error, signal) still kills them and removes the dirs: spawned children
 * are not killed with their parent.
 */
export class Scope {
  private readonly tasks: Array<() => Promise<void> | void> = [];

  defer(task: () => Promise<void> | void): void {
    this.tasks.push(task);
  }

  /** Register a temp dir: removed on close and, failing that, on process exit. */
  dir(path: string): string {
    emergencyDirs.add(path);
    this.defer(() => {
      rmSync(path, { recursive: true, force: true });
      emergencyDirs.delete(path);
    });
    return path;
  }

  /** Register a child process id to kill on process exit if its owner did not stop it. */
  pid(pid: number | undefined): void {
    if (pid === undefined) return;
    emergencyPids.add(pid);
    this.defer(() => {
      emergencyPids.delete(pid);
    });
  }

  async close(): Promise<void> {
    const errors: unknown[] = [];
    for (const task of this.tasks.splice(0).reverse()) {
      try {
        await task();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, 'cleanup failed');
  }
}

const emergencyPids = new Set<number>();
const emergencyDirs = new Set<string>();

/** Synchronous last resort, safe to call from an 'exit' handler. */
export function emergencyCleanup(): void {
  for (const pid of emergencyPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  emergencyPids.clear();
  for (const dir of emergencyDirs) rmSync(dir, { recursive: true, force: true });
  emergencyDirs.clear();
}

export function fmtInt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resident memory of a process in MiB (VmRSS); undefined off Linux or once it exited. */
export function rssMiB(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Kernel clock ticks per second, the unit of /proc/PID/stat times (100 on every Linux we run). */
const CLK_TCK = 100;

/** CPU seconds (user + system) a process has used so far; undefined off Linux or once it exited. */
function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which may itself contain spaces: utime and stime are 14 and 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return undefined;
  }
}

/**
 * Share of one core each process used over an interval, in percent: says which process was the
 * bottleneck (100 % = one core saturated). `self` is this process, i.e. the load generator and the
 * cloud consumer.
 */
export class CpuMeter {
  private readonly start = new Map<string, number>();
  private readonly selfStart = process.cpuUsage();
  private readonly t0 = performance.now();

  constructor(private readonly pids: Readonly<Record<string, number | undefined>>) {
    for (const [name, pid] of Object.entries(pids)) {
      const s = pid === undefined ? undefined : cpuSeconds(pid);
      if (s !== undefined) this.start.set(name, s);
    }
  }

  percent(): Record<string, number> {
    const wall = (performance.now() - this.t0) / 1000;
    return Object.fromEntries(Object.entries(this.seconds()).map(([name, s]) => [name, Math.round((s / wall) * 100)]));
  }

  /**
   * CPU seconds each process used so far (10 ms resolution): unlike a share of the wall clock, what
   * a path costs per message stays put when other work on the machine takes cores away from it.
   */
  seconds(): Record<string, number> {
    const self = process.cpuUsage(this.selfStart);
    const out: Record<string, number> = { self: (self.user + self.system) / 1e6 };
    for (const [name, pid] of Object.entries(this.pids)) {
      const before = this.start.get(name);
      const now = pid === undefined ? undefined : cpuSeconds(pid);
      if (before !== undefined && now !== undefined) out[name] = now - before;
    }
    return out;
  }
}
