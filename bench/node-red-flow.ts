import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import mqtt from 'mqtt';
import { makeEnvelope, ManualClock, type Envelope, type RuleOutput } from '../runtime/contracts/index.js';
import { CountingSequence } from '../runtime/sequence.js';
import { Rules } from '../rules/engine.js';
import type { RuleSpec } from '../rules/types.js';
import { Mosquitto } from '../sim/mosquitto.js';
import { fmtInt, Scope, sleep, type Benchmark, type BenchOptions, type BenchResult } from './harness.js';
import { startNodeRed } from './node-red-process.js';
import { median, round } from './stats.js';

const READINGS = 50_000;
const ENGINE_ROUNDS = 5;

/** The same input for both: 200 devices × 5 points, values crossing 60, 4 ms apart in event time. */
function input(): Envelope[] {
  return Array.from({ length: READINGS }, (_, i) =>
    makeEnvelope({
      id: `gw:${i + 1}`,
      device: `dev-${i % 200}`,
      point: `p${(i >> 3) % 5}`,
      value: Math.round(50 + 40 * Math.sin(i / 37)),
      quality: 'good',
      ts: 1_764_000_000_000 + i * 4,
      seq: i + 1,
    }),
  );
}

/**
 * Filter (value > 60) and a 60 s tumbling window of the passing values (avg, max, count) on event
 * time; node-red-e2e runs the same rules in the gateway.
 */
export const RULES: RuleSpec[] = [
  { id: 'hot', type: 'filter', match: { device: '*', point: '*' }, where: 'value > 60', route: 'cloud', stream: 'telemetry' },
  { id: 'win', type: 'window', match: { device: '*', point: '*' }, where: 'value > 60', windowMs: 60_000, time: 'event', aggregates: ['avg', 'max', 'count'], route: 'cloud', stream: 'telemetry' },
];

/** The same logic as a Node-RED function node: pass value > 60 on; per topic, close a window when a reading starts the next. */
const FUNCTION = `
const v = msg.payload.value;
const ts = msg.payload.ts;
if (!(v > 60)) return null;
const start = ts - (ts % 60000);
const w = context.get(msg.topic);
let closed = null;
if (w && w.start !== start) closed = { topic: 'bench/nr-out/win/' + msg.topic, payload: { avg: w.sum / w.n, max: w.max, count: w.n, start: w.start } };
const next = w && w.start === start ? w : { start, sum: 0, n: 0, max: -Infinity };
next.sum += v; next.n++; if (v > next.max) next.max = v;
context.set(msg.topic, next);
return [{ topic: 'bench/nr-out/hot/' + msg.topic, payload: msg.payload }, closed];
`;


function engine(readings: readonly Envelope[]): { perS: number; passed: number; windows: number } {
  const clock = new ManualClock();
  const rules = new Rules(RULES, clock, new CountingSequence('b:'));
  let passed = 0;
  let aggregates = 0;
  const emit = (o: RuleOutput): void => {
    const n = o.batch ? o.batch.length : 1;
    if (o.envelope?.rule === 'win') aggregates += n;
    else passed += n;
  };
  const t0 = performance.now();
  for (const r of readings) {
    clock.t = r.ts;
    rules.process(r, emit);
  }
  return { perS: readings.length / ((performance.now() - t0) / 1000), passed, windows: aggregates / 3 };
}

export const nodeRedFlowBenchmark: Benchmark = {
  name: 'node-red-flow',
  description: 'The same filter + window as a Node-RED flow (mqtt in → function → mqtt out) vs the Outpost rule engine, same input',
  maxDurationMs: () => 180_000,
  async run(opts: BenchOptions): Promise<BenchResult> {
    const scope = new Scope();
    try {
      const readings = input();
      // Outpost's engine: warm-up, then rounds.
      engine(readings);
      const runs = Array.from({ length: ENGINE_ROUNDS }, () => engine(readings));
      const ours = median(runs.map((r) => r.perS));
      const expected = runs[0]!.passed + runs[0]!.windows;

      const dir = scope.dir(mkdtempSync(join(tmpdir(), 'outpost-bench-nr-')));
      const broker = await Mosquitto.start({ dir: join(dir, 'mosquitto') });
      scope.defer(() => broker.stop());
      const port = Number(new URL(broker.url).port);
      const flows = [
        { id: 'tab', type: 'tab', label: 'bench' },
        { id: 'b1', type: 'mqtt-broker', broker: '127.0.0.1', port: String(port), clientid: 'nr-bench', protocolVersion: '4', keepalive: '60', cleansession: true, autoConnect: true },
        { id: 'in', z: 'tab', type: 'mqtt in', topic: 'bench/in/#', qos: '1', datatype: 'json', broker: 'b1', nl: false, rap: false, inputs: 0, wires: [['fn']] },
        { id: 'fn', z: 'tab', type: 'function', func: FUNCTION, outputs: 2, wires: [['out'], ['out']] },
        { id: 'out', z: 'tab', type: 'mqtt out', topic: '', qos: '0', retain: 'false', broker: 'b1', wires: [] },
      ];
      opts.progress.show('node-red-flow  starting Node-RED');
      await startNodeRed(scope, dir, flows);

      const consumer = await mqtt.connectAsync(broker.url, { reconnectPeriod: 0, clientId: 'nr-bench-consumer' });
      scope.defer(() => consumer.endAsync(true));
      let outputs = 0;
      let lastAt = 0;
      let ready = false;
      consumer.on('message', (topic) => {
        if (topic.includes('/probe/')) {
          ready = true;
          return;
        }
        outputs++;
        lastAt = performance.now();
      });
      await consumer.subscribeAsync('bench/nr-out/#', { qos: 0 });
      const publisher = await mqtt.connectAsync(broker.url, { reconnectPeriod: 0, clientId: 'nr-bench-publisher' });
      scope.defer(() => publisher.endAsync(true));
      // Node-RED is ready when a probe comes back through the flow.
      const until = performance.now() + 60_000;
      while (!ready && performance.now() < until) {
        publisher.publish('bench/in/probe/p', JSON.stringify({ value: 99, ts: 0 }), { qos: 1 });
        await sleep(200);
      }
      if (!ready) throw new Error('Node-RED did not start its flow within 60 s');
      await sleep(500);
      outputs = 0;

      opts.progress.show(`node-red-flow  ${fmtInt(READINGS)} readings through Node-RED`);
      const t0 = performance.now();
      for (let i = 0; i < readings.length; i++) {
        const r = readings[i]!;
        publisher.publish(`bench/in/${r.device}/${r.point}`, JSON.stringify({ value: r.value, ts: r.ts }), { qos: 1 });
        // Let the socket drain now and then: mqtt.js queues everything otherwise.
        if (i % 1000 === 999) await new Promise((resolve) => setImmediate(resolve));
      }
      const deadline = performance.now() + 120_000;
      while (outputs < expected && performance.now() < deadline) {
        await sleep(100);
        opts.progress.show(`node-red-flow  outputs ${fmtInt(outputs)}/${fmtInt(expected)}`);
      }
      const theirs = READINGS / ((lastAt - t0) / 1000);
      opts.progress.clear();
      const ratio = ours / theirs;
      const notes = [
        `${fmtInt(READINGS)} readings (200 devices × 5 points); rules: where value > 60, and a 60 s event-time tumbling window (avg, max, count) of those; Node-RED 4.1: mqtt in (QoS 1, json) → function (the same filter and window, context per topic) → mqtt out, via Mosquitto`,
        'Node-RED: first publish to last output at a consumer; Outpost: the engine alone over the same readings (median of 5 rounds). The Node-RED figure includes MQTT in and out, as the flow does; the engine has no transport',
        `outputs: Node-RED ${fmtInt(outputs)}, Outpost ${fmtInt(runs[0]!.passed)} passed + ${fmtInt(runs[0]!.windows)} windows = ${fmtInt(expected)} (must be equal)`,
        `Outpost ÷ Node-RED ${ratio.toFixed(1)}× (aim >= 10×): ${ratio >= 10 ? 'met' : 'MISSED'}`,
      ];
      return {
        figures: { readings: READINGS, outpost_per_s: Math.round(ours), node_red_per_s: Math.round(theirs), ratio: round(ratio, 1), node_red_outputs: outputs, expected_outputs: expected },
        table: {
          head: ['path', 'readings/s', 'ratio'],
          rows: [
            ['Node-RED flow: mqtt in → function → mqtt out [baseline]', fmtInt(theirs), '1.0'],
            ['Outpost rule engine, same rules and readings', fmtInt(ours), ratio.toFixed(1)],
          ],
        },
        notes,
        ok: outputs === expected,
      };
    } finally {
      opts.progress.clear();
      await scope.close();
    }
  },
};
