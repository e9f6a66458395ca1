import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SiteConfigInput } from '../runtime/config/schema.js';
import { GATEWAY_ENV, GATEWAY_NODE_FLAGS } from '../runtime/launch-flags.js';
import { withOpenFiles } from '../sim/open-files.js';
import { benchIdentities } from './load.js';
import { gatewayFetch, type FetchLike } from '../runtime/http/client.js';
import { hashToken, newToken } from '../runtime/http/scopes.js';

/**
 * Extra V8/Node flags for the gateway under benchmark (OUTPOST_BENCH_NODE_FLAGS, space-separated),
 * after the launch flags so they win: how the GC settings in docs/benchmarks.md were compared.
 */
function extraFlags(): string[] {
  return (process.env.OUTPOST_BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
}

/** The built CLI, next to this file in dist/ (dist/bench → dist/runtime). */
const CLI = fileURLToPath(new URL('../runtime/cli.js', import.meta.url));
const READY = /^outpost (\S+): broker on (\S+):(\d+), api on (https?:\/\/\S+)(?: \(certificate sha256 [0-9A-F:]+\))?$/m;
const MQTTS = /^outpost \S+: mqtts on (\S+):(\d+)/m;

/**
 * `outpost start` as its own process with a given config, the way it runs on a site: it gets a
 * core of its own instead of sharing the event loop with the load generator, as Mosquitto does in
 * the baselines. Ports are chosen by the OS (port 0) and read from the line the CLI prints.
 */
export class ConfiguredGateway {
  private stderrTail = '';
  private readonly exited: Promise<void>;

  private constructor(
    private readonly proc: ChildProcess,
    readonly brokerUrl: string,
    readonly apiUrl: string,
    /** fetch to the API with the bench's read token, the gateway's certificate pinned. */
    readonly fetch: FetchLike,
    /** mqtts://host:port when the config opens the broker's TLS listener. */
    readonly tlsUrl?: string,
  ) {
    this.exited = new Promise((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) resolve();
      else proc.once('exit', () => resolve());
    });
    proc.stderr?.on('data', (d: Buffer) => {
      this.stderrTail = (this.stderrTail + d.toString()).slice(-4096);
    });
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  /** Warnings and errors the gateway logged (the last few KB), for failure reports. */
  get log(): string {
    return this.stderrTail;
  }

  /**
   * Writes `config` (JSON, which the YAML loader reads) into `dir` and starts the gateway on it.
   * `openFiles`: what its soft limit on open files is raised to if lower (one per connection);
   * `nodeFlags`: node flags after the launch flags, as a site sets them with NODE_OPTIONS.
   */
  static async start(dir: string, input: SiteConfigInput, opts: { timeoutMs?: number; openFiles?: number; nodeFlags?: readonly string[] } = {}): Promise<ConfiguredGateway> {
    const { timeoutMs = 15_000, openFiles, nodeFlags = [] } = opts;
    const file = join(dir, 'gateway.json');
    // A read token for the bench's own status calls, declared by its hash.
    const token = newToken();
    const http = { ...input.http, tokens: [...(input.http?.tokens ?? []), { name: 'bench', scopes: ['read' as const], sha256: hashToken(token) }] };
    const config: SiteConfigInput = { ...input, http };
    writeFileSync(file, `${JSON.stringify(config, null, 2)}\n`);
    const argv = [...GATEWAY_NODE_FLAGS, ...nodeFlags, ...extraFlags(), CLI, 'start', '--config', file];
    const cmd = openFiles === undefined ? { command: process.execPath, args: argv } : withOpenFiles(openFiles, process.execPath, argv);
    const proc = spawn(cmd.command, cmd.args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...GATEWAY_ENV } });
    let stdout = '';
    let stderr = '';
    // Both pipes are drained for the whole life of the process: a full pipe would stall it.
    const onStderr = (d: Buffer): void => {
      stderr = (stderr + d.toString()).slice(-4096);
    };
    proc.stderr?.on('data', onStderr);
    try {
      const ready = await new Promise<RegExpExecArray>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`the gateway did not start within ${timeoutMs} ms: ${stderr.trim()}`)), timeoutMs);
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
      proc.stderr?.off('data', onStderr);
      const apiUrl = ready[4]!;
      const tls = MQTTS.exec(stdout);
      const ca = apiUrl.startsWith('https:') ? readFileSync(join(dirname(config.storage.path), 'http.crt'), 'utf8') : undefined;
      const gw = new ConfiguredGateway(proc, `mqtt://${ready[2]}:${ready[3]}`, apiUrl, gatewayFetch({ token, ca }), tls ? `mqtts://${tls[1]}:${tls[2]}` : undefined);
      gw.stderrTail = stderr;
      return gw;
    } catch (err) {
      proc.kill('SIGKILL');
      throw err;
    }
  }

  /** The gateway's own status (`GET /api/v1/status`), or undefined when it does not answer within `timeoutMs`. */
  async status(timeoutMs = 2000): Promise<Record<string, unknown> | undefined> {
    try {
      const res = await this.fetch(`${this.apiUrl}/api/v1/status`, { signal: AbortSignal.timeout(timeoutMs) });
      return res.ok ? ((await res.json()) as Record<string, unknown>) : undefined;
    } catch {
      return undefined;
    }
  }

  /** Rows waiting in the outbox according to the status API; undefined when it does not answer. */
  async outboxDepth(): Promise<number | undefined> {
    const outbox = (await this.status())?.outbox;
    const depth = typeof outbox === 'object' && outbox !== null ? (outbox as { depth?: unknown }).depth : undefined;
    return typeof depth === 'number' ? depth : undefined;
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

/** A gateway config that forwards every reading to `cloudUrl` (uplink defaults unless given). */
export function forwardAllConfig(dir: string, gatewayId: string, cloudUrl: string, cloud: Partial<SiteConfigInput['cloud']> = {}): SiteConfigInput {
  return {
    gateway: { id: gatewayId },
    broker: { host: '127.0.0.1', port: 0, acceptUnknownDevices: true },
    identities: benchIdentities,
    http: { host: '127.0.0.1', port: 0 },
    // One filter for everything: every reading is forwarded, so the cloud must see all of them.
    rules: [{ id: 'all-to-cloud', type: 'filter', match: { device: '*', point: '*' } }],
    cloud: { url: cloudUrl, ...cloud },
    storage: { path: join(dir, 'outpost.db'), synchronous: 'normal' },
  };
}
