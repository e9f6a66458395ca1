import { mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Mosquitto } from '../sim/mosquitto.js';
import { ConfiguredGateway, forwardAllConfig } from './configured-gateway.js';
import { CpuMeter, fmtInt, Scope, sleep, type Benchmark, type BenchOptions, type BenchResult } from './harness.js';
import { awaitPath, CloudCounter, LoadGenerator, type DeviceAccess } from './load.js';

const PUBLISHERS = 20;
const IN_FLIGHT = 500;
/** After the last PUBACK, how long nothing new may arrive before the missing count as lost. */
const QUIET_MS = 3_000;
const GATEWAY_ID = 'bench-gw';

/**
 * `outpost`: devices authenticate (derived keys) over plain MQTT, as shipped; `outpost-open`: the
 * same gateway letting anonymous loopback clients publish (no authentication, permissions still
 * checked); `outpost-tls`: authenticated over TLS; `bridge`: the Mosquitto baseline.
 */
type Path = 'outpost' | 'outpost-open' | 'outpost-tls' | 'bridge';

interface ScenarioResult {
  readonly path: Path;
  readonly published: number;
  readonly acked: number;
  readonly failed: number;
  readonly arrived: number;
  /** Acknowledged to the publisher but never seen by the cloud consumer. */
  readonly lost: number;
  readonly duplicates: number;
  /** First publish to the last new reading at the cloud. */
  readonly seconds: number;
  readonly msgsPerS: number;
  /** First publish to the last PUBACK: what the site broker took in. */
  readonly ackMsgsPerS: number;
  readonly reconnects: number;
  /** Percent of one core: `self` (load generator and consumer), `site` (gateway or site broker), `cloud`. */
  readonly cpu: Record<string, number>;
  readonly timedOut: boolean;
  readonly diagnosis?: string;
}

/** The Mosquitto bridge of the baseline: everything under outpost/ goes to the cloud at QoS 1. */
function bridgeConfig(cloudPort: number): string[] {
  return [
    'connection bench-bridge',
    `address 127.0.0.1:${cloudPort}`,
    'topic outpost/# out 1',
    'cleansession true',
    'try_private false',
    'bridge_protocol_version mqttv311',
    'notifications false',
  ];
}

async function runScenario(path: Path, opts: BenchOptions): Promise<ScenarioResult> {
  const scope = new Scope();
  const label = `ingest/${path}`;
  try {
    opts.progress.show(`${label}  starting`);
    const dir = scope.dir(mkdtempSync(join(tmpdir(), `outpost-bench-${path}-`)));
    const cloudDir = join(dir, 'cloud');
    const cloud = await Mosquitto.start({ dir: cloudDir });
    scope.pid(cloud.pid);
    scope.defer(() => cloud.stop());
    const counter = new CloudCounter(cloud.url, path === 'bridge' ? 'messages' : 'batches');
    scope.defer(() => counter.stop());
    await counter.start();

    let siteUrl: string;
    let sitePid: number | undefined;
    let gateway: ConfiguredGateway | undefined;
    let access: DeviceAccess = {};
    if (path !== 'bridge') {
      const gwDir = join(dir, 'gateway');
      mkdirSync(gwDir);
      // lingerMs 0: a batch that is not full would wait up to lingerMs at the end of the burst,
      // which a 1–2 s run measures instead of throughput (under load every batch is full anyway).
      const config = forwardAllConfig(gwDir, GATEWAY_ID, cloud.url, { lingerMs: 0 });
      if (path === 'outpost-open') {
        config.broker = { ...config.broker, anonymous: true, grants: [{ identities: ['anonymous'], publish: ['outpost/v1/dev/#'] }] };
        delete config.identities;
        access = { anonymous: true };
      }
      if (path === 'outpost-tls') config.broker = { ...config.broker, tls: { host: '127.0.0.1', port: 0 } };
      gateway = await ConfiguredGateway.start(gwDir, config);
      const gw = gateway;
      scope.pid(gw.pid);
      scope.defer(() => gw.stop());
      siteUrl = gateway.brokerUrl;
      if (path === 'outpost-tls') {
        if (!gateway.tlsUrl) throw new Error('the gateway did not print its mqtts listener');
        siteUrl = gateway.tlsUrl;
        access = { ca: readFileSync(join(gwDir, 'mqtt-broker.crt'), 'utf8') };
      }
      sitePid = gateway.pid;
    } else {
      const site = await Mosquitto.start({ dir: join(dir, 'site'), extra: bridgeConfig(cloud.port) });
      scope.pid(site.pid);
      scope.defer(() => site.stop());
      siteUrl = site.url;
      sitePid = site.pid;
    }
    await awaitPath(siteUrl, counter, 15_000, access);

    const load = new LoadGenerator({ url: siteUrl, publishers: PUBLISHERS, inFlight: IN_FLIGHT, messages: opts.messages, access });
    scope.defer(() => load.close());
    await load.connect();

    const cpu = new CpuMeter({ site: sitePid, cloud: cloud.pid });
    const t0 = performance.now();
    const show = (phase: string): void =>
      opts.progress.show(
        `${label}  ${fmtInt(load.acked)}/${fmtInt(opts.messages)} acked, ${fmtInt(counter.unique)} at cloud  ${((performance.now() - t0) / 1000).toFixed(1)}s${phase}`,
      );
    const ticker = setInterval(() => show(''), 200);
    scope.defer(() => clearInterval(ticker));
    load.start();

    // The clock stops at the last new reading counted, not when this loop notices it.
    let timedOut = false;
    for (;;) {
      const now = performance.now();
      // All arrived; the last PUBACKs may still be on their way back to the publishers.
      if (counter.unique >= opts.messages && load.settled) break;
      if (load.settled && now - Math.max(load.lastAckAt, counter.lastArrivalAt) > QUIET_MS) break;
      if (now - t0 > opts.timeoutMs) {
        timedOut = true;
        break;
      }
      await sleep(20);
    }
    const cpuPct = cpu.percent();
    clearInterval(ticker);
    show(timedOut ? '  TIMED OUT' : '');

    const lost = load.ackedIds.reduce((n, id) => (counter.has(id) ? n : n + 1), 0);
    const seconds = ((counter.lastArrivalAt || performance.now()) - t0) / 1000;
    let diagnosis: string | undefined;
    if ((lost > 0 || timedOut) && gateway) {
      diagnosis = `gateway status: ${JSON.stringify(await gateway.status())}; log: ${gateway.log.trim().slice(-1000)}`;
    }
    return {
      path,
      published: load.published,
      acked: load.acked,
      failed: load.failed,
      arrived: counter.unique,
      lost,
      duplicates: counter.duplicates,
      seconds,
      msgsPerS: seconds > 0 ? counter.unique / seconds : 0,
      ackMsgsPerS: load.lastAckAt > t0 ? load.acked / ((load.lastAckAt - t0) / 1000) : 0,
      reconnects: load.reconnects,
      cpu: cpuPct,
      timedOut,
      diagnosis,
    };
  } finally {
    opts.progress.clear();
    await scope.close();
  }
}

function row(r: ScenarioResult): string[] {
  const names: Record<Path, string> = {
    outpost: 'Outpost gateway (SQLite commit before PUBACK)',
    'outpost-open': 'Outpost, devices unauthenticated',
    'outpost-tls': 'Outpost, devices over TLS',
    bridge: 'Mosquitto bridge (in memory)',
  };
  const name = names[r.path];
  return [
    name,
    fmtInt(r.msgsPerS),
    r.seconds.toFixed(2),
    fmtInt(r.ackMsgsPerS),
    fmtInt(r.acked),
    fmtInt(r.arrived),
    fmtInt(r.lost),
    fmtInt(r.duplicates),
    ['self', 'site', 'cloud'].map((k) => (r.cpu[k] === undefined ? '?' : String(r.cpu[k]))).join('/'),
    r.timedOut ? 'TIMED OUT' : 'ok',
  ];
}

function figures(prefix: string, r: ScenarioResult): Record<string, number | boolean> {
  const round = (n: number, d = 0): number => Math.round(n * 10 ** d) / 10 ** d;
  return {
    [`${prefix}_msgs_per_s`]: round(r.msgsPerS),
    [`${prefix}_seconds`]: round(r.seconds, 3),
    [`${prefix}_ack_msgs_per_s`]: round(r.ackMsgsPerS),
    [`${prefix}_acked`]: r.acked,
    [`${prefix}_failed`]: r.failed,
    [`${prefix}_arrived`]: r.arrived,
    [`${prefix}_lost`]: r.lost,
    [`${prefix}_duplicates`]: r.duplicates,
    [`${prefix}_reconnects`]: r.reconnects,
    ...Object.fromEntries(Object.entries(r.cpu).map(([k, v]) => [`${prefix}_cpu_pct_${k === 'self' ? 'loadgen' : k}`, v])),
    [`${prefix}_timed_out`]: r.timedOut,
  };
}

/**
 * Child telemetry at QoS 1 into the site broker, out to a cloud Mosquitto, counted by a consumer
 * there: the Outpost gateway against the usual alternative, a Mosquitto bridge, on the same load.
 */
export const ingestBenchmark: Benchmark = {
  name: 'ingest',
  description: `${PUBLISHERS} child devices, ${IN_FLIGHT} QoS 1 messages in flight, site broker → cloud Mosquitto`,
  // Two scenarios, each with its hard timeout plus start-up, quiet period and cleanup.
  maxDurationMs: (opts) => 2 * (opts.timeoutMs + 60_000),
  async run(opts: BenchOptions): Promise<BenchResult> {
    // The baseline runs first, so any warm-up of this process (the load generator's JIT) favours
    // the baseline rather than us.
    const bridge = await runScenario('bridge', opts);
    const outpost = await runScenario('outpost', opts);
    const ratio = bridge.msgsPerS > 0 ? outpost.msgsPerS / bridge.msgsPerS : 0;
    const notes = [
      `ratio outpost/bridge: ${ratio.toFixed(2)}  (end to end, first publish to last message at the cloud consumer)`,
      'messages are ~95-byte JSON child payloads, one reading each; lost = acked to the device but never at the cloud',
      'CPU% is of one core: load = this process (publishers and cloud consumer), site = gateway or site Mosquitto',
    ];
    for (const r of [outpost, bridge]) if (r.diagnosis) notes.push(`${r.path}: ${r.diagnosis}`);
    return {
      figures: {
        messages: opts.messages,
        publishers: PUBLISHERS,
        in_flight: IN_FLIGHT,
        ...figures('outpost', outpost),
        ...figures('bridge', bridge),
        ratio: Math.round(ratio * 1000) / 1000,
      },
      table: {
        head: ['path', 'msgs/s', 'seconds', 'acked/s', 'acked', 'at cloud', 'lost', 'dups', 'CPU% load/site/cloud', 'status'],
        rows: [row(outpost), row(bridge)],
      },
      notes,
      // Bridge losses are the baseline's behaviour, reported as found; ours must be zero.
      ok: outpost.lost === 0 && !outpost.timedOut && !bridge.timedOut && outpost.failed === 0,
    };
  },
};

/**
 * What authentication and TLS cost on the ingest path: the same gateway and load with devices
 * authenticated over plain MQTT (as shipped), unauthenticated (anonymous loopback clients, the
 * permissions still checked), and authenticated over TLS, interleaved in one run.
 */
export const ingestSecurityBenchmark: Benchmark = {
  name: 'ingest-security',
  description: `${PUBLISHERS} child devices, ${IN_FLIGHT} QoS 1 messages in flight: authenticated vs unauthenticated vs TLS`,
  maxDurationMs: (opts) => 3 * (opts.timeoutMs + 60_000),
  async run(opts: BenchOptions): Promise<BenchResult> {
    const open = await runScenario('outpost-open', opts);
    const auth = await runScenario('outpost', opts);
    const tls = await runScenario('outpost-tls', opts);
    const ratio = (a: ScenarioResult): number => (open.msgsPerS > 0 ? Math.round((a.msgsPerS / open.msgsPerS) * 1000) / 1000 : 0);
    return {
      figures: {
        messages: opts.messages,
        ...figures('open', open),
        ...figures('auth', auth),
        ...figures('tls', tls),
        ratio_auth_over_open: ratio(auth),
        ratio_tls_over_open: ratio(tls),
      },
      table: {
        head: ['path', 'msgs/s', 'seconds', 'acked/s', 'acked', 'at cloud', 'lost', 'dups', 'CPU% load/site/cloud', 'status'],
        rows: [row(open), row(auth), row(tls)],
      },
      notes: [`ratio authenticated/unauthenticated: ${ratio(auth).toFixed(2)}; TLS/unauthenticated: ${ratio(tls).toFixed(2)} (aim >= 0.9)`],
      ok: [open, auth, tls].every((r) => r.lost === 0 && !r.timedOut && r.failed === 0),
    };
  },
};
