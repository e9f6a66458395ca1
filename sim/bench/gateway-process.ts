import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SiteConfigInput } from '../../runtime/config/schema.js';

/** The built CLI, next to this file in dist/ (dist/sim/bench → dist/runtime). */
const CLI = fileURLToPath(new URL('../../runtime/cli.js', import.meta.url));
const READY = /^outpost (\S+): broker on (\S+):(\d+), api on (http:\/\/\S+)$/m;

export interface GatewayProcessOptions {
  /** Private directory for the config file and the store. */
  readonly dir: string;
  readonly cloudUrl: string;
  readonly gatewayId: string;
  readonly startTimeoutMs?: number;
}

/**
 * `outpost start` as its own process, the way it runs on a site: it gets a core of its own instead
 * of sharing the event loop with the load generator, as Mosquitto does in the baseline. Ports are
 * chosen by the OS (port 0) and read from the line the CLI prints when it is ready.
 */
export class GatewayProcess {
  private stderrTail = '';
  private readonly exited: Promise<void>;

  private constructor(
    private readonly proc: ChildProcess,
    readonly brokerUrl: string,
    readonly apiUrl: string,
  ) {
    this.exited = new Promise((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) resolve();
      else proc.once('exit', () => resolve());
    });
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  /** Warnings and errors the gateway logged (the last few KB), for failure reports. */
  get log(): string {
    return this.stderrTail;
  }

  static async start(opts: GatewayProcessOptions): Promise<GatewayProcess> {
    const config: SiteConfigInput = {
      gateway: { id: opts.gatewayId },
      broker: { host: '127.0.0.1', port: 0 },
      http: { host: '127.0.0.1', port: 0 },
      // One filter for everything: every reading is forwarded, so the cloud must see all of them.
      rules: [{ id: 'all-to-cloud', type: 'filter', match: { device: '*', point: '*' } }],
      cloud: { url: opts.cloudUrl },
      storage: { path: join(opts.dir, 'outpost.db'), synchronous: 'normal' },
    };
    const file = join(opts.dir, 'gateway.json'); // JSON is YAML, which the loader reads
    writeFileSync(file, `${JSON.stringify(config, null, 2)}\n`);
    const proc = spawn(process.execPath, [CLI, 'start', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    // Both pipes are drained for the whole life of the process: a full pipe would stall it.
    proc.stderr?.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4096);
    });
    try {
      const ready = await new Promise<RegExpExecArray>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`the gateway did not start within ${opts.startTimeoutMs ?? 15_000} ms: ${stderr.trim()}`)),
          opts.startTimeoutMs ?? 15_000,
        );
        proc.stdout?.on('data', (d: Buffer) => {
          if (stdout.length < 65536) stdout += d.toString();
          const m = READY.exec(stdout);
          if (m) {
            clearTimeout(timer);
            resolve(m);
          }
        });
        proc.once('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
        proc.once('exit', (code, signal) => {
          clearTimeout(timer);
          reject(new Error(`the gateway exited (${signal ?? code}) before it was ready: ${stderr.trim()}`));
        });
      });
      const gw = new GatewayProcess(proc, `mqtt://${ready[2]}:${ready[3]}`, ready[4]!);
      proc.stderr?.removeAllListeners('data');
      proc.stderr?.on('data', (d: Buffer) => {
        gw.stderrTail = (gw.stderrTail + d.toString()).slice(-4096);
      });
      gw.stderrTail = stderr;
      return gw;
    } catch (err) {
      proc.kill('SIGKILL');
      throw err;
    }
  }

  /** The gateway's own status (`GET /api/v1/status`), or undefined when it does not answer. */
  async status(): Promise<Record<string, unknown> | undefined> {
    try {
      const res = await fetch(`${this.apiUrl}/api/v1/status`, { signal: AbortSignal.timeout(2000) });
      return res.ok ? ((await res.json()) as Record<string, unknown>) : undefined;
    } catch {
      return undefined;
    }
  }

  /** SIGTERM (a graceful stop), SIGKILL after `timeoutMs`. */
  async stop(timeoutMs = 10_000): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs);
    await this.exited;
    clearTimeout(timer);
  }
}
