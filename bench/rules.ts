import { performance } from 'node:perf_hooks';
import { makeEnvelope, ManualClock, type Envelope, type RuleOutput } from '../runtime/contracts/index.js';
import { CountingSequence } from '../runtime/sequence.js';
import { Rules } from '../rules/engine.js';
import type { RuleSpec } from '../rules/types.js';
import { fmtInt, type Benchmark, type BenchOptions, type BenchResult, type Figure } from './harness.js';
import { median, round } from './stats.js';

const READINGS = 200_000;
const ROUNDS = 5;


/**
 * 200 devices × 5 points, values that cross the filter's threshold, 1 ms of time per reading: a
 * 60 s window holds about 60 readings of each of the 1,000 groups.
 */
function input(n: number): Envelope[] {
  return Array.from({ length: n }, (_, i) =>
    makeEnvelope({
      id: `gw:${i + 1}`,
      device: `dev-${i % 200}`,
      point: `p${(i >> 3) % 5}`,
      value: Math.round(50 + 40 * Math.sin(i / 37)) / 1,
      quality: i % 997 === 0 ? 'bad' : 'good',
      ts: 1_764_000_000_000 + i,
      seq: i + 1,
      unit: 'kW',
    }),
  );
}

const base = { type: 'filter', match: { device: '*', point: '*' }, route: 'cloud', stream: 'telemetry' } as const;
const SCENARIOS: Record<string, RuleSpec[]> = {
  identity: [{ ...base, id: 'all' }],
  filter: [{ ...base, id: 'hot', where: 'value > 60 and device != "dev-7"' }],
  window: [{ id: 'avg', type: 'window', match: { device: '*', point: '*' }, windowMs: 60_000, aggregates: ['avg', 'max', 'count'], route: 'cloud', stream: 'telemetry' }],
};

/** Readings per second through the engine with `specs`, the clock moving with the readings. */
function run(specs: RuleSpec[], readings: readonly Envelope[]): { perS: number; outputs: number } {
  const clock = new ManualClock(1_764_000_000_000);
  const rules = new Rules(specs, clock, new CountingSequence('b:'));
  let outputs = 0;
  const emit = (o: RuleOutput): void => {
    outputs += o.batch ? o.batch.length : 1;
  };
  const t0 = performance.now();
  for (const r of readings) {
    // The ingest pipeline ticks once per commit; one commit per 1,000 readings here.
    if (r.seq % 1000 === 0) {
      clock.t = r.ts;
      rules.tick(clock.t, emit);
    }
    rules.process(r, emit);
  }
  return { perS: readings.length / ((performance.now() - t0) / 1000), outputs };
}

export const rulesBenchmark: Benchmark = {
  name: 'rules',
  description: 'Rule engine readings/s: a JSONata filter and a windowed aggregate ÷ an identity pass-through rule, same input',
  maxDurationMs: () => 120_000,
  run(opts: BenchOptions): Promise<BenchResult> {
    const readings = input(READINGS);
    const results: Record<string, number[]> = { identity: [], filter: [], window: [] };
    const outputs: Record<string, number> = {};
    // Warm-up, then interleaved rounds.
    for (const specs of Object.values(SCENARIOS)) run(specs, readings.slice(0, 20_000));
    for (let r = 0; r < ROUNDS; r++) {
      for (const [name, specs] of Object.entries(SCENARIOS)) {
        opts.progress.show(`rules  round ${r + 1}/${ROUNDS}: ${name}`);
        const m = run(specs, readings);
        results[name]!.push(m.perS);
        outputs[name] = m.outputs;
      }
    }
    opts.progress.clear();
    const id = median(results.identity!);
    const figures: Record<string, Figure> = {};
    const rows: string[][] = [];
    const notes: string[] = [];
    for (const name of Object.keys(SCENARIOS)) {
      const v = results[name]!;
      const ratio = median(v) / id;
      figures[`${name}_per_s`] = Math.round(median(v));
      figures[`${name}_ratio`] = round(ratio, 3);
      rows.push([
        name === 'identity' ? 'identity pass-through rule [baseline]' : name === 'filter' ? 'filter: where value > 60 and device != "dev-7"' : 'tumbling window 60 s: avg, max, count per device and point',
        `${fmtInt(Math.min(...v))} / ${fmtInt(median(v))} / ${fmtInt(Math.max(...v))} readings/s`,
        `${fmtInt(outputs[name] ?? 0)}`,
        ratio.toFixed(2),
      ]);
    }
    const ok = (figures.filter_ratio as number) >= 0.8 && (figures.window_ratio as number) >= 0.8;
    notes.push(`${fmtInt(READINGS)} readings (200 devices × 5 points), ${ROUNDS} interleaved rounds; min / median / max`);
    notes.push(`filter ÷ identity ${(figures.filter_ratio as number).toFixed(2)}, window ÷ identity ${(figures.window_ratio as number).toFixed(2)} (aim >= 0.8): ${ok ? 'met' : 'MISSED'}`);
    return Promise.resolve({ figures, table: { head: ['rule', 'throughput', 'outputs', 'ratio'], rows }, notes, ok: true });
  },
};
