import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { freePort } from './free-port.js';
import { withOpenFiles } from './open-files.js';

/** Where Debian's mosquitto lives; throws (never skips) when it is not installed. */
export function mosquittoBinary(): string {
  for (const p of ['/usr/sbin/mosquitto', '/usr/bin/mosquitto', '/usr/local/sbin/mosquitto']) if (existsSync(p)) return p;
  throw new Error('mosquitto is not installed (Debian: apt-get install mosquitto); this test needs it as a peer');
}

export interface MosquittoOptions {
  /** A private directory for config, persistence and log. */
  readonly dir: string;
  /** Keep QoS 1 sessions and messages across restarts (saved on SIGTERM). */
  readonly persistence?: boolean;
  /** More config lines, e.g. a bridge `connection` block. */
  readonly extra?: readonly string[];
  /**
   * Accounts (user name -> password, in a `password_file` made with mosquitto_passwd): with them,
   * clients without credentials are refused.
   */
  readonly users?: Readonly<Record<string, string>>;
  /** The port to listen on (default: a free one). */
  readonly port?: number;
  /** Open files the broker may hold (one per connection): its soft limit is raised to this if lower. */
  readonly openFiles?: number;
  /** `acl_file` lines (`user gw`, `topic read outpost/v1/dev/#`, `pattern write outpost/v1/dev/%u/#`). */
  readonly acl?: readonly string[];
}

/** Writes a Mosquitto password file (hashed by Debian's mosquitto_passwd). */
function writePasswordFile(file: string, users: Readonly<Record<string, string>>): void {
  const bin = ['/usr/bin/mosquitto_passwd', '/usr/local/bin/mosquitto_passwd'].find((p) => existsSync(p));
  if (!bin) throw new Error('mosquitto_passwd is not installed (Debian: apt-get install mosquitto)');
  writeFileSync(file, '', { mode: 0o600 });
  for (const [user, password] of Object.entries(users)) {
    const r = spawnSync(bin, ['-b', file, user, password], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`mosquitto_passwd failed for ${user}: ${r.stderr || r.stdout}`);
  }
}

/**
 * Debian's Mosquitto started on a free loopback port, as the cloud broker or a site broker of the
 * interoperability tests and benchmarks. Queues are unlimited (`max_queued_messages 0`), so the
 * broker itself never drops QoS 1 messages; `restart()` keeps the port.
 */
export class Mosquitto {
  private proc: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();

  private constructor(
    private readonly opts: MosquittoOptions,
    readonly port: number,
  ) {}

  static async start(opts: MosquittoOptions): Promise<Mosquitto> {
    const m = new Mosquitto(opts, opts.port ?? (await freePort()));
    await m.start();
    return m;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  async start(): Promise<void> {
    if (this.proc) return;
    const bin = mosquittoBinary();
    mkdirSync(this.opts.dir, { recursive: true });
    const conf = join(this.opts.dir, 'mosquitto.conf');
    const auth: string[] = [];
    if (this.opts.users) {
      const passwd = join(this.opts.dir, 'passwd');
      writePasswordFile(passwd, this.opts.users);
      auth.push(`password_file ${passwd}`);
    }
    if (this.opts.acl) {
      const acl = join(this.opts.dir, 'acl');
      writeFileSync(acl, `${this.opts.acl.join('\n')}\n`);
      auth.push(`acl_file ${acl}`);
    }
    writeFileSync(
      conf,
      [
        // Started as root, mosquitto drops to user "mosquitto", which cannot write the private
        // directory: persistence and log would silently be lost. Stay the user that started it.
        `user ${userInfo().username}`,
        'per_listener_settings false',
        `listener ${this.port} 127.0.0.1`,
        `allow_anonymous ${this.opts.users ? 'false' : 'true'}`,
        ...auth,
        'max_queued_messages 0',
        'max_inflight_messages 0',
        `persistence ${this.opts.persistence ? 'true' : 'false'}`,
        `persistence_location ${this.opts.dir}/`,
        `log_dest file ${join(this.opts.dir, 'mosquitto.log')}`,
        'log_type error',
        'log_type warning',
        ...(this.opts.extra ?? []),
        '',
      ].join('\n'),
    );
    const cmd = this.opts.openFiles === undefined ? { command: bin, args: ['-c', conf] } : withOpenFiles(this.opts.openFiles, bin, ['-c', conf]);
    const proc = spawn(cmd.command, cmd.args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    this.proc = proc;
    this.exited = new Promise((resolve) => proc.once('exit', () => resolve()));
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (proc.exitCode !== null) {
        this.proc = undefined;
        throw new Error(`mosquitto exited with ${proc.exitCode}: ${stderr.trim()}`);
      }
      if (await canConnect(this.port)) return;
      if (Date.now() > deadline) {
        // Never leave a broker behind that the caller cannot stop.
        await this.stop();
        throw new Error(`mosquitto did not listen on ${this.port} within 10 s: ${stderr.trim()}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** SIGTERM: a clean stop that saves persistent sessions. */
  async stop(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (!proc || proc.exitCode !== null) return;
    proc.kill('SIGTERM');
    // A broker that does not exit within 5 s of SIGTERM is killed, so no caller hangs on it.
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5_000);
    await this.exited;
    clearTimeout(timer);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
