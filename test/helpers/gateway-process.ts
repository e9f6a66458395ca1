import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { GATEWAY_ENV, GATEWAY_NODE_FLAGS } from '../../runtime/launch-flags.js';

export const CLI = fileURLToPath(new URL('../../dist/runtime/cli.js', import.meta.url));

/** The gateway as a user runs it: `outpost start --config FILE` in its own process. */
export class GatewayProcess {
  private constructor(
    readonly proc: ChildProcess,
    readonly brokerPort: number,
    readonly httpPort: number,
    /** The API certificate's SHA-256 fingerprint from the start line (undefined without TLS). */
    readonly fingerprint: string | undefined,
    private readonly exited: Promise<number | null>,
  ) {}

  static async start(configFile: string, env: NodeJS.ProcessEnv = {}): Promise<GatewayProcess> {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build (npm test does it first)`);
    const proc = spawn(process.execPath, [...GATEWAY_NODE_FLAGS, CLI, 'start', '--config', configFile], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...GATEWAY_ENV, OUTPOST_LOG_LEVEL: 'warn', ...env },
    });
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    let out = '';
    let err = '';
    proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    const ports = await new Promise<[number, number, string | undefined]>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`gateway did not start within 15 s: ${err}`)), 15_000);
      proc.stdout?.on('data', (d: Buffer) => {
        out += d.toString();
        // An external site broker (broker.external) has no port of the gateway's: 0.
        const m = /broker (?:on [^:]+:(\d+)|external \S+), api on https?:\/\/[^:]+:(\d+)(?: \(certificate sha256 ([0-9A-F:]+)\))?\n/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve([Number(m[1] ?? 0), Number(m[2]), m[3]]);
        }
      });
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`gateway exited with ${code} before it started: ${err}`));
      });
    });
    return new GatewayProcess(proc, ports[0], ports[1], ports[2], exited);
  }

  get brokerUrl(): string {
    return `mqtt://127.0.0.1:${this.brokerPort}`;
  }

  /** Power cut: no chance to flush or close anything. */
  async kill9(): Promise<void> {
    this.proc.kill('SIGKILL');
    await this.exited;
  }

  /** Graceful stop; resolves with the exit code. */
  async terminate(): Promise<number | null> {
    this.proc.kill('SIGTERM');
    return this.exited;
  }
}
