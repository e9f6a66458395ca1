import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { createServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import mqtt from 'mqtt';

/**
 * A RabbitMQ cluster from Debian's packages (rabbitmq-server 3.10 and its MQTT plugin) on
 * 127.0.0.1, as the clustered cloud broker of end-to-end tests: every node on ports of its own
 * (MQTT, AMQP, Erlang distribution) and the cluster on an epmd of its own, so that nothing is
 * shared with another cluster or a packaged service. MQTT subscriptions of persistent sessions
 * live in quorum queues, replicated on every node: with RabbitMQ's default (classic queues, on
 * one node) killing a node loses messages it had acknowledged. The recipe and its pitfalls:
 * ../../shared/cluster-brokers.md (kept beside the project).
 *
 * Starting takes about 30 s (nodes boot, then two join the first); a node killed with `kill(n)`
 * serves MQTT again 5–9 s after `start(n)`. Use a fresh `dir` for every run: restarting a whole
 * cluster on old data waits ~2 minutes for a Raft election.
 */

const BIN = '/usr/lib/rabbitmq/bin';

/** Throws (never skips) when rabbitmq-server is not installed. */
export function rabbitmqBinaries(): { server: string; ctl: string; epmd: string } {
  const server = join(BIN, 'rabbitmq-server');
  // The /usr/sbin wrappers switch to the rabbitmq user and ignore HOME and the cookie: use these.
  const ctl = join(BIN, 'rabbitmqctl');
  const epmd = ['/usr/bin/epmd', '/usr/lib/erlang/bin/epmd'].find((p) => existsSync(p));
  if (!existsSync(server) || !existsSync(ctl) || epmd === undefined) {
    throw new Error('rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server); this test needs it as a peer');
  }
  return { server, ctl, epmd };
}

export interface RabbitClusterOptions {
  /** A fresh private directory: config, data, logs and the Erlang cookie of every node. */
  readonly dir: string;
  /** Nodes in the cluster (default 3: a majority survives one node down). */
  readonly nodes?: number;
  /** mqtt.prefetch: QoS 1 messages in flight to a subscriber (RabbitMQ's default 10 caps delivery at ~1.7k msg/s). */
  readonly prefetch?: number;
  /** How long the whole start may take (default 120 s). */
  readonly startTimeoutMs?: number;
}

export interface RabbitNode {
  /** 1-based, as in the node name `rmq{n}@localhost`. */
  readonly n: number;
  readonly name: string;
  readonly mqttPort: number;
  readonly amqpPort: number;
  readonly distPort: number;
  /** `mqtt://127.0.0.1:{mqttPort}` */
  readonly url: string;
}

/** A port free a moment ago on 127.0.0.1, in [lo, hi). */
async function freePortIn(lo: number, hi: number, taken: Set<number>): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = lo + Math.floor(Math.random() * (hi - lo));
    if (taken.has(port)) continue;
    const free = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (free) {
      taken.add(port);
      return port;
    }
  }
  throw new Error(`no free port on 127.0.0.1 in ${lo}-${hi}`);
}

function run(file: string, args: readonly string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { env, timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file.split('/').at(-1)} ${args.join(' ')}: ${(stderr || stdout || err.message).trim().split('\n').slice(-3).join(' / ')}`, { cause: err }));
      else resolve(stdout);
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One MQTT CONNACK from `url` (a node that answers MQTT clients, not only a health check). */
export async function mqttAnswers(url: string, timeoutMs = 3000): Promise<boolean> {
  try {
    const c = await mqtt.connectAsync(url, { clientId: `probe-${randomBytes(4).toString('hex')}`, reconnectPeriod: 0, connectTimeout: timeoutMs, protocolVersion: 4 }, false);
    await c.endAsync(true);
    return true;
  } catch {
    return false;
  }
}

export class RabbitCluster {
  private readonly procs = new Map<number, { proc: ChildProcess; exited: Promise<void> }>();
  private stopped = false;

  private constructor(
    private readonly dir: string,
    readonly nodes: readonly RabbitNode[],
    /** The cluster's own epmd (Erlang port mapper) port. */
    readonly epmdPort: number,
    private readonly bins: ReturnType<typeof rabbitmqBinaries>,
  ) {}

  /** Starts the nodes, joins them into one cluster, and resolves once every node answers MQTT. A start that fails stops what it started. */
  static async start(opts: RabbitClusterOptions): Promise<RabbitCluster> {
    const bins = rabbitmqBinaries();
    const count = opts.nodes ?? 3;
    const taken = new Set<number>();
    // Below 55535: the CLI tools take their own distribution port 10000 above the node's.
    const port = (): Promise<number> => freePortIn(20_000, 30_000, taken);
    const epmdPort = await port();
    const nodes: RabbitNode[] = [];
    for (let n = 1; n <= count; n++) {
      const mqttPort = await port();
      nodes.push({ n, name: `rmq${n}@localhost`, mqttPort, amqpPort: await port(), distPort: await port(), url: `mqtt://127.0.0.1:${mqttPort}` });
    }
    const cluster = new RabbitCluster(opts.dir, nodes, epmdPort, bins);
    const deadline = Date.now() + (opts.startTimeoutMs ?? 120_000);
    try {
      cluster.writeConfig(opts.prefetch ?? 200);
      for (const node of nodes) cluster.spawnNode(node.n);
      for (const node of nodes) await cluster.awaitStartup(node.n, deadline);
      for (const node of nodes.slice(1)) {
        await cluster.ctl(node.n, 'stop_app');
        await cluster.ctl(node.n, 'join_cluster', nodes[0]!.name);
        await cluster.ctl(node.n, 'start_app');
      }
      const running = await cluster.runningNodes();
      if (running.length !== count) throw new Error(`cluster formed with ${running.join(', ')} only`);
      for (const node of nodes) await cluster.awaitMqtt(node.n, deadline);
      return cluster;
    } catch (err) {
      await cluster.stop();
      throw new Error(`RabbitMQ cluster did not start: ${(err as Error).message} (logs in ${opts.dir}/rmqN/log)`, { cause: err });
    }
  }

  /** The nodes' MQTT URLs, in node order. */
  get urls(): string[] {
    return this.nodes.map((n) => n.url);
  }

  node(n: number): RabbitNode {
    const node = this.nodes[n - 1];
    if (!node) throw new Error(`no node ${n} in a cluster of ${this.nodes.length}`);
    return node;
  }

  /** The node whose MQTT port is `port` (to find which node a client is on). */
  nodeOnPort(port: number): RabbitNode | undefined {
    return this.nodes.find((n) => n.mqttPort === port);
  }

  /** Whether node n's process runs. */
  running(n: number): boolean {
    return this.procs.has(n);
  }

  /** kill -9 of node n's Erlang VM (a crash: nothing flushed, no goodbye to the cluster). Resolves when it is gone. */
  async kill(n: number): Promise<void> {
    const p = this.procs.get(n);
    if (!p) return;
    const pid = this.beamPid(n) ?? p.proc.pid;
    if (pid !== undefined) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    // The script that started it exits with it; make sure nothing of the node's group is left.
    await Promise.race([p.exited, sleep(5000)]);
    this.killGroup(p.proc);
    await p.exited;
    this.procs.delete(n);
  }

  /** Starts node n again after `kill(n)`: it rejoins the cluster by itself. Resolves once it answers MQTT. */
  async start(n: number, timeoutMs = 60_000): Promise<void> {
    if (this.procs.has(n)) return;
    this.spawnNode(n);
    const deadline = Date.now() + timeoutMs;
    await this.awaitStartup(n, deadline);
    await this.awaitMqtt(n, deadline);
  }

  /** `rabbitmqctl -n rmq{n}@localhost ...args` with the node's environment; resolves with its output. */
  ctl(n: number, ...args: string[]): Promise<string> {
    return run(this.bins.ctl, ['-n', this.node(n).name, ...args], this.env(n), 60_000);
  }

  /** The nodes the cluster reports running (asked of the first node that answers). */
  async runningNodes(): Promise<string[]> {
    let last: unknown;
    for (const node of this.nodes) {
      if (!this.running(node.n)) continue;
      try {
        const out = await this.ctl(node.n, 'cluster_status', '--formatter', 'json');
        return (JSON.parse(out) as { running_nodes: string[] }).running_nodes;
      } catch (err) {
        last = err;
      }
    }
    throw new Error('no node answered cluster_status', { cause: last });
  }

  /** Kills every node and the cluster's epmd. Idempotent; the directory is the caller's to remove. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    // The data is thrown away with the directory: no need for a graceful stop.
    await Promise.all([...this.procs.keys()].map((n) => this.kill(n)));
    await run(this.bins.epmd, ['-kill'], this.env(1), 10_000).catch(() => undefined);
  }

  private env(n: number): NodeJS.ProcessEnv {
    const node = this.node(n);
    const base = join(this.dir, `rmq${n}`);
    return {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      LANG: 'C.UTF-8',
      HOME: join(this.dir, 'home'),
      RABBITMQ_NODENAME: node.name,
      RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
      RABBITMQ_NODE_PORT: String(node.amqpPort),
      RABBITMQ_DIST_PORT: String(node.distPort),
      RABBITMQ_CONFIG_FILE: join(base, 'rabbitmq.conf'),
      RABBITMQ_ENABLED_PLUGINS_FILE: join(base, 'enabled_plugins'),
      RABBITMQ_MNESIA_BASE: join(base, 'mnesia'),
      RABBITMQ_LOG_BASE: join(base, 'log'),
      RABBITMQ_PID_FILE: join(base, 'beam.pid'),
      ERL_EPMD_ADDRESS: '127.0.0.1',
      ERL_EPMD_PORT: String(this.epmdPort),
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: '-kernel inet_dist_use_interface {127,0,0,1}',
    };
  }

  private writeConfig(prefetch: number): void {
    const home = join(this.dir, 'home');
    mkdirSync(home, { recursive: true });
    const cookie = join(home, '.erlang.cookie');
    writeFileSync(cookie, randomBytes(15).toString('hex'), { mode: 0o400 });
    // Erlang refuses a cookie that others can read.
    chmodSync(cookie, 0o400);
    for (const node of this.nodes) {
      const base = join(this.dir, `rmq${node.n}`);
      mkdirSync(base, { recursive: true });
      writeFileSync(
        join(base, 'rabbitmq.conf'),
        [
          `listeners.tcp.default = 127.0.0.1:${node.amqpPort}`,
          `mqtt.listeners.tcp.default = 127.0.0.1:${node.mqttPort}`,
          'mqtt.allow_anonymous = true',
          'mqtt.vhost = /',
          'mqtt.exchange = amq.topic',
          // Subscriptions of persistent sessions in replicated quorum queues: the default
          // (classic, one node) acknowledged and then lost messages when that node was killed.
          'mqtt.durable_queue_type = quorum',
          `mqtt.prefetch = ${prefetch}`,
          '',
        ].join('\n'),
      );
      writeFileSync(join(base, 'enabled_plugins'), '[rabbitmq_mqtt].\n');
    }
  }

  private spawnNode(n: number): void {
    const base = join(this.dir, `rmq${n}`);
    const out = openSync(join(base, 'stdout.log'), 'a');
    // Its own process group, so that a kill reaches the VM's helpers too.
    const proc = spawn(this.bins.server, [], { env: this.env(n), stdio: ['ignore', out, out], detached: true });
    closeSync(out);
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.once('exit', () => {
      if (this.procs.get(n)?.proc === proc) this.procs.delete(n);
    });
    this.procs.set(n, { proc, exited });
  }

  private beamPid(n: number): number | undefined {
    try {
      const pid = Number(readFileSync(join(this.dir, `rmq${n}`, 'beam.pid'), 'utf8').trim());
      return Number.isInteger(pid) && pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  private killGroup(proc: ChildProcess): void {
    if (proc.pid === undefined) return;
    try {
      process.kill(-proc.pid, 'SIGKILL');
    } catch {
      // the group is gone
    }
  }

  /** `await_startup` fails at once while the node has not registered with epmd: retried until the deadline. */
  private async awaitStartup(n: number, deadline: number): Promise<void> {
    for (;;) {
      if (!this.procs.has(n)) throw new Error(`node ${n} exited while starting`);
      try {
        await this.ctl(n, 'await_startup', '--timeout', String(Math.max(1, Math.round((deadline - Date.now()) / 1000))));
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`node ${n} did not start in time`, { cause: err });
        await sleep(1000);
      }
    }
  }

  private async awaitMqtt(n: number, deadline: number): Promise<void> {
    const { url } = this.node(n);
    while (!(await mqttAnswers(url))) {
      if (Date.now() > deadline) throw new Error(`node ${n} did not answer MQTT on ${url} in time`);
      await sleep(250);
    }
  }
}

/** Starts a cluster (RabbitCluster.start): `{ nodes, urls, kill(n), start(n), stop() }`. */
export function startRabbitCluster(opts: RabbitClusterOptions): Promise<RabbitCluster> {
  return RabbitCluster.start(opts);
}
