import mqtt, { type MqttClient } from 'mqtt';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseConfig } from '../runtime/config/load.js';
import { cloudTopics, decodeUplinkPayload } from '../runtime/contracts/topics.js';
import { Gateway } from '../runtime/gateway.js';
import { createLogger } from '../runtime/logger.js';
import { SimCloud } from '../sim/cloud.js';
import { SimSite } from '../sim/site.js';
import { fmtInt, Scope, sleep, type Benchmark, type BenchOptions, type BenchResult, type Figure } from './harness.js';
import { round } from './stats.js';
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
 * Sees every telemetry PUBLISH the cloud broker received, as a subscriber (aedes forwards topic
 * and payload unchanged), and prices each reading in it as if it had been sent alone.
 */
class UplinkCapture {
  private client: MqttClient | undefined;
  private readonly ids = new Set<string>();
  publishes = 0;
  payloadBytes = 0;
  packetBytes = 0;
  /** The same batches as uncompressed JSON: what batching alone gives, without deflate. */
  jsonBytes = 0;
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
    let batch: unknown;
    try {
      batch = decodeUplinkPayload(payload);
    } catch {
      this.rejected++;
      return;
    }
    const readings = (batch as { readings?: unknown } | null)?.readings;
    if (!Array.isArray(readings)) {
      this.rejected++;
      return;
    }
    // Re-serializing gives back the gateway's text: it was built from JSON.stringify output.
    this.jsonBytes += Buffer.byteLength(JSON.stringify(batch));
    for (const r of readings as unknown[]) {
      this.readings++;
      const id = (r as { id?: unknown } | null)?.id;
      if (typeof id !== 'string' || this.ids.has(id)) continue;
      this.ids.add(id);
      // The baseline: this reading alone, its envelope JSON as the payload, on the same topic.
      const alone = Buffer.byteLength(JSON.stringify(r));
      this.baselinePayloadBytes += alone;
      this.baselinePacketBytes += publishPacketBytes(topic, alone, QOS);
    }
  }
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
  readonly jsonPerReading: number;
  readonly wirePerReading: number;
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
        cloud: { url: tap.url, topicPrefix: PREFIX, compression: 'deflate', lingerMs },
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

    const n = capture.unique;
    const per = (bytes: number): number => (n > 0 ? bytes / n : 0);
    let problem: string | undefined;
    if (final.outbox.depth !== 0 || n !== final.outbox.appended || capture.rejected > 0) {
      problem = `produced ${final.outbox.appended}, captured ${n}, still queued ${final.outbox.depth}, undecodable ${capture.rejected}`;
    }
    return {
      lingerMs,
      seconds: (performance.now() - t0) / 1000,
      produced: final.outbox.appended,
      unique: n,
      duplicates: capture.readings - n,
      publishes: capture.publishes,
      oursPerReading: per(capture.packetBytes),
      baselinePerReading: per(capture.baselinePacketBytes),
      payloadPerReading: per(capture.payloadBytes),
      baselinePayloadPerReading: per(capture.baselinePayloadBytes),
      jsonPerReading: per(capture.jsonBytes),
      wirePerReading: per(tap.up),
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
    description: `uplink bytes per reading of the demo site over ${seconds} s (deflate), vs one JSON message per reading`,
    maxDurationMs: () => LINGERS.length * (seconds * 1000 + 60_000),
    async run(opts: BenchOptions): Promise<BenchResult> {
      const outcomes: Outcome[] = [];
      for (const linger of LINGERS) outcomes.push(await runVariant(linger, seconds, opts));
      const figures: Record<string, Figure> = {
        seconds,
        site: `${SITE.meters} meters + ${SITE.boilers} boiler (Modbus, poll ${SITE.pollIntervalMs} ms), ${SITE.children} MQTT pumps every ${SITE.childIntervalMs} ms`,
        compression: 'deflate',
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
          [`${p}_uncompressed_batch_bytes_per_reading`]: round(o.jsonPerReading, 2),
          [`${p}_tcp_bytes_per_reading`]: round(o.wirePerReading, 2),
          [`${p}_duplicates`]: o.duplicates,
          [`${p}_ratio`]: round(ratio, 4),
          [`${p}_ok`]: o.ok,
        });
        notes.push(`lingerMs ${o.lingerMs}: ratio ours/baseline ${ratio.toFixed(3)} (aim <= 0.1) ${ratio <= 0.1 ? 'met' : 'MISSED'}`);
        if (o.problem) notes.push(`lingerMs ${o.lingerMs}: ${o.problem}`);
      }
      notes.push(
        'bytes = MQTT PUBLISH packets (fixed header, topic, packet id, payload) of the telemetry the cloud received; baseline = each reading alone, its envelope JSON on the same topic at QoS 1',
        'TCP = every byte the gateway sent to the cloud broker (CONNECT, status, PINGREQ included), measured by a relay; "JSON" = the same batches without deflate',
      );
      return {
        figures,
        table: {
          head: ['lingerMs', 'readings', 'publishes', 'per publish', 'ours B/rdg', 'baseline B/rdg', 'ratio', 'TCP B/rdg', 'JSON B/rdg', 'status'],
          rows: outcomes.map((o) => [
            String(o.lingerMs),
            fmtInt(o.unique),
            fmtInt(o.publishes),
            (o.publishes > 0 ? o.unique / o.publishes : 0).toFixed(1),
            o.oursPerReading.toFixed(1),
            o.baselinePerReading.toFixed(1),
            (o.baselinePerReading > 0 ? o.oursPerReading / o.baselinePerReading : 0).toFixed(3),
            o.wirePerReading.toFixed(1),
            o.jsonPerReading.toFixed(1),
            o.ok ? 'ok' : 'INCOMPLETE',
          ]),
        },
        notes,
        ok: outcomes.every((o) => o.ok),
      };
    },
  };
}
