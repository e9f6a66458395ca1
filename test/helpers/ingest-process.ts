import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { CLI } from './gateway-process.js';

/** The figures line `outpost cloud-ingest --json` prints (runtime/cloud-ingest/cli.ts). */
export interface IngestFiguresLine {
  final?: boolean;
  batches: number;
  readings: number;
  rows: number;
  records: number;
  duplicates: number;
  refused: Record<string, number>;
  retries: number;
  connected: number;
  connects: number;
  brokers: string[];
}

export interface IngestProcessOptions {
  readonly brokers: readonly string[];
  readonly database: string;
  readonly clientId: string;
  readonly shareGroup?: string;
  readonly concurrency?: number;
  readonly extraArgs?: readonly string[];
}

/**
 * `outpost cloud-ingest` as an operator runs it: the compiled CLI in its own process, printing a
 * JSON figures line every second. `last` is the latest line, kept after a kill -9.
 */
export class IngestProcess {
  last: IngestFiguresLine | undefined;
  stderr = '';

  private constructor(
    readonly proc: ChildProcess,
    private readonly exited: Promise<number | null>,
  ) {}

  static async start(opts: IngestProcessOptions): Promise<IngestProcess> {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build (npm test does it first)`);
    const args = [CLI, 'cloud-ingest', ...opts.brokers.flatMap((b) => ['--broker', b]), '--database', opts.database, '--client-id', opts.clientId, '--stats-every', '1', '--json'];
    if (opts.shareGroup !== undefined) args.push('--share-group', opts.shareGroup);
    if (opts.concurrency !== undefined) args.push('--concurrency', String(opts.concurrency));
    args.push(...(opts.extraArgs ?? []));
    const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, OUTPOST_LOG_LEVEL: process.env.OUTPOST_LOG_LEVEL ?? 'warn' } });
    const exited = new Promise<number | null>((resolve) => proc.once('close', (code) => resolve(code)));
    const p = new IngestProcess(proc, exited);
    proc.stderr?.on('data', (d: Buffer) => (p.stderr = (p.stderr + d.toString()).slice(-8000)));
    let out = '';
    let started = false;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`cloud-ingest did not start within 60 s: ${p.stderr}`)), 60_000);
      proc.stdout?.on('data', (d: Buffer) => {
        out += d.toString();
        let nl: number;
        while ((nl = out.indexOf('\n')) !== -1) {
          const line = out.slice(0, nl);
          out = out.slice(nl + 1);
          if (!started && line.startsWith('outpost cloud-ingest: ')) {
            started = true;
            clearTimeout(timer);
            resolve();
          } else if (line.startsWith('{')) p.last = JSON.parse(line) as IngestFiguresLine;
        }
      });
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`cloud-ingest exited with ${code} before it started: ${p.stderr}`));
      });
    });
    return p;
  }

  /** Waits until `sessions` sessions are connected and subscribed (its figures line says so). */
  async subscribed(sessions = 1, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while ((this.last?.connected ?? 0) < sessions) {
      if (!this.running) throw new Error(`cloud-ingest exited before it subscribed: ${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`cloud-ingest did not subscribe within ${timeoutMs} ms: ${this.stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** A crash: no drain, no last acknowledgement. */
  async kill9(): Promise<void> {
    if (this.running) this.proc.kill('SIGKILL');
    await this.exited;
  }

  /** SIGTERM: drains and prints the final figures; resolves with the exit code. */
  async terminate(): Promise<number | null> {
    if (this.running) this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 15_000);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}
