import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseConfig } from '../runtime/config/load.js';
import { deriveDeviceKey } from '../runtime/contracts/index.js';
import { Gateway } from '../runtime/gateway.js';
import { createLogger } from '../runtime/logger.js';
import { SimCloud } from '../sim/cloud.js';
import { SimTwinChild } from '../sim/twin-child.js';
import { fmtInt, Scope, sleep, type Benchmark, type BenchOptions, type BenchResult, type Figure } from './harness.js';
import { BENCH_GROUP_SECRET } from './load.js';
import { round } from './stats.js';

const GW = 'bench-twins-gw';
const FAMILIES = ['P-3.1', 'V-2', 'M-7', 'S-1'] as const;
const DESIRED = { maxSpeed: 42, reportS: 60 } as const;

interface Outcome {
  readonly how: 'configuration' | 'per-device';
  readonly children: number;
  readonly applied: number;
  readonly messages: number;
  readonly bytes: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly allMs: number;
  readonly problem?: string | undefined;
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/**
 * One fleet of `n` children of four families, connected to a gateway with a simulated cloud; the
 * cloud then says "every child runs maxSpeed 42, reportS 60" either as one configuration (Outpost)
 * or as one desired document per device (the naive baseline). Timed from the cloud's first publish
 * to each child applying the new document (it reports at once after applying).
 */
async function scenario(how: Outcome['how'], n: number, opts: BenchOptions): Promise<Outcome> {
  const scope = new Scope();
  try {
    const cloud = await SimCloud.start();
    scope.defer(() => cloud.stop());
    const dir = scope.dir(mkdtempSync(join(tmpdir(), 'outpost-bench-twins-')));
    const config = parseConfig({
      gateway: { id: GW },
      broker: { host: '127.0.0.1', port: 0, acceptUnknownDevices: true, limits: { maxConnectionsPerAddress: n + 100, connectRate: { perSecond: 2000, burst: 4000 } } },
      identities: { groups: [{ name: 'bench', devices: '*', secret: BENCH_GROUP_SECRET }] },
      http: { host: '127.0.0.1', port: 0 },
      streams: [{ name: 'telemetry' }, { name: 'twins', priority: 1 }],
      cloud: { url: cloud.url, lingerMs: 200 },
      storage: { path: join(dir, 'o.db') },
    });
    const gateway = await Gateway.start(config, { log: createLogger({ level: 'silent' }) });
    scope.defer(() => gateway.stop());
    const url = `mqtt://127.0.0.1:${gateway.ports.broker}`;
    let t0 = 0;
    const appliedAt = new Map<string, number>();
    const children = Array.from({ length: n }, (_, i) => {
      const id = `c-${String(i).padStart(5, '0')}`;
      return new SimTwinChild({
        url,
        deviceId: id,
        password: deriveDeviceKey(BENCH_GROUP_SECRET, id),
        attributes: { model: FAMILIES[i % 4]!, firmware: '1.0.0' },
        onApply: (_v, doc) => {
          if (t0 > 0 && doc.maxSpeed === DESIRED.maxSpeed && !appliedAt.has(id)) appliedAt.set(id, performance.now() - t0);
        },
      });
    });
    scope.defer(() => Promise.all(children.map((c) => c.kill())).then(() => undefined));
    for (let i = 0; i < n; i += 250) {
      opts.progress.show(`twins ${how}: connecting children ${i}/${n}`);
      await Promise.all(children.slice(i, i + 250).map((c) => c.start()));
    }
    const deadline = Date.now() + opts.timeoutMs;
    while (gateway.status().devices.count < n + 1) {
      if (Date.now() > deadline) throw new Error(`only ${gateway.status().devices.count - 1} of ${n} children in the inventory`);
      await sleep(100);
    }
    // The initial records (inventory) are through before timing starts.
    while (gateway.status().devices.waitingRecords > 0 || gateway.status().outbox.depth > 0) {
      if (Date.now() > deadline) break;
      await sleep(100);
    }
    const before = { ...cloud.twins.sent };
    t0 = performance.now();
    if (how === 'configuration') {
      await cloud.twins.configure(GW, 'all-children', { version: 1, target: 'protocol = "mqtt"', desired: { ...DESIRED } });
    } else {
      for (const c of children) await cloud.twins.edit(GW, c.id, { ...DESIRED });
    }
    while (appliedAt.size < n && Date.now() < deadline) {
      opts.progress.show(`twins ${how}: ${appliedAt.size}/${n} children applied`);
      await sleep(50);
    }
    opts.progress.clear();
    const times = [...appliedAt.values()].sort((a, b) => a - b);
    return {
      how,
      children: n,
      applied: appliedAt.size,
      messages: cloud.twins.sent.messages - before.messages,
      bytes: cloud.twins.sent.bytes - before.bytes,
      p50Ms: percentile(times, 50),
      p99Ms: percentile(times, 99),
      allMs: times.at(-1) ?? 0,
      problem: appliedAt.size < n ? `only ${appliedAt.size} of ${n} children applied it within the timeout` : undefined,
    };
  } finally {
    await scope.close();
  }
}

/**
 * `twins`: one configuration for a whole fleet against the naive approach (a desired document per
 * device sent by the cloud), on the same fleet in the same run: cloud messages and bytes, and the
 * time until every child applied it.
 */
export function twinsBenchmark(children: number): Benchmark {
  return {
    name: 'twins',
    description: `one configuration vs ${children} per-device desired documents from the cloud, to ${children} children`,
    maxDurationMs: (opts) => 2 * opts.timeoutMs + 120_000,
    async run(opts: BenchOptions): Promise<BenchResult> {
      const ours = await scenario('configuration', children, opts);
      const base = await scenario('per-device', children, opts);
      const messages = ours.messages / base.messages;
      const bytes = ours.bytes / base.bytes;
      const figures: Record<string, Figure> = { children };
      for (const o of [ours, base]) {
        const p = o.how === 'configuration' ? 'configuration' : 'per_device';
        Object.assign(figures, {
          [`${p}_messages`]: o.messages,
          [`${p}_bytes`]: o.bytes,
          [`${p}_applied`]: o.applied,
          [`${p}_p50_ms`]: round(o.p50Ms),
          [`${p}_p99_ms`]: round(o.p99Ms),
          [`${p}_all_ms`]: round(o.allMs),
        });
      }
      Object.assign(figures, { messages_ratio: round(messages, 5), bytes_ratio: round(bytes, 5), p99_ratio: round(ours.p99Ms / base.p99Ms, 3) });
      const notes = [
        `cloud messages: configuration / per-device = ${ours.messages} / ${base.messages} = ${messages.toFixed(5)} (aim <= 1/N = ${(1 / children).toFixed(5)}) ${messages <= 1 / children ? 'met' : 'MISSED'}`,
        `cloud bytes: ${fmtInt(ours.bytes)} / ${fmtInt(base.bytes)} = ${bytes.toFixed(5)} (aim <= 0.01) ${bytes <= 0.01 ? 'met' : 'MISSED'}`,
        `time to apply, from the cloud's first publish to each child applying the document (it reports at once): p99 ${round(ours.p99Ms)} ms vs ${round(base.p99Ms)} ms (ratio ${(ours.p99Ms / base.p99Ms).toFixed(3)})`,
        ...[ours, base].flatMap((o) => (o.problem ? [`${o.how}: ${o.problem}`] : [])),
      ];
      return {
        figures,
        table: {
          head: ['how', 'children', 'applied', 'cloud msgs', 'cloud bytes', 'p50 ms', 'p99 ms', 'all ms'],
          rows: [ours, base].map((o) => [o.how, fmtInt(o.children), fmtInt(o.applied), fmtInt(o.messages), fmtInt(o.bytes), fmtInt(o.p50Ms), fmtInt(o.p99Ms), fmtInt(o.allMs)]),
        },
        notes,
        ok: ours.applied === children && base.applied === children,
      };
    },
  };
}
