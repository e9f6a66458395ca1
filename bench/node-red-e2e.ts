import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import mqtt, { type MqttClient } from 'mqtt';
import type { SiteConfigInput } from '../runtime/config/schema.js';
import { decodeUplinkPayload, makeEnvelope, ManualClock, type RuleOutput } from '../runtime/contracts/index.js';
import { CountingSequence } from '../runtime/sequence.js';
import { Rules } from '../rules/engine.js';
import { Mosquitto } from '../sim/mosquitto.js';
import { ConfiguredGateway, forwardAllConfig } from './configured-gateway.js';
import { CpuMeter, fmtInt, Scope, sleep, type Benchmark, type BenchOptions, type BenchResult, type Figure } from './harness.js';
import { awaitPath, LoadGenerator } from './load.js';
import { RULES } from './node-red-flow.js';
import { startNodeRed, type NodeRedProcess } from './node-red-process.js';
import { round } from './stats.js';

/** The ingest load: 20 children, 500 QoS 1 messages in flight across them, a closed loop. */
const PUBLISHERS = 20;
const IN_FLIGHT = 500;
const POINTS = 5;
/** Event time between two consecutive readings of the whole load (node-red-flow's input: 4 ms). */
const STEP_MS = 4;
/** After the last PUBACK, how long nothing new may arrive at the cloud before the missing count as lost. */
const QUIET_MS = 5_000;
const GATEWAY_ID = 'e2e-gw';
/** The probe passes the filter (value > 60), so it comes out of both paths. */
const PROBE = '{"id":"probe","points":{"p0":99}}';

/**
 * What the children publish: message `n` of child `i` is reading `k = n × 20 + i` of one sequence,
 * one point per message (`p{n mod 5}`), values crossing 60 as in node-red-flow, event times 4 ms
 * apart from a minute boundary, all in the past. Each group (device and point) sees its readings
 * in order on both paths, as one MQTT connection keeps them, so both give the same windows.
 */
class E2eLoad {
  /** Reading ids of the messages whose reading passes the filter (value > 60). */
  readonly passing = new Set<string>();

  constructor(
    readonly messages: number,
    /** Event time of reading 0: a minute boundary, early enough that the last reading is not in the future. */
    readonly t0: number,
  ) {
    for (let i = 0; i < PUBLISHERS; i++) for (let n = 0; n < this.share(i); n++) if (this.value(n * PUBLISHERS + i) > 60) this.passing.add(`bench-${i}:${n}:${this.point(n)}`);
  }

  static startingNow(messages: number): E2eLoad {
    const t0 = Math.floor((Date.now() - messages * STEP_MS - 120_000) / 60_000) * 60_000;
    return new E2eLoad(messages, t0);
  }

  /** Messages of child `i`, as LoadGenerator shares them. */
  share(i: number): number {
    return Math.floor(this.messages / PUBLISHERS) + (i < this.messages % PUBLISHERS ? 1 : 0);
  }

  point(n: number): string {
    return `p${n % POINTS}`;
  }

  value(k: number): number {
    return Math.round(50 + 40 * Math.sin(k / 37));
  }

  /** The child contract (docs/topics.md): `{id, ts, points: {name: {value, quality}}}`. */
  message(i: number, n: number): { payload: string; point: string } {
    const k = n * PUBLISHERS + i;
    const point = this.point(n);
    return { payload: `{"id":${n},"ts":${this.t0 + k * STEP_MS},"points":{"${point}":{"value":${this.value(k)},"quality":"good"}}}`, point };
  }

  /**
   * What both paths must deliver when every message is taken: the readings that pass, and the
   * windows a later reading of their group closes, with the sum of their counts. Computed by
   * Outpost's engine over the readings in order of k, which keeps every group's order.
   */
  expected(): Outputs {
    const clock = new ManualClock();
    const rules = new Rules(RULES, clock, new CountingSequence('x:'));
    const out: Outputs = { passed: 0, windows: 0, aggregates: 0, windowCountSum: 0 };
    const emit = (o: RuleOutput): void => {
      const e = o.envelope;
      if (!e) {
        out.passed += o.batch?.length ?? 0;
        return;
      }
      if (e.rule !== 'win') {
        out.passed++;
        return;
      }
      out.aggregates++;
      if (e.point.endsWith('.count')) {
        out.windows++;
        out.windowCountSum += Number(e.value);
      }
    };
    for (let n = 0; n < this.share(0); n++) {
      for (let i = 0; i < PUBLISHERS && n < this.share(i); i++) {
        const k = n * PUBLISHERS + i;
        clock.t = this.t0 + k * STEP_MS;
        const device = `bench-${i}`;
        const point = this.point(n);
        rules.process(makeEnvelope({ id: `${device}:${n}:${point}`, device, point, value: this.value(k), quality: 'good', ts: clock.t, seq: k + 1 }), emit);
      }
    }
    return out;
  }
}

interface Outputs {
  /** Readings that passed the filter. */
  passed: number;
  /** Windows closed (one per window, whatever the number of aggregates). */
  windows: number;
  /** Aggregate values: 3 per window (avg, max, count). */
  aggregates: number;
  /** Sum of the windows' `count`: the windows hold the same readings, not only as many. */
  windowCountSum: number;
}

/**
 * The same logic as the gateway's rules, as a Node-RED function node over the child contract:
 * pass value > 60 on, one message per reading with its id (`{device}:{msgId}:{point}`, as the
 * gateway derives it); per device and point, a 60 s event-time tumbling window of those values,
 * closed when a reading starts the next, as one message with avg, max and count.
 */
const FUNCTION = `
const device = msg.topic.split('/')[3];
const m = msg.payload;
const ts = typeof m.ts === 'number' ? m.ts : Date.now();
const hot = [];
const closed = [];
for (const point of Object.keys(m.points)) {
  const p = m.points[point];
  const v = p !== null && typeof p === 'object' ? p.value : p;
  if (!(v > 60)) continue;
  hot.push({ topic: 'nr/v1/hot/' + device, payload: { id: device + ':' + m.id + ':' + point, device, point, value: v, ts } });
  const key = device + ':' + point;
  const start = ts - (ts % 60000);
  const w = context.get(key);
  if (w && w.start !== start) closed.push({ topic: 'nr/v1/win/' + device, payload: { id: 'win:' + key + ':' + w.start, avg: w.sum / w.n, max: w.max, count: w.n } });
  const next = w && w.start === start ? w : { start, sum: 0, n: 0, max: -Infinity };
  next.sum += v; next.n++; if (v > next.max) next.max = v;
  context.set(key, next);
}
return [hot, closed];
`;

/** mqtt in (site Mosquitto, QoS 1, JSON) → function → mqtt out (cloud Mosquitto, QoS 1, as the gateway's uplink). */
function nodeRedFlows(sitePort: number, cloudPort: number): object[] {
  const broker = (id: string, port: number): object => ({ id, type: 'mqtt-broker', broker: '127.0.0.1', port: String(port), clientid: `nr-e2e-${id}`, protocolVersion: '4', keepalive: '60', cleansession: true, autoConnect: true });
  return [
    { id: 'tab', type: 'tab', label: 'e2e' },
    broker('site', sitePort),
    broker('cloud', cloudPort),
    { id: 'in', z: 'tab', type: 'mqtt in', topic: 'outpost/v1/dev/+/telemetry', qos: '1', datatype: 'json', broker: 'site', nl: false, rap: false, inputs: 0, wires: [['fn']] },
    { id: 'fn', z: 'tab', type: 'function', func: FUNCTION, outputs: 2, wires: [['out'], ['out']] },
    { id: 'out', z: 'tab', type: 'mqtt out', topic: '', qos: '1', retain: 'false', broker: 'cloud', wires: [] },
  ];
}

/**
 * The cloud consumer: counts unique passed readings and windows, from the gateway's uplink batches
 * (`uplink`: one reading per aggregate, id `win:{device}:{point}:{aggregate}:{start}`) or from
 * Node-RED's messages (`node-red`: one per reading or window). Readings of the probe device are
 * not counted. Every new reading or window stamps the arrival time.
 */
class OutputCounter implements Outputs {
  private client: MqttClient | undefined;
  private readonly passedIds = new Set<string>();
  private readonly windowIds = new Set<string>();
  private readonly aggregateIds = new Set<string>();
  windowCountSum = 0;
  received = 0;
  rejected = 0;
  probeSeen = false;
  lastArrivalAt = 0;

  constructor(
    private readonly url: string,
    private readonly mode: 'uplink' | 'node-red',
  ) {}

  get passed(): number {
    return this.passedIds.size;
  }

  get windows(): number {
    return this.windowIds.size;
  }

  get aggregates(): number {
    return this.aggregateIds.size;
  }

  get duplicates(): number {
    return this.received - this.passedIds.size - this.aggregateIds.size;
  }

  has(id: string): boolean {
    return this.passedIds.has(id);
  }

  /** Readings that arrived but are not in `expected`: the path passed something the rules should not have. */
  unexpected(expected: ReadonlySet<string>): string[] {
    return [...this.passedIds].filter((id) => !expected.has(id));
  }

  async start(): Promise<void> {
    const client = await mqtt.connectAsync(this.url, { clientId: `bench-e2e-consumer-${process.pid}`, reconnectPeriod: 0 });
    this.client = client;
    client.on('message', (_topic, buf) => {
      try {
        if (this.mode === 'uplink') this.onBatch(buf);
        else this.onNodeRed(buf);
      } catch {
        this.rejected++;
      }
    });
    await client.subscribeAsync(this.mode === 'uplink' ? 'outpost/v1/gw/+/telemetry' : 'nr/v1/#', { qos: 1 });
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client) await client.endAsync(true);
  }

  private onBatch(buf: Buffer): void {
    const batch = decodeUplinkPayload(buf) as { readings?: { id?: unknown; point?: unknown; value?: unknown }[] };
    for (const r of batch.readings ?? []) {
      if (typeof r.id !== 'string' || typeof r.point !== 'string') {
        this.rejected++;
        continue;
      }
      // The gateway's own records on the same uplink ($inventory, $twin/reported): no rule output.
      if (r.point.startsWith('$')) continue;
      if (!r.id.startsWith('win:')) {
        this.reading(r.id);
        continue;
      }
      // win:{device}:{point}:{aggregate}:{start}
      const [, device, point, aggregate, start] = r.id.split(':');
      if (!device?.startsWith('bench-')) continue;
      this.received++;
      if (this.aggregateIds.has(r.id)) continue;
      this.aggregateIds.add(r.id);
      this.window(`win:${device}:${point}:${start}`, aggregate === 'count' ? Number(r.value) : 0);
    }
  }

  private onNodeRed(buf: Buffer): void {
    const m = JSON.parse(buf.toString('utf8')) as { id?: unknown; count?: unknown };
    if (typeof m.id !== 'string') {
      this.rejected++;
      return;
    }
    if (!m.id.startsWith('win:')) {
      this.reading(m.id);
      return;
    }
    if (!m.id.startsWith('win:bench-')) return;
    // One message carries the three aggregates.
    this.received += 3;
    if (this.windowIds.has(m.id)) return;
    for (const a of ['avg', 'max', 'count']) this.aggregateIds.add(`${m.id}:${a}`);
    this.window(m.id, Number(m.count));
  }

  private reading(id: string): void {
    if (!id.startsWith('bench-')) {
      if (id.startsWith('probe:')) this.probeSeen = true;
      return;
    }
    this.received++;
    if (this.passedIds.has(id)) return;
    this.passedIds.add(id);
    this.lastArrivalAt = performance.now();
  }

  private window(key: string, count: number): void {
    this.windowCountSum += count;
    if (this.windowIds.has(key)) return;
    this.windowIds.add(key);
    this.lastArrivalAt = performance.now();
  }
}

type Path = 'outpost' | 'node-red';

interface ScenarioResult {
  readonly path: Path;
  readonly published: number;
  readonly acked: number;
  readonly failed: number;
  readonly outputs: Outputs;
  /** Passing readings acknowledged to their child (by the gateway, or by the site Mosquitto) that never reached the cloud. */
  readonly lost: number;
  /** Windows expected when every message was taken, not seen at the cloud. */
  readonly windowsMissing: number;
  readonly duplicates: number;
  /** First publish to the last new output at the cloud. */
  readonly seconds: number;
  /** Readings taken in (acknowledged) per second of that time. */
  readonly readingsPerS: number;
  readonly reconnects: number;
  /** Percent of one core per process: `self` (children and consumer), `site`, `node_red`, `cloud`. */
  readonly cpu: Record<string, number>;
  /**
   * CPU time of the site side (the gateway; the site Mosquitto and Node-RED) per reading taken, in
   * µs: what the path costs, which other work on the machine changes far less than the rate.
   */
  readonly pathCpuUs: number;
  readonly timedOut: boolean;
  readonly diagnosis?: string;
}

async function runScenario(path: Path, load: E2eLoad, expected: Outputs, opts: BenchOptions): Promise<ScenarioResult> {
  const scope = new Scope();
  const label = `node-red-e2e/${path}`;
  try {
    opts.progress.show(`${label}  starting`);
    const dir = scope.dir(mkdtempSync(join(tmpdir(), `outpost-bench-e2e-${path}-`)));
    const cloud = await Mosquitto.start({ dir: join(dir, 'cloud') });
    scope.pid(cloud.pid);
    scope.defer(() => cloud.stop());
    const counter = new OutputCounter(cloud.url, path === 'outpost' ? 'uplink' : 'node-red');
    scope.defer(() => counter.stop());
    await counter.start();

    let siteUrl: string;
    let pids: Record<string, number | undefined>;
    let gateway: ConfiguredGateway | undefined;
    let nodeRed: NodeRedProcess | undefined;
    if (path === 'outpost') {
      const gwDir = join(dir, 'gateway');
      mkdirSync(gwDir);
      // lingerMs 0 as in ingest: a last batch that is not full would otherwise wait up to 1 s.
      const config = forwardAllConfig(gwDir, GATEWAY_ID, cloud.url, { lingerMs: 0 });
      // The engine's spec type has readonly arrays; the gateway validates the config when it starts.
      config.rules = RULES as SiteConfigInput['rules'];
      gateway = await ConfiguredGateway.start(gwDir, config);
      const gw = gateway;
      scope.pid(gw.pid);
      scope.defer(() => gw.stop());
      siteUrl = gw.brokerUrl;
      pids = { site: gw.pid, cloud: cloud.pid };
    } else {
      const site = await Mosquitto.start({ dir: join(dir, 'site') });
      scope.pid(site.pid);
      scope.defer(() => site.stop());
      opts.progress.show(`${label}  starting Node-RED`);
      nodeRed = await startNodeRed(scope, dir, nodeRedFlows(site.port, cloud.port));
      siteUrl = site.url;
      pids = { site: site.pid, node_red: nodeRed.pid, cloud: cloud.pid };
    }
    // Node-RED takes a few seconds to load its nodes and start the flow.
    await awaitPath(siteUrl, counter, 60_000, {}, PROBE);

    const children = new LoadGenerator({ url: siteUrl, publishers: PUBLISHERS, inFlight: IN_FLIGHT, messages: load.messages, message: (i, n) => load.message(i, n) });
    scope.defer(() => children.close());
    await children.connect();

    const cpu = new CpuMeter(pids);
    const t0 = performance.now();
    const show = (phase: string): void =>
      opts.progress.show(
        `${label}  ${fmtInt(children.acked)}/${fmtInt(load.messages)} acked, ${fmtInt(counter.passed)}/${fmtInt(expected.passed)} passed + ${fmtInt(counter.windows)}/${fmtInt(expected.windows)} windows at cloud  ${((performance.now() - t0) / 1000).toFixed(1)}s${phase}`,
      );
    const ticker = setInterval(() => show(''), 200);
    scope.defer(() => clearInterval(ticker));
    children.start();

    let timedOut = false;
    for (;;) {
      const now = performance.now();
      if (children.settled && counter.passed >= expected.passed && counter.windows >= expected.windows) break;
      if (children.settled && now - Math.max(children.lastAckAt, counter.lastArrivalAt) > QUIET_MS) break;
      if (now - t0 > opts.timeoutMs) {
        timedOut = true;
        break;
      }
      await sleep(20);
    }
    const cpuPct = cpu.percent();
    const cpuS = cpu.seconds();
    clearInterval(ticker);
    show(timedOut ? '  TIMED OUT' : '');

    const lost = children.ackedIds.reduce((n, id) => (load.passing.has(id) && !counter.has(id) ? n + 1 : n), 0);
    const seconds = ((counter.lastArrivalAt || performance.now()) - t0) / 1000;
    const unexpected = counter.unexpected(load.passing);
    const problems: string[] = [];
    if (unexpected.length > 0) problems.push(`${unexpected.length} readings at the cloud that should not have passed, e.g. ${unexpected.slice(0, 5).join(', ')}`);
    if (lost > 0 || timedOut) {
      if (gateway) problems.push(`gateway status: ${JSON.stringify(await gateway.status())}; log: ${gateway.log.trim().slice(-1000)}`);
      else if (nodeRed) problems.push(`Node-RED log: ${nodeRed.log().trim().slice(-1000)}`);
    }
    const diagnosis = problems.length > 0 ? problems.join('; ') : undefined;
    return {
      path,
      published: children.published,
      acked: children.acked,
      failed: children.failed,
      outputs: { passed: counter.passed, windows: counter.windows, aggregates: counter.aggregates, windowCountSum: counter.windowCountSum },
      lost,
      windowsMissing: Math.max(0, expected.windows - counter.windows),
      duplicates: counter.duplicates,
      seconds,
      readingsPerS: seconds > 0 ? children.acked / seconds : 0,
      reconnects: children.reconnects,
      cpu: cpuPct,
      pathCpuUs: children.acked > 0 ? (((cpuS.site ?? 0) + (cpuS.node_red ?? 0)) / children.acked) * 1e6 : 0,
      timedOut,
      diagnosis,
    };
  } finally {
    opts.progress.clear();
    await scope.close();
  }
}

const same = (a: Outputs, b: Outputs): boolean => a.passed === b.passed && a.windows === b.windows && a.aggregates === b.aggregates && a.windowCountSum === b.windowCountSum;

function row(r: ScenarioResult, ratio: string): string[] {
  const names: Record<Path, string> = {
    'node-red': 'Node-RED: site Mosquitto → mqtt in → function → mqtt out [baseline]',
    outpost: 'Outpost gateway: SQLite commit before PUBACK → rules → uplink',
  };
  const cpu = ['self', 'site', 'node_red', 'cloud'].map((k) => (r.cpu[k] === undefined ? '-' : String(r.cpu[k]))).join('/');
  return [
    names[r.path],
    fmtInt(r.readingsPerS),
    ratio,
    r.seconds.toFixed(2),
    fmtInt(r.acked),
    `${fmtInt(r.outputs.passed)} + ${fmtInt(r.outputs.windows)}`,
    fmtInt(r.lost),
    fmtInt(r.windowsMissing),
    fmtInt(r.duplicates),
    r.pathCpuUs.toFixed(1),
    cpu,
    r.timedOut ? 'TIMED OUT' : 'ok',
  ];
}

function figures(prefix: string, r: ScenarioResult): Record<string, Figure> {
  return {
    [`${prefix}_readings_per_s`]: round(r.readingsPerS),
    [`${prefix}_seconds`]: round(r.seconds, 3),
    [`${prefix}_acked`]: r.acked,
    [`${prefix}_failed`]: r.failed,
    [`${prefix}_passed`]: r.outputs.passed,
    [`${prefix}_windows`]: r.outputs.windows,
    [`${prefix}_window_count_sum`]: r.outputs.windowCountSum,
    [`${prefix}_lost`]: r.lost,
    [`${prefix}_windows_missing`]: r.windowsMissing,
    [`${prefix}_duplicates`]: r.duplicates,
    [`${prefix}_reconnects`]: r.reconnects,
    [`${prefix}_path_cpu_us_per_reading`]: round(r.pathCpuUs, 1),
    ...Object.fromEntries(Object.entries(r.cpu).map(([k, v]) => [`${prefix}_cpu_pct_${k === 'self' ? 'loadgen' : k}`, v])),
    [`${prefix}_timed_out`]: r.timedOut,
  };
}

/**
 * The end-to-end comparison node-red-flow is not: the same children, the same rules, through the
 * whole path to a cloud Mosquitto, on both sides. Outpost: the gateway's own broker, a commit to
 * SQLite before each PUBACK, the rules, the uplink. Node-RED: a site Mosquitto, then mqtt in →
 * function → mqtt out in Node-RED's own process.
 */
export const nodeRedE2eBenchmark: Benchmark = {
  name: 'node-red-e2e',
  description: `${PUBLISHERS} child devices, ${IN_FLIGHT} QoS 1 messages in flight, filter + 60 s window: Outpost gateway vs site Mosquitto + Node-RED flow, to a cloud Mosquitto`,
  // Two scenarios, each with its hard timeout plus start-up (Node-RED: up to 60 s), quiet period and cleanup.
  maxDurationMs: (opts) => 2 * (opts.timeoutMs + 90_000),
  async run(opts: BenchOptions): Promise<BenchResult> {
    const load = E2eLoad.startingNow(opts.messages);
    const expected = load.expected();
    // The baseline runs first, so any warm-up of this process favours it.
    const nodeRed = await runScenario('node-red', load, expected, opts);
    const outpost = await runScenario('outpost', load, expected, opts);
    const ratio = nodeRed.readingsPerS > 0 ? outpost.readingsPerS / nodeRed.readingsPerS : 0;
    const cpuRatio = outpost.pathCpuUs > 0 ? nodeRed.pathCpuUs / outpost.pathCpuUs : 0;
    const fmtOut = (o: Outputs): string => `${fmtInt(o.passed)} passed + ${fmtInt(o.windows)} windows (${fmtInt(o.aggregates)} aggregates, counts summing to ${fmtInt(o.windowCountSum)})`;
    const outpostSame = same(outpost.outputs, expected);
    const nodeRedSame = same(nodeRed.outputs, expected);
    const notes = [
      `readings: ${fmtInt(opts.messages)} messages of one reading (${PUBLISHERS} devices × ${POINTS} points, values crossing 60, event times ${STEP_MS} ms apart); rules: where value > 60, and a 60 s event-time tumbling window (avg, max, count) of those, per device and point`,
      `outputs expected: ${fmtOut(expected)}`,
      `outputs Outpost:  ${fmtOut(outpost.outputs)}: ${outpostSame ? 'equal' : 'DIFFERENT'}`,
      `outputs Node-RED: ${fmtOut(nodeRed.outputs)}: ${nodeRedSame ? 'equal' : 'DIFFERENT'}`,
      'readings/s: readings acknowledged to the children ÷ first publish to the last new output at the cloud consumer; lost: passing readings acknowledged to a child (Outpost: after its commit; Node-RED: by the site Mosquitto) never seen at the cloud',
      'CPU% is of one core: load = this process (children and cloud consumer), site = gateway or site Mosquitto, NR = Node-RED; path CPU = CPU time of the gateway, or of the site Mosquitto and Node-RED, per reading',
      `Outpost ÷ Node-RED ${ratio.toFixed(2)}× in readings/s (aim >= 2×): ${ratio >= 2 ? 'met' : 'MISSED'}; path CPU per reading, Node-RED ÷ Outpost: ${cpuRatio.toFixed(2)}×`,
    ];
    for (const r of [outpost, nodeRed]) if (r.diagnosis) notes.push(`${r.path}: ${r.diagnosis}`);
    return {
      figures: {
        messages: opts.messages,
        publishers: PUBLISHERS,
        in_flight: IN_FLIGHT,
        expected_passed: expected.passed,
        expected_windows: expected.windows,
        expected_window_count_sum: expected.windowCountSum,
        ...figures('node_red', nodeRed),
        ...figures('outpost', outpost),
        ratio: round(ratio, 2),
        path_cpu_ratio: round(cpuRatio, 2),
        outpost_outputs_equal: outpostSame,
        node_red_outputs_equal: nodeRedSame,
      },
      table: {
        head: ['path', 'readings/s', 'ratio', 'seconds', 'acked', 'at cloud: passed + windows', 'lost', 'windows missing', 'dups', 'path CPU µs/reading', 'CPU% load/site/NR/cloud', 'status'],
        rows: [row(nodeRed, '1.00'), row(outpost, ratio.toFixed(2))],
      },
      notes,
      // Node-RED's losses are the baseline's behaviour, reported as found; if it lost nothing, its
      // outputs must equal ours, or the two paths do not compute the same thing.
      ok:
        outpost.lost === 0 &&
        outpost.failed === 0 &&
        outpostSame &&
        !outpost.timedOut &&
        !nodeRed.timedOut &&
        (nodeRed.lost > 0 || nodeRed.windowsMissing > 0 || nodeRedSame),
    };
  },
};
