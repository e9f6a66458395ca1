import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from '../../sim/free-port.js';

/** Debian's PostgreSQL server binaries (package postgresql, test/peers.sh); throws when missing. */
export function postgresBin(): string {
  for (const v of ['17', '16', '15']) {
    const dir = `/usr/lib/postgresql/${v}/bin`;
    if (existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'postgres'))) return dir;
  }
  throw new Error('PostgreSQL is not installed (Debian: apt-get install postgresql; test/peers.sh does it); this test needs it as a peer');
}

/**
 * A throw-away PostgreSQL server: a fresh cluster in a temp directory, on a free loopback port,
 * trusting local connections. initdb and postgres refuse to run as root: as root they run as the
 * `postgres` user (who owns the directory). `stop()` always ends it and removes the directory.
 */
export class Postgres {
  private proc!: ChildProcess;
  private exited: Promise<void> = Promise.resolve();
  private stderr = '';

  private constructor(
    private readonly dir: string,
    readonly port: number,
    private readonly launch: () => ChildProcess,
  ) {}

  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  static async start(): Promise<Postgres> {
    const bin = postgresBin();
    const dir = mkdtempSync(join(tmpdir(), 'outpost-pg-'));
    const ids = process.getuid?.() === 0 ? { uid: Number(execFileSync('id', ['-u', 'postgres']).toString()), gid: Number(execFileSync('id', ['-g', 'postgres']).toString()) } : {};
    const data = join(dir, 'data');
    const sockets = join(dir, 'run');
    mkdirSync(sockets);
    if (ids.uid !== undefined) {
      chownSync(dir, ids.uid, ids.gid);
      chownSync(sockets, ids.uid, ids.gid);
    }
    try {
      execFileSync(join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8', '--locale=C'], { ...ids, stdio: 'pipe', timeout: 60_000 });
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? '';
      throw new Error(`initdb failed: ${stderr.trim() || String(err)}`);
    }
    const port = await freePort();
    const server = new Postgres(dir, port, () =>
      spawn(join(bin, 'postgres'), ['-D', data, '-p', String(port), '-k', sockets, '-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=50'], {
        ...ids,
        stdio: ['ignore', 'ignore', 'pipe'],
      }),
    );
    await server.resume();
    return server;
  }

  /** Starts the server (again, on the same port and data); resolves once it accepts connections. */
  async resume(): Promise<void> {
    const proc = this.launch();
    this.proc = proc;
    this.exited = new Promise((resolve) => proc.once('exit', () => resolve()));
    this.stderr = '';
    proc.stderr?.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-4000)));
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (proc.exitCode !== null) {
        await this.stop();
        throw new Error(`postgres exited with ${proc.exitCode}: ${this.stderr.trim()}`);
      }
      const c = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: 1_000 });
      c.on('error', () => undefined);
      try {
        await c.connect();
        await c.end();
        return;
      } catch {
        await c.end().catch(() => undefined);
      }
      if (Date.now() > deadline) {
        await this.stop();
        throw new Error(`postgres did not accept connections on ${this.port} within 30 s: ${this.stderr.trim()}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** One query on a connection of its own. */
  async query<R extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<R[]> {
    const c = new pg.Client({ connectionString: this.url });
    c.on('error', () => undefined);
    await c.connect();
    try {
      return (await c.query<R>(sql, params)).rows;
    } finally {
      await c.end();
    }
  }

  /** The server goes away (fast shutdown: open connections are cut); its data stays for `resume()`. */
  async pause(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGINT');
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
      await this.exited;
      clearTimeout(timer);
    }
  }

  /** Fast shutdown (SIGINT), SIGKILL after 10 s; then the cluster's directory goes. */
  async stop(): Promise<void> {
    await this.pause();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
