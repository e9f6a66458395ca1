import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { configSchema, type SiteConfigInput } from '../runtime/config/schema.js';
import { LinkProxy } from '../sim/link-proxy.js';
import { Mosquitto } from '../sim/mosquitto.js';
import { ConfiguredGateway } from './configured-gateway.js';
import { CpuMeter, fmtInt, Scope, sleep, type Benchmark, type BenchOptions, type BenchResult, type Figure } from './harness.js';
import { benchIdentities, awaitPath, CloudCounter, LoadGenerator } from './load.js';
import { round } from './stats.js';

const PUBLISHERS = 20;
const IN_FLIGHT = 500;
const GATEWAY_ID = 'bench-drain-gw';
/** Nothing new at the cloud for this long after the drain started arriving: the rest is lost. */
const QUIET_MS = 5_000;

/** The uplink settings the defaults row runs with, read from the schema so this text cannot drift. */
const DEFAULT_CLOUD = configSchema.parse({ gateway: { id: 'x' }, cloud: { url: 'mqtt://x' }, storage: { path: 'x' } }).cloud;

interface Variant {
  readonly label: string;
  /** Uplink settings over the defaults; none for the first row. */
  readonly cloud: { readonly batchSize?: number; readonly maxInFlight?: number };
}

const VARIANTS: readonly Variant[] = [
  { label: `defaults (batch ${DEFAULT_CLOUD.batchSize}, ${DEFAULT_CLOUD.maxInFlight} in flight)`, cloud: {} },
  { label: 'batch 2000, 32 in flight', cloud: { batchSize: 2000, maxInFlight: 32 } },
];

interface Outcome {
  readonly variant: Variant;
  readonly acked: number;
  readonly failed: number;
  /** Rows in the outbox when the link came back (status API): what the drain has to move. */
  readonly backlog: number | undefined;
  readonly ingestPerS: number;
  /** Link restored → the gateway's uplink connected through the proxy again (its reconnect backoff). */
  readonly reconnectWaitS: number;
  /** Gateway reconnected → last reading at the cloud. */
  readonly drainS: number;
  readonly drainPerS: number;
  /** Link restored → last reading at the cloud: the reconnect wait included. */
  readonly drainFromRestorePerS: number;
  readonly arrived: number;
  readonly lost: number;
  readonly duplicates: number;
  readonly depthAfter: number | undefined;
  readonly cpuIngest: Record<string, number>;
  readonly cpuDrain: Record<string, number>;
  readonly timedOut: boolean;
  readonly diagnosis?: string;
}

async function runVariant(variant: Variant, readings: number, opts: BenchOptions): Promise<Outcome> {
  const scope = new Scope();
  const label = `drain/${variant.label}`;
  try {
    opts.progress.show(`${label}  starting`);
    const dir = scope.dir(mkdtempSync(join(tmpdir(), 'outpost-bench-drain-')));
    const cloud = await Mosquitto.start({ dir: join(dir, 'cloud') });
    scope.pid(cloud.pid);
    scope.defer(() => cloud.stop());
    const counter = new CloudCounter(cloud.url, 'batches');
    scope.defer(() => counter.stop());
    await counter.start();
    const link = await LinkProxy.start({ port: cloud.port });
    scope.defer(() => link.close());

    const gwDir = join(dir, 'gateway');
    mkdirSync(gwDir);
    const config: SiteConfigInput = {
      gateway: { id: GATEWAY_ID },
      broker: { host: '127.0.0.1', port: 0, acceptUnknownDevices: true },
      identities: benchIdentities,
      http: { host: '127.0.0.1', port: 0 },
      rules: [{ id: 'all-to-cloud', type: 'filter', match: { device: '*', point: '*' } }],
      cloud: { url: link.url, ...variant.cloud },
      storage: { path: join(gwDir, 'outpost.db'), synchronous: 'normal' },
    };
    const gateway = await ConfiguredGateway.start(gwDir, config);
    scope.pid(gateway.pid);
    scope.defer(() => gateway.stop());
    await awaitPath(gateway.brokerUrl, counter, 15_000);

    // The outage: the proxy drops the uplink's connection and refuses new ones.
    link.down();
    const load = new LoadGenerator({ url: gateway.brokerUrl, publishers: PUBLISHERS, inFlight: IN_FLIGHT, messages: readings });
    scope.defer(() => load.close());
    await load.connect();

    const cpuIngest = new CpuMeter({ gateway: gateway.pid, cloud: cloud.pid });
    const t0 = performance.now();
    const ticker = setInterval(() => opts.progress.show(`${label}  link down, ingest ${fmtInt(load.acked)}/${fmtInt(readings)} acked`), 200);
    scope.defer(() => clearInterval(ticker));
    load.start();
    let timedOut = false;
    while (!load.settled) {
      if (performance.now() - t0 > opts.timeoutMs) {
        timedOut = true;
        break;
      }
      await sleep(5);
    }
    const ingestS = (load.lastAckAt - t0) / 1000;
    const cpuIngestPct = cpuIngest.percent();
    const backlog = await gateway.outboxDepth();

    // The drain: from the link coming back until the cloud consumer has every acknowledged reading.
    const connectionsBefore = link.connections;
    const tRestore = performance.now();
    let tConnect: number | undefined;
    // Started when the uplink is back, so the idle reconnect wait does not dilute it.
    let cpuDrain: CpuMeter | undefined;
    link.restore();
    clearInterval(ticker);
    const drainTicker = setInterval(
      () =>
        opts.progress.show(
          `${label}  link up ${((performance.now() - tRestore) / 1000).toFixed(1)}s, ${tConnect === undefined ? 'uplink reconnecting' : 'draining'}, ${fmtInt(counter.unique)}/${fmtInt(load.acked)} at cloud`,
        ),
      200,
    );
    scope.defer(() => clearInterval(drainTicker));
    while (!timedOut && counter.unique < load.acked) {
      const now = performance.now();
      // Polled every millisecond: precise enough against drains that take hundreds of ms.
      if (tConnect === undefined && link.connections > connectionsBefore) {
        tConnect = now;
        cpuDrain = new CpuMeter({ gateway: gateway.pid, cloud: cloud.pid });
      }
      if (now - tRestore > opts.timeoutMs) timedOut = true;
      else if (tConnect !== undefined && counter.unique > 0 && now - counter.lastArrivalAt > QUIET_MS) break;
      await sleep(1);
    }
    clearInterval(drainTicker);
    const cpuDrainPct = cpuDrain?.percent() ?? {};
    const tEnd = counter.lastArrivalAt > tRestore ? counter.lastArrivalAt : performance.now();
    const connectAt = tConnect ?? tEnd;
    const lost = load.ackedIds.reduce((n, id) => (counter.has(id) ? n : n + 1), 0);
    // The last batches' PUBACKs may still be on their way; give the delete a moment.
    await sleep(200);
    const depthAfter = await gateway.outboxDepth();
    let diagnosis: string | undefined;
    if (lost > 0 || timedOut) diagnosis = `gateway status: ${JSON.stringify(await gateway.status())}; log: ${gateway.log.trim().slice(-1000)}`;
    return {
      variant,
      acked: load.acked,
      failed: load.failed,
      backlog,
      ingestPerS: ingestS > 0 ? load.acked / ingestS : 0,
      reconnectWaitS: (connectAt - tRestore) / 1000,
      drainS: (tEnd - connectAt) / 1000,
      drainPerS: tEnd > connectAt ? counter.unique / ((tEnd - connectAt) / 1000) : 0,
      drainFromRestorePerS: tEnd > tRestore ? counter.unique / ((tEnd - tRestore) / 1000) : 0,
      arrived: counter.unique,
      lost,
      duplicates: counter.duplicates,
      depthAfter,
      cpuIngest: cpuIngestPct,
      cpuDrain: cpuDrainPct,
      timedOut,
      diagnosis,
    };
  } finally {
    opts.progress.clear();
    await scope.close();
  }
}

/** Percent of one core: gateway / this process (load generator, link proxy, consumer) / cloud Mosquitto. */
function cpuText(c: Record<string, number>): string {
  return `${c.gateway ?? '?'}/${c.self ?? '?'}/${c.cloud ?? '?'}`;
}

export function drainBenchmark(readings: number): Benchmark {
  return {
    name: 'drain',
    description: `${fmtInt(readings)} readings ingested with the cloud link down, then drained after it comes back`,
    // Per variant: ingest and drain, each with its hard timeout, plus start-up and cleanup.
    maxDurationMs: (opts) => VARIANTS.length * (2 * opts.timeoutMs + 60_000),
    async run(opts: BenchOptions): Promise<BenchResult> {
      const outcomes: Outcome[] = [];
      for (const v of VARIANTS) outcomes.push(await runVariant(v, readings, opts));
      const figures: Record<string, Figure> = {
        readings,
        publishers: PUBLISHERS,
        in_flight: IN_FLIGHT,
        gateway: `separate process (outpost start), SQLite synchronous=normal, uplink ${DEFAULT_CLOUD.encoding} ${DEFAULT_CLOUD.compression}`,
      };
      const notes: string[] = [];
      outcomes.forEach((o, i) => {
        const p = i === 0 ? 'default' : 'big';
        const ratio = o.ingestPerS > 0 ? o.drainPerS / o.ingestPerS : 0;
        Object.assign(figures, {
          [`${p}_batch_size`]: o.variant.cloud.batchSize ?? DEFAULT_CLOUD.batchSize,
          [`${p}_max_in_flight`]: o.variant.cloud.maxInFlight ?? DEFAULT_CLOUD.maxInFlight,
          [`${p}_ingest_per_s`]: Math.round(o.ingestPerS),
          [`${p}_drain_per_s`]: Math.round(o.drainPerS),
          [`${p}_drain_from_restore_per_s`]: Math.round(o.drainFromRestorePerS),
          [`${p}_reconnect_wait_s`]: round(o.reconnectWaitS, 3),
          [`${p}_drain_s`]: round(o.drainS, 3),
          [`${p}_ratio`]: round(ratio, 3),
          [`${p}_ratio_from_restore`]: round(o.ingestPerS > 0 ? o.drainFromRestorePerS / o.ingestPerS : 0, 3),
          [`${p}_acked`]: o.acked,
          [`${p}_backlog`]: o.backlog ?? -1,
          [`${p}_lost`]: o.lost,
          [`${p}_duplicates`]: o.duplicates,
          [`${p}_outbox_depth_after`]: o.depthAfter ?? -1,
          [`${p}_cpu_pct_gateway_ingest`]: o.cpuIngest.gateway ?? -1,
          [`${p}_cpu_pct_bench_ingest`]: o.cpuIngest.self ?? -1,
          [`${p}_cpu_pct_gateway_drain`]: o.cpuDrain.gateway ?? -1,
          [`${p}_cpu_pct_bench_drain`]: o.cpuDrain.self ?? -1,
          [`${p}_cpu_pct_cloud_drain`]: o.cpuDrain.cloud ?? -1,
          [`${p}_timed_out`]: o.timedOut,
        });
        notes.push(`${o.variant.label}: ratio drain/ingest ${ratio.toFixed(2)} (aim >= 5) ${ratio >= 5 ? 'met' : 'MISSED'}`);
        if (o.diagnosis) notes.push(`${o.variant.label}: ${o.diagnosis}`);
      });
      notes.push(
        'ingest = acked readings / first publish to last PUBACK (PUBACK follows the SQLite commit); drain = readings / uplink reconnect to last reading at the cloud',
        '"from restore" includes the uplink\'s reconnect backoff (default 500 ms doubling to 30 s, full jitter) after the link came back',
        'gateway: its own process; load generator, link proxy and cloud consumer share this process; cloud broker: Mosquitto',
        'CPU% of one core: gateway / this process / cloud Mosquitto; drain CPU counted from the uplink reconnect on',
      );
      return {
        figures,
        table: {
          head: ['uplink', 'ingest/s', 'drain/s', 'ratio', 'reconnect s', 'drain s', 'from restore/s', 'lost', 'dups', 'CPU% ingest', 'CPU% drain', 'status'],
          rows: outcomes.map((o) => [
            o.variant.label,
            fmtInt(o.ingestPerS),
            fmtInt(o.drainPerS),
            (o.ingestPerS > 0 ? o.drainPerS / o.ingestPerS : 0).toFixed(2),
            o.reconnectWaitS.toFixed(2),
            o.drainS.toFixed(2),
            fmtInt(o.drainFromRestorePerS),
            fmtInt(o.lost),
            fmtInt(o.duplicates),
            cpuText(o.cpuIngest),
            cpuText(o.cpuDrain),
            o.timedOut ? 'TIMED OUT' : 'ok',
          ]),
        },
        notes,
        ok: outcomes.every((o) => o.lost === 0 && !o.timedOut && o.failed === 0),
      };
    },
  };
}
