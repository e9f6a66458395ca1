import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { stringify } from 'yaml';
import { deriveDeviceKey, decodeUplinkPayload, uplinkBatchSchema } from '../runtime/contracts/index.js';
import { SimChildDevice } from './child-device.js';
import { freePort } from './free-port.js';

/**
 * A fleet: N gateways (each the `outpost` CLI in its own process, with its own store) × M
 * simulated children each, syncing to one cloud (a broker or a cluster of them), and a cloud-side
 * consumer that measures, per gateway, what arrived and how late: the lag from a child's reading
 * (its `ts`) to its arrival at the consumer. Speaks only the public contracts and protocols.
 */
export interface FleetOptions {
  readonly gateways: number;
  readonly children: number;
  /** How often each child publishes one reading. */
  readonly intervalMs: number;
  readonly durationMs: number;
  /** The cloud broker(s) the gateways sync to, in order of preference (cloud.urls). */
  readonly cloudUrls: readonly string[];
  /** Where the consumer subscribes (default: the first cloud URL). */
  readonly consumerUrl?: string;
  /** The outpost CLI (dist/runtime/cli.js). */
  readonly cli: string;
  /** Stores, configs and logs of the gateways. */
  readonly dir: string;
  /** How long to wait, after the children stopped, for the backlog to arrive. */
  readonly drainMs?: number;
  /** About once a second while running. */
  readonly onProgress?: (p: FleetProgress) => void;
}

export interface GatewayFigures {
  readonly gateway: string;
  readonly children: number;
  /** Readings the gateway acknowledged to its children. */
  readonly acked: number;
  /** Of those, arrived at the consumer (each once). */
  readonly delivered: number;
  readonly missing: number;
  /** Copies received beyond the first (at-least-once delivery). */
  readonly duplicates: number;
  readonly lagMs: { readonly p50: number; readonly p99: number; readonly max: number };
}

export interface FleetProgress {
  readonly elapsedMs: number;
  readonly phase: 'starting' | 'running' | 'draining' | 'done';
  readonly acked: number;
  readonly delivered: number;
  readonly connected: number;
}

export interface FleetReport {
  readonly gateways: readonly GatewayFigures[];
  readonly totals: { acked: number; delivered: number; missing: number; duplicates: number; readingsPerS: number };
  readonly durationMs: number;
}

/** Lag samples of one gateway: every one up to the cap, then a uniform sample of them (reservoir). */
class Lags {
  private readonly samples: number[] = [];
  private seen = 0;
  max = 0;
  constructor(private readonly cap = 50_000) {}
  add(ms: number): void {
    this.seen++;
    if (ms > this.max) this.max = ms;
    if (this.samples.length < this.cap) this.samples.push(ms);
    else {
      const i = Math.floor(Math.random() * this.seen);
      if (i < this.cap) this.samples[i] = ms;
    }
  }
  quantile(q: number): number {
    if (this.samples.length === 0) return 0;
    const sorted = [...this.samples].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  }
}

/** The cloud side: every gateway's telemetry at QoS 1 on a persistent session, counted per gateway. */
class FleetConsumer {
  readonly ids = new Set<string>();
  readonly lags = new Map<string, Lags>();
  readonly duplicates = new Map<string, number>();
  readonly delivered = new Map<string, number>();
  rejected = 0;
  private client: MqttClient | undefined;

  async start(url: string): Promise<void> {
    const client = mqtt.connect(url, { clientId: `outpost-fleet-consumer-${process.pid}`, clean: false, reconnectPeriod: 500, connectTimeout: 10_000 });
    this.client = client;
    client.on('error', () => undefined);
    // Attached before the connection: a persistent session may deliver before `connect`.
    client.on('message', (topic, payload) => this.take(topic, payload));
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`the fleet consumer could not connect to ${url}`)), 30_000);
      client.once('connect', () => {
        clearTimeout(t);
        resolve();
      });
    });
    await client.subscribeAsync('outpost/v1/gw/+/telemetry', { qos: 1 });
  }

  private take(topic: string, payload: Buffer): void {
    const now = Date.now();
    const gateway = topic.split('/')[3] ?? '?';
    let batch;
    try {
      batch = uplinkBatchSchema.parse(decodeUplinkPayload(payload));
    } catch {
      this.rejected++;
      return;
    }
    let lags = this.lags.get(gateway);
    if (!lags) this.lags.set(gateway, (lags = new Lags()));
    for (const r of batch.readings) {
      if (r.point.startsWith('$')) continue;
      if (this.ids.has(r.id)) {
        this.duplicates.set(gateway, (this.duplicates.get(gateway) ?? 0) + 1);
        continue;
      }
      this.ids.add(r.id);
      this.delivered.set(gateway, (this.delivered.get(gateway) ?? 0) + 1);
      lags.add(Math.max(0, now - r.ts));
    }
  }

  async stop(): Promise<void> {
    await this.client?.endAsync(true);
  }
}

interface FleetGateway {
  readonly id: string;
  readonly proc: ChildProcess;
  readonly exited: Promise<number | null>;
  readonly children: SimChildDevice[];
}

async function startGateway(opts: FleetOptions, index: number, secret: string): Promise<FleetGateway> {
  const id = `fleet-gw-${index + 1}`;
  const dir = join(opts.dir, id);
  mkdirSync(dir, { recursive: true });
  const [brokerPort, httpPort] = [await freePort(), await freePort()];
  const config = join(dir, 'site.yaml');
  writeFileSync(
    config,
    stringify({
      gateway: { id },
      broker: { host: '127.0.0.1', port: brokerPort, acceptUnknownDevices: true, limits: { maxConnectionsPerAddress: Math.max(256, opts.children + 16), connectRate: { perSecond: 1000, burst: Math.max(400, opts.children) } } },
      identities: { groups: [{ name: 'fleet', devices: 'child-*', secret }] },
      http: { host: '127.0.0.1', port: httpPort, tls: false },
      rules: [{ id: 'all', type: 'filter', match: { device: '*', point: '*' } }],
      cloud: { ...(opts.cloudUrls.length === 1 ? { url: opts.cloudUrls[0] } : { urls: opts.cloudUrls }), clientId: `outpost-${id}`, backoff: { initialMs: 200, maxMs: 2000 } },
      storage: { path: join(dir, 'outpost.db') },
    }),
    { mode: 0o600 },
  );
  const proc = spawn(process.execPath, [opts.cli, 'start', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, OUTPOST_LOG_LEVEL: 'warn' } });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  let err = '';
  proc.stderr?.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${id} did not start within 30 s: ${err}`)), 30_000);
    let out = '';
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes(' api on ')) {
        clearTimeout(t);
        resolve();
      }
    });
    void exited.then((code) => {
      clearTimeout(t);
      reject(new Error(`${id} exited with ${code}: ${err}`));
    });
  });
  const children = Array.from(
    { length: opts.children },
    (_, c) =>
      new SimChildDevice({
        url: `mqtt://127.0.0.1:${brokerPort}`,
        deviceId: `child-${index + 1}-${c + 1}`,
        password: deriveDeviceKey(secret, `child-${index + 1}-${c + 1}`),
        intervalMs: opts.intervalMs,
        points: { v: { kind: 'counter' } },
      }),
  );
  return { id, proc, exited, children };
}

/** Runs the fleet for `durationMs`, drains, stops everything and reports per gateway. */
export async function runFleet(opts: FleetOptions): Promise<FleetReport> {
  const started = Date.now();
  const secret = `fleet-${process.pid}-${started}`;
  const consumer = new FleetConsumer();
  const gateways: FleetGateway[] = [];
  const progress = (phase: FleetProgress['phase']): void =>
    opts.onProgress?.({
      elapsedMs: Date.now() - started,
      phase,
      acked: gateways.reduce((n, g) => n + g.children.reduce((m, c) => m + c.acked.length, 0), 0),
      delivered: consumer.ids.size,
      connected: gateways.reduce((n, g) => n + g.children.filter((c) => c.published > 0).length, 0),
    });
  const ticker = setInterval(() => progress(Date.now() - started < opts.durationMs ? 'running' : 'draining'), 1000);
  try {
    await consumer.start(opts.consumerUrl ?? opts.cloudUrls[0]!);
    for (let i = 0; i < opts.gateways; i++) gateways.push(await startGateway(opts, i, secret));
    progress('starting');
    const runStart = Date.now();
    // Children start spread over a second per gateway, as a site's devices do.
    for (const g of gateways) {
      for (const c of g.children) {
        c.start();
        await new Promise((r) => setTimeout(r, Math.floor(1000 / Math.max(1, opts.children))));
      }
    }
    await new Promise((r) => setTimeout(r, Math.max(0, opts.durationMs - (Date.now() - runStart))));
    await Promise.all(gateways.flatMap((g) => g.children.map((c) => c.stop())));
    const expected = gateways.flatMap((g) => g.children.flatMap((c) => c.acked));
    const deadline = Date.now() + (opts.drainMs ?? 60_000);
    while (Date.now() < deadline && expected.some((id) => !consumer.ids.has(id))) await new Promise((r) => setTimeout(r, 250));
    const runMs = Date.now() - runStart;
    const figures = gateways.map((g): GatewayFigures => {
      const acked = g.children.flatMap((c) => c.acked);
      const missing = acked.filter((id) => !consumer.ids.has(id)).length;
      const lags = consumer.lags.get(g.id);
      return {
        gateway: g.id,
        children: g.children.length,
        acked: acked.length,
        delivered: acked.length - missing,
        missing,
        duplicates: consumer.duplicates.get(g.id) ?? 0,
        lagMs: { p50: lags?.quantile(0.5) ?? 0, p99: lags?.quantile(0.99) ?? 0, max: lags?.max ?? 0 },
      };
    });
    const sum = (f: (g: GatewayFigures) => number): number => figures.reduce((n, g) => n + f(g), 0);
    progress('done');
    return {
      gateways: figures,
      totals: { acked: sum((g) => g.acked), delivered: sum((g) => g.delivered), missing: sum((g) => g.missing), duplicates: sum((g) => g.duplicates), readingsPerS: Math.round(sum((g) => g.delivered) / (runMs / 1000)) },
      durationMs: runMs,
    };
  } finally {
    clearInterval(ticker);
    await Promise.all(gateways.flatMap((g) => g.children.map((c) => c.kill())));
    for (const g of gateways) {
      if (g.proc.exitCode === null) g.proc.kill('SIGTERM');
    }
    await Promise.all(gateways.map((g) => g.exited));
    await consumer.stop();
  }
}
