import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { Rules } from '../rules/engine.js';
import { ConfigError, parseConfig } from './config/load.js';
import type { SiteConfig } from './config/schema.js';
import { errorMessage, makeEnvelope, ManualClock, type RuleOutput } from './contracts/index.js';
import { CountingSequence } from './sequence.js';

/** One recorded reading per line; id and seq are given when absent, ts defaults to the previous line's. */
const recorded = z.strictObject({
  id: z.string().min(1).optional(),
  device: z.string().min(1),
  point: z.string().min(1),
  value: z.union([z.number().finite(), z.boolean(), z.string(), z.null()]),
  quality: z.enum(['good', 'bad', 'stale']).default('good'),
  ts: z.number().int().nonnegative().optional(),
  seq: z.number().int().nonnegative().optional(),
  unit: z.string().min(1).optional(),
});


export interface RulesTestResult {
  readonly readings: number;
  readonly outputs: number;
  readonly badLines: number;
  readonly errors: readonly { rule: string; errors: number; lastError: string | undefined }[];
}

/**
 * The rules of a site config (or of a file holding only `rules:` and, if they need them,
 * `streams:` and `devices:`), validated as the gateway validates them.
 */
export async function loadRules(file: string): Promise<SiteConfig> {
  let raw: unknown;
  try {
    const doc = parseDocument(await readFile(file, 'utf8'));
    if (doc.errors.length > 0) throw new ConfigError(file, doc.errors.map((e) => e.message));
    raw = doc.toJS() as unknown;
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(file, [`cannot read file: ${errorMessage(err)}`]);
  }
  const given = (raw ?? {}) as Record<string, unknown>;
  const rules = Array.isArray(given.rules) ? (given.rules as unknown[]) : [];
  // Streams the rules name, when the file does not list its own.
  const named = [...new Set(['telemetry', ...rules.map((r) => (r as { stream?: unknown }).stream).filter((s): s is string => typeof s === 'string')])];
  return parseConfig(
    {
      gateway: { id: 'rules-test' },
      cloud: { url: 'mqtt://127.0.0.1:1' },
      storage: { path: 'unused.db' },
      streams: named.map((name) => ({ name })),
      ...given,
    },
    file,
  );
}

/**
 * Replays recorded readings through `config`'s rules on the readings' own clock (each reading's
 * ts is "now" when it is processed; windows due in between close in order), and writes each
 * output as one JSON line. Windows still open at the end are closed as if time ran on. Nothing
 * touches a device, broker or store.
 */
export function replay(config: SiteConfig, lines: readonly string[], write: (line: string) => void, problem: (msg: string) => void): RulesTestResult {
  const clock = new ManualClock();
  const sequence = new CountingSequence('test:');
  const rules = new Rules(config.rules, clock, sequence);
  let outputs = 0;
  const emit = (o: RuleOutput): void => {
    const readings = o.batch ? [...o.batch] : [o.envelope];
    for (const reading of readings) {
      outputs++;
      const target = o.route === 'cloud' ? { stream: o.stream } : o.route === 'mqtt' ? { topic: o.topic } : o.route === 'call' ? { call: { device: o.device, method: o.method } } : { write: { device: o.device, point: o.point } };
      write(JSON.stringify({ route: o.route, ...target, reading }));
    }
  };
  let readings = 0;
  let badLines = 0;
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    let parsed: z.output<typeof recorded>;
    try {
      const r = recorded.safeParse(JSON.parse(line));
      if (!r.success) throw new Error(r.error.issues.map((x) => `${x.path.join('.') || 'reading'}: ${x.message}`).join('; '));
      parsed = r.data;
    } catch (err) {
      badLines++;
      problem(`line ${i + 1}: ${errorMessage(err)}`);
      return;
    }
    readings++;
    const ts = parsed.ts ?? clock.t;
    // One sequence for recorded and derived readings, as in the gateway.
    const seq = parsed.seq ?? sequence.next().seq;
    if (ts > clock.t) {
      clock.t = ts;
      rules.tick(ts, emit);
    }
    rules.process(makeEnvelope({ id: parsed.id ?? `test:${seq}`, device: parsed.device, point: parsed.point, value: parsed.value, quality: parsed.quality, ts, seq, unit: parsed.unit }), emit);
  });
  // Let time run on until nothing is open (bounded), then close what has no deadline (count windows).
  for (let i = 0; i < 10_000; i++) {
    const next = rules.nextDeadline();
    if (next === undefined) break;
    clock.t = Math.max(clock.t, next);
    rules.tick(clock.t, emit);
  }
  rules.closeAll(emit);
  return { readings, outputs, badLines, errors: rules.errors().filter((e) => e.errors > 0) };
}
