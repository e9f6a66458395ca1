import mqtt, { type MqttClient } from 'mqtt';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseConfig } from '../runtime/config/load.js';
import { encodeBatch, type UplinkFormat } from '../cloud-bridge/uplink-payload.js';
import type { OutboxRow } from '../runtime/contracts/outbox.js';
import { cloudTopics, uplinkBatchSchema } from '../runtime/contracts/topics.js';
import { decodeUplinkPayload, UPLINK_PAYLOAD_KIND } from '../runtime/contracts/uplink-payload.js';
import { Gateway } from '../runtime/gateway.js';
import { createLogger } from '../runtime/logger.js';
import { SimCloud } from '../sim/cloud.js';
import { SimSite } from '../sim/site.js';
import { fmtInt, Scope, sleep, type Benchmark, type BenchOptions, type BenchResult, type Figure } from './harness.js';
import { median, round } from './stats.js';
import { BENCH_GROUP_SECRET } from './load.js';
import { WireTap } from './wire-tap.js';

/** The demo's gateway id: the id is in the topic, so its length counts in every baseline message. */
const GATEWAY_ID = 'demo-gw1';
const PREFIX = 'outpost';
/** The uplink's QoS (the default): a PUBLISH at QoS 1 carries a 2-byte packet id. */
const QOS = 1;
/** The demo site of runtime/demo.ts. */
const SITE = { meters: 2, boilers: 1, children: 4, childIntervalMs: 250, pollIntervalMs: 500 } as const;
/** lingerMs values compared: the default (1 s), and none (send as soon as committed). */
const LINGERS = [1000, 0] as const;
/** Issue 19, aim 8 "Metered link": bytes per reading at most this share of one message per reading. */
const AIM = 0.05;

/** Bytes of the MQTT "remaining length" field, a base-128 varint of 1 to 4 bytes. */
function varintBytes(n: number): number {
  return n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4;
}

/**
 * Size of an MQTT 3.1.1 PUBLISH packet: fixed header (1 byte + remaining length), 2-byte topic
 * length + topic, 2-byte packet id at QoS 1 and 2, payload.
 */
export function publishPacketBytes(topic: string, payloadBytes: number, qos: number): number {
  const remaining = 2 + Buffer.byteLength(topic) + (qos > 0 ? 2 : 0) + payloadBytes;
  return 1 + varintBytes(remaining) + remaining;
}

/**
 * The encodings compared on the same batches. The first is the default, what the gateway sends;
 * `json deflate` was the default before the columnar kinds; the last two show what batching and
 * the columns give without compression.
 */
const FORMATS: readonly UplinkFormat[] = [
  { encoding: 'columnar', compression: 'brotli' },
  { encoding: 'columnar', compression: 'deflate' },
  { encoding: 'json', compression: 'brotli' },
  { encoding: 'json', compression: 'deflate' },
  { encoding: 'columnar', compression: 'none' },
  { encoding: 'json', compression: 'none' },
];
const formatName = (f: UplinkFormat): string => `${f.encoding} ${f.compression}`;
const formatKey = (f: UplinkFormat): string => `${f.encoding}_${f.compression}`;

/** A batch as the cloud received it, again as outbox rows: what each encoding is given. */
interface CapturedBatch {
  readonly topic: string;
  readonly gateway: string;
  readonly sentAt: number;
  readonly rows: readonly OutboxRow[];
}

/**
 * Sees every telemetry PUBLISH the cloud broker received, as a subscriber (aedes forwards topic
 * and payload unchanged), and prices each reading in it as if it had been sent alone. Each batch
 * is also encoded again in every format of FORMATS, so that they are compared on the same batches.
 */
class UplinkCapture {
  private client: MqttClient | undefined;
  private readonly ids = new Set<string>();
  readonly batches: CapturedBatch[] = [];
  publishes = 0;
  payloadBytes = 0;
  packetBytes = 0;
  /** First bytes of the payloads received (their kind, UPLINK_PAYLOAD_KIND), counted. */
  readonly kinds = new Map<number, number>();
  /** Packet bytes of the same batches in each format of FORMATS. */
  readonly formatPacketBytes = FORMATS.map(() => 0);
  /** Received payloads that were not what encodeBatch makes of their readings in the default format. */
  mismatches = 0;
  readings = 0;
  rejected = 0;
  baselinePayloadBytes = 0;
  baselinePacketBytes = 0;

  constructor(private readonly url: string) {}

  get unique(): number {
    return this.ids.size;
  }

  async start(): Promise<void> {
    const client = await mqtt.connectAsync(this.url, { clientId: `bench-bytes-capture-${process.pid}`, clean: true, reconnectPeriod: 0 });
    this.client = client;
    client.on('error', () => undefined);
    client.on('message', (topic, payload) => this.record(topic, payload));
    await client.subscribeAsync(cloudTopics.telemetryFilter(PREFIX), { qos: QOS });
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client) await client.endAsync(true);
  }

  private record(topic: string, payload: Buffer): void {
    this.publishes++;
    this.payloadBytes += payload.length;
    this.packetBytes += publishPacketBytes(topic, payload.length, QOS);
    this.kinds.set(payload[0]!, (this.kinds.get(payload[0]!) ?? 0) + 1);
    let batch: { gateway: string; sentAt: number; readings: unknown[] };
    try {
      batch = uplinkBatchSchema.parse(decodeUplinkPayload(payload));
    } catch {
      this.rejected++;
      return;
    }
    // Each reading's JSON text is what the outbox held: the gateway built it with JSON.stringify.
    const rows = batch.readings.map((r, i): OutboxRow => {
      const body = JSON.stringify(r);
      return { rowid: i + 1, stream: 'telemetry', body, bytes: body.length, createdAt: 0 };
    });
    this.batches.push({ topic, gateway: batch.gateway, sentAt: batch.sentAt, rows });
    FORMATS.forEach((f, i) => {
      const encoded = encodeBatch(batch.gateway, batch.sentAt, rows, f);
      this.formatPacketBytes[i]! += publishPacketBytes(topic, encoded.length, QOS);
      if (i === 0 && !encoded.equals(payload)) this.mismatches++;
    });
    for (const r of rows) {
      this.readings++;
      const id = (JSON.parse(r.body) as { id: string }).id;
      if (this.ids.has(id)) continue;
      this.ids.add(id);
      // The baseline: this reading alone, its envelope JSON as the payload, on the same topic.
      const alone = Buffer.byteLength(r.body);
      this.baselinePayloadBytes += alone;
      this.baselinePacketBytes += publishPacketBytes(topic, alone, QOS);
    }
  }
}

/**
 * CPU microseconds per reading to encode `batches` in `format`: the median of 5 rounds of at least
 * 200 ms each, run after the gateway stopped. CPU time of this process, not wall time, so that
 * other work on a loaded machine does not count (what it does to caches still does).
 */
function encodeMicros(batches: readonly CapturedBatch[], format: UplinkFormat): number {
  const readings = batches.reduce((n, b) => n + b.rows.length, 0);
  if (readings === 0) return 0;
  const rounds: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = process.cpuUsage();
    let passes = 0;
    let used = 0;
    do {
      for (const b of batches) encodeBatch(b.gateway, b.sentAt, b.rows, format);
      passes++;
      const d = process.cpuUsage(t0);
      used = d.user + d.system;
    } while (used < 200_000);
    rounds.push(used / (passes * readings));
  }
  return median(rounds);
}

interface FormatOutcome {
  readonly format: UplinkFormat;
  readonly perReading: number;
  readonly ratio: number;
  readonly encodeMicros: number;
}

interface Outcome {
  readonly lingerMs: number;
  readonly seconds: number;
  readonly produced: number;
  readonly unique: number;
  readonly duplicates: number;
  readonly publishes: number;
  readonly oursPerReading: number;
  readonly baselinePerReading: number;
  readonly payloadPerReading: number;
  readonly baselinePayloadPerReading: number;
  readonly wirePerReading: number;
  /** Each format of FORMATS on the same batches; the first is what was sent. */
  readonly formats: readonly FormatOutcome[];
  readonly ok: boolean;
  readonly problem?: string;
}

async function runVariant(lingerMs: number, seconds: number, opts: BenchOptions): Promise<Outcome> {
  const scope = new Scope();
  const label = `uplink-bytes/linger ${lingerMs}`;
  try {
    opts.progress.show(`${label}  starting`);
    const dir = scope.dir(mkdtempSync(join(tmpdir(), 'outpost-bench-bytes-')));
    const cloud = await SimCloud.start({ topicPrefix: PREFIX });
    scope.defer(() => cloud.stop());
    const tap = await WireTap.start(cloud.port);
    scope.defer(() => tap.close());
    const capture = new UplinkCapture(cloud.url);
    scope.defer(() => capture.stop());
    await capture.start();
    const site = await SimSite.start(SITE);
    scope.defer(() => site.stop());
    const config = parseConfig(
      {
        gateway: { id: GATEWAY_ID },
        broker: { host: '127.0.0.1', port: 0 },
        identities: { groups: [{ name: 'bench', secret: BENCH_GROUP_SECRET }] },
        http: { host: '127.0.0.1', port: 0 },
        devices: site.devices(),
        // Everything the site produces goes to the cloud, once.
        rules: [{ id: 'all-to-cloud', type: 'filter', match: { device: '*', point: '*' } }],
        // The default encoding and compression: FORMATS[0].
        cloud: { url: tap.url, topicPrefix: PREFIX, lingerMs },
        storage: { path: join(dir, 'outpost.db') },
      },
      'uplink-bytes config',
    );
    // Errors only, so the status line stays readable; the modbus pollers warn on every reconnect.
    const gateway = await Gateway.start(config, { log: createLogger({ level: 'error' }) });
    scope.defer(() => gateway.stop());
    site.startChildren(`mqtt://127.0.0.1:${gateway.ports.broker}`, BENCH_GROUP_SECRET);
    const t0 = performance.now();
    const ticker = setInterval(() => {
      const ratio = capture.baselinePacketBytes > 0 ? (capture.packetBytes / capture.baselinePacketBytes).toFixed(3) : '-';
      opts.progress.show(
        `${label}  ${((performance.now() - t0) / 1000).toFixed(0)}/${seconds} s  ${fmtInt(capture.unique)} readings in ${fmtInt(capture.publishes)} publishes at the cloud, ratio so far ${ratio}`,
      );
    }, 250);
    scope.defer(() => clearInterval(ticker));
    await sleep(seconds * 1000);

    // Intake stops; the gateway then sends what it holds (the last batch lingers) and stops.
    await site.stopChildren();
    await gateway.stop({ drainMs: lingerMs + 10_000 });
    const final = gateway.status();
    // The subscriber gets each batch just after the broker acknowledged it to the gateway.
    const deadline = Date.now() + 5_000;
    while (capture.unique < cloud.ledger.unique && Date.now() < deadline) await sleep(20);
    clearInterval(ticker);

    const elapsed = (performance.now() - t0) / 1000;
    const wireBytes = tap.up;
    // Everything stops before the encoders are timed, so that nothing competes for the CPU.
    await scope.close();

    const n = capture.unique;
    const per = (bytes: number): number => (n > 0 ? bytes / n : 0);
    let problem: string | undefined;
    if (final.outbox.depth !== 0 || n !== final.outbox.appended || capture.rejected > 0) {
      problem = `produced ${final.outbox.appended}, captured ${n}, still queued ${final.outbox.depth}, undecodable ${capture.rejected}`;
    }
    const defaultKind = UPLINK_PAYLOAD_KIND.columnarBrotli;
    if (capture.mismatches > 0 || capture.kinds.size !== 1 || !capture.kinds.has(defaultKind)) {
      const kinds = [...capture.kinds].map(([k, c]) => `0x${k.toString(16)}: ${c}`).join(', ');
      problem = `${problem ? `${problem}; ` : ''}payload kinds ${kinds} (expected 0x0${defaultKind} only), ${capture.mismatches} not as encoded again`;
    }
    opts.progress.show(`${label}  timing the encoders`);
    const baseline = per(capture.baselinePacketBytes);
    const formats = FORMATS.map((format, i): FormatOutcome => {
      const perReading = per(capture.formatPacketBytes[i]!);
      return { format, perReading, ratio: baseline > 0 ? perReading / baseline : 0, encodeMicros: encodeMicros(capture.batches, format) };
    });
    return {
      lingerMs,
      seconds: elapsed,
      produced: final.outbox.appended,
      unique: n,
      duplicates: capture.readings - n,
      publishes: capture.publishes,
      oursPerReading: per(capture.packetBytes),
      baselinePerReading: per(capture.baselinePacketBytes),
      payloadPerReading: per(capture.payloadBytes),
      baselinePayloadPerReading: per(capture.baselinePayloadBytes),
      wirePerReading: per(wireBytes),
      formats,
      ok: problem === undefined && n > 0,
      problem,
    };
  } finally {
    opts.progress.clear();
    await scope.close();
  }
}

export function uplinkBytesBenchmark(seconds: number): Benchmark {
  return {
    name: 'uplink-bytes',
    description: `uplink bytes per reading of the demo site over ${seconds} s (${formatName(FORMATS[0]!)}, and the same batches in other encodings), vs one JSON message per reading`,
    maxDurationMs: () => LINGERS.length * (seconds * 1000 + 60_000),
    async run(opts: BenchOptions): Promise<BenchResult> {
      const outcomes: Outcome[] = [];
      for (const linger of LINGERS) outcomes.push(await runVariant(linger, seconds, opts));
      const figures: Record<string, Figure> = {
        seconds,
        site: `${SITE.meters} meters + ${SITE.boilers} boiler (Modbus, poll ${SITE.pollIntervalMs} ms), ${SITE.children} MQTT pumps every ${SITE.childIntervalMs} ms`,
        encoding: formatName(FORMATS[0]!),
      };
      const notes: string[] = [];
      for (const o of outcomes) {
        const p = `linger_${o.lingerMs}`;
        const ratio = o.baselinePerReading > 0 ? o.oursPerReading / o.baselinePerReading : 0;
        Object.assign(figures, {
          [`${p}_seconds`]: round(o.seconds, 1),
          [`${p}_readings`]: o.unique,
          [`${p}_publishes`]: o.publishes,
          [`${p}_readings_per_publish`]: round(o.publishes > 0 ? o.unique / o.publishes : 0, 1),
          [`${p}_bytes_per_reading`]: round(o.oursPerReading, 2),
          [`${p}_baseline_bytes_per_reading`]: round(o.baselinePerReading, 2),
          [`${p}_payload_bytes_per_reading`]: round(o.payloadPerReading, 2),
          [`${p}_baseline_payload_bytes_per_reading`]: round(o.baselinePayloadPerReading, 2),
          [`${p}_tcp_bytes_per_reading`]: round(o.wirePerReading, 2),
          [`${p}_duplicates`]: o.duplicates,
          [`${p}_ratio`]: round(ratio, 4),
          [`${p}_ok`]: o.ok,
        });
        for (const f of o.formats) {
          const q = `${p}_${formatKey(f.format)}`;
          Object.assign(figures, { [`${q}_bytes_per_reading`]: round(f.perReading, 2), [`${q}_ratio`]: round(f.ratio, 4), [`${q}_encode_us_per_reading`]: round(f.encodeMicros, 2) });
        }
        notes.push(`lingerMs ${o.lingerMs}: ratio ours/baseline ${ratio.toFixed(3)} (aim <= ${AIM}) ${ratio <= AIM ? 'met' : 'MISSED'}`);
        if (o.problem) notes.push(`lingerMs ${o.lingerMs}: ${o.problem}`);
      }
      notes.push(
        'bytes = MQTT PUBLISH packets (fixed header, topic, packet id, payload) of the telemetry the cloud received; baseline = each reading alone, its envelope JSON on the same topic at QoS 1',
        `the first row of each lingerMs is what the gateway sent (${formatName(FORMATS[0]!)}, the default); the others are the same batches encoded again`,
        'TCP = every byte the gateway sent to the cloud broker (CONNECT, status, PINGREQ included), measured by a relay; encode = CPU µs per reading to encode the batches (median of 5 rounds, after the run)',
      );
      return {
        figures,
        table: {
          head: ['lingerMs', 'encoding', 'readings', 'publishes', 'per publish', 'B/rdg', 'baseline B/rdg', 'ratio', 'encode CPU µs/rdg', 'TCP B/rdg', 'status'],
          rows: outcomes.flatMap((o) =>
            o.formats.map((f, i) => [
              String(o.lingerMs),
              formatName(f.format),
              fmtInt(o.unique),
              fmtInt(o.publishes),
              (o.publishes > 0 ? o.unique / o.publishes : 0).toFixed(1),
              f.perReading.toFixed(1),
              o.baselinePerReading.toFixed(1),
              f.ratio.toFixed(3),
              f.encodeMicros.toFixed(2),
              i === 0 ? o.wirePerReading.toFixed(1) : '',
              i === 0 ? (o.ok ? 'ok' : 'INCOMPLETE') : '',
            ]),
          ),
        },
        notes,
        ok: outcomes.every((o) => o.ok),
      };
    },
  };
}
