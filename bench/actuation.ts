import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import mqtt, { type MqttClient } from 'mqtt';
import type { SiteConfigInput } from '../runtime/config/schema.js';
import { Mosquitto } from '../sim/mosquitto.js';
import type { GcProfile } from '../runtime/gc-profile.js';
import { ConfiguredGateway } from './configured-gateway.js';
import { fmtInt, Scope, sleep, type Benchmark, type BenchOptions, type BenchResult } from './harness.js';
import { round } from './stats.js';
import { benchCredentials, benchIdentities } from './load.js';

const RATE = 10_000;
const SECONDS = 10;
const DEVICES = 10;
const TICK_MS = 2;
/** Seconds at full rate before measuring: JIT warm-up of every stage on both paths. */
const WARMUP_S = 3;

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
}

interface Run {
  readonly sent: number;
  readonly received: number;
  readonly latencies: number[];
}

/**
 * Publishes RATE messages/s for SECONDS from DEVICES clients to `topicOf(i)` with `payloadOf(k)`,
 * paced in TICK_MS steps, and measures, per message, the time until `decode` finds its number k
 * in a message on `outTopic`.
 */
async function drive(
  url: string,
  topicOf: (device: number) => string,
  payloadOf: (k: number) => string,
  outTopic: string,
  decode: (payload: Buffer) => number | undefined,
  progress: (s: string) => void,
): Promise<Run> {
  const warm = RATE * WARMUP_S;
  const total = warm + RATE * SECONDS;
  // Preallocated typed arrays: the measuring process must not add GC pauses of its own (a
  // growing array of boxed numbers in the old generation made its scavenges take milliseconds).
  const sentAt = new Float64Array(total);
  const latencies = new Float64Array(total - warm);
  let received = 0;
  const sub = await mqtt.connectAsync(url, { reconnectPeriod: 0, ...benchCredentials('act-panel') });
  await sub.subscribeAsync(outTopic, { qos: 0 });
  sub.on('message', (_t, payload) => {
    const k = decode(payload);
    if (k !== undefined && k >= warm && k < total && sentAt[k]! > 0 && received < latencies.length) latencies[received++] = performance.now() - sentAt[k]!;
  });
  const pubs: MqttClient[] = await Promise.all(
    Array.from({ length: DEVICES }, (_, i) => mqtt.connectAsync(url, { reconnectPeriod: 0, ...benchCredentials(`sensor-${i}`), protocolVersion: 4 })),
  );
  const perTick = (RATE * TICK_MS) / 1000;
  const t0 = performance.now();
  let k = 0;
  while (k < total) {
    const due = t0 + ((k / perTick) * TICK_MS);
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    for (let j = 0; j < perTick && k < total; j++, k++) {
      sentAt[k] = performance.now();
      pubs[k % DEVICES]!.publish(topicOf(k % DEVICES), payloadOf(k), { qos: 1 });
    }
    if (k % RATE === 0) progress(k <= warm ? `warm-up ${k / RATE}/${WARMUP_S} s` : `${(k - warm) / RATE}/${SECONDS} s`);
  }
  const deadline = performance.now() + 5000;
  while (received < total - warm && performance.now() < deadline) await sleep(50);
  await Promise.all([...pubs, sub].map((c) => c.endAsync(true)));
  return { sent: total - warm, received, latencies: Array.from(latencies.subarray(0, received).sort()) };
}

export const actuationBenchmark: Benchmark = {
  name: 'actuation',
  description: `Latency from a child reading entering the gateway to a rule's local actuation leaving it, at ${fmtInt(RATE)} msg/s; baseline: the same clients through Mosquitto alone`,
  maxDurationMs: () => 180_000,
  async run(opts: BenchOptions): Promise<BenchResult> {
    const scope = new Scope();
    try {
      const dir = scope.dir(mkdtempSync(join(tmpdir(), 'outpost-bench-act-')));
      const payloadOf = (k: number): string => JSON.stringify({ id: k, ts: Date.now(), points: { level: { value: k, quality: 'good' } } });

      // Baseline: publisher → Mosquitto → subscriber, the payload carrying k.
      const mosq = await Mosquitto.start({ dir: join(dir, 'mosquitto') });
      scope.defer(() => mosq.stop());
      const base = await drive(
        mosq.url,
        (i) => `site/sensor-${i}/level`,
        payloadOf,
        'site/#',
        (p) => (JSON.parse(p.toString()) as { id: number }).id,
        (s) => opts.progress.show(`actuation  baseline (Mosquitto): ${s}`),
      );

      // Ours: child telemetry → gateway (validated, committed, rules) → local MQTT out route, once
      // per GC profile (gateway.gc), one gateway at a time, each on a store of its own.
      const measure = async (gc: GcProfile): Promise<Run> => {
        const gwDir = mkdtempSync(join(dir, `gw-${gc}-`));
        const config: SiteConfigInput = {
          gateway: { id: 'bench-act-gw', gc },
          broker: { host: '127.0.0.1', port: 0, acceptUnknownDevices: true, grants: [{ identities: ['act-panel'], subscribe: ['act/#'] }] },
          identities: benchIdentities,
          http: { host: '127.0.0.1', port: 0 },
          rules: [
            { id: 'actuate', type: 'filter', match: { device: 'sensor-*', point: 'level' }, where: 'value >= 0', route: 'mqtt', mqtt: { topic: 'act/{device}', qos: 0, retain: false } },
          ],
          cloud: { url: 'mqtt://127.0.0.1:9' },
          storage: { path: join(gwDir, 'outpost.db'), synchronous: 'normal' },
        };
        const gw = await ConfiguredGateway.start(gwDir, config);
        try {
          return await drive(
            gw.brokerUrl,
            (i) => `outpost/v1/dev/sensor-${i}/telemetry`,
            payloadOf,
            'act/#',
            (p) => {
              const v = (JSON.parse(p.toString()) as { value?: unknown }).value;
              return typeof v === 'number' ? v : undefined;
            },
            (s) => opts.progress.show(`actuation  Outpost (gc ${gc}): ${s}`),
          );
        } finally {
          await gw.stop();
        }
      };
      const ours = await measure('low-latency');
      const compact = await measure('compact');
      opts.progress.clear();

      const pct = (r: Run, p: number): number => round(percentile(r.latencies, p), 2);
      const row = (name: string, r: Run): string[] => [
        name,
        `${fmtInt(r.received)} / ${fmtInt(r.sent)}`,
        `${pct(r, 0.5)} / ${pct(r, 0.95)} / ${pct(r, 0.99)} / ${pct(r, 0.999)} / ${round(r.latencies.at(-1) ?? NaN, 1)} ms`,
      ];
      const p99 = percentile(ours.latencies, 0.99);
      const figures = {
        rate_msgs_per_s: RATE,
        outpost_p50_ms: round(percentile(ours.latencies, 0.5), 3),
        outpost_p99_ms: round(p99, 3),
        outpost_p999_ms: round(percentile(ours.latencies, 0.999), 3),
        outpost_max_ms: round(ours.latencies.at(-1) ?? NaN, 3),
        outpost_received: ours.received,
        compact_p99_ms: round(percentile(compact.latencies, 0.99), 3),
        compact_p999_ms: round(percentile(compact.latencies, 0.999), 3),
        compact_received: compact.received,
        baseline_p50_ms: round(percentile(base.latencies, 0.5), 3),
        baseline_p99_ms: round(percentile(base.latencies, 0.99), 3),
        baseline_received: base.received,
      };
      const notes = [
        `${fmtInt(RATE)} msg/s for ${WARMUP_S} s (not measured) + ${SECONDS} s from ${DEVICES} mqtt.js clients at QoS 1, paced every ${TICK_MS} ms; latency = publish call to the rule's output arriving at a subscriber (same process clock)`,
        `Outpost: child contract → schema check → commit (group commit, synchronous=normal) → rule (JSONata where) → local broker; baseline: the same publishes through Mosquitto to a subscriber`,
        `gc low-latency: gateway.gc as a site whose rules actuate sets it; gc compact: the default (docs/benchmarks.md, actuation)`,
        `p99 ${round(p99, 2)} ms with gc low-latency (aim <= 5 ms): ${p99 <= 5 ? 'met' : 'MISSED'}; with gc compact ${pct(compact, 0.99)} ms`,
      ];
      const ok = ours.received === ours.sent && compact.received === compact.sent;
      for (const [name, r] of [['low-latency', ours], ['compact', compact]] as const) {
        if (r.received !== r.sent) notes.push(`Outpost (gc ${name}) delivered ${r.received} of ${r.sent} actuations`);
      }
      return {
        figures,
        table: {
          head: ['path', 'received / sent', 'p50 / p95 / p99 / p99.9 / max'],
          rows: [
            row('Mosquitto alone [baseline]', base),
            row('Outpost, gc low-latency: reading in → actuation out', ours),
            row('Outpost, gc compact (default): the same', compact),
          ],
        },
        notes,
        ok,
      };
    } finally {
      opts.progress.clear();
      await scope.close();
    }
  },
};
