import type { Envelope } from './envelope.js';
import type { ReadingBatch } from './reading-batch.js';

/** Where a rule's output goes: the outbox, a topic of the local broker, a device point (a write), or a method of a child (a call). */
export type Route = 'cloud' | 'mqtt' | 'write' | 'call';

/** To the cloud through the outbox stream `stream` (alerts too). */
export type CloudOutput = {
  readonly route: 'cloud';
  readonly stream: string;
} & ({ readonly envelope: Envelope; readonly batch?: undefined } | { readonly batch: ReadingBatch; readonly envelope?: undefined });

/** Published on the local broker once the readings that caused it are committed. */
export interface MqttOutput {
  readonly route: 'mqtt';
  readonly topic: string;
  readonly qos: 0 | 1;
  readonly retain: boolean;
  readonly envelope: Envelope;
  readonly batch?: undefined;
}

/**
 * Written to a device point once committed, through the write capability of the device's driver
 * (verified by reading it back), at most once per `minIntervalMs` per point.
 */
export interface WriteOutput {
  readonly route: 'write';
  readonly device: string;
  readonly point: string;
  readonly minIntervalMs: number;
  readonly envelope: Envelope;
  readonly batch?: undefined;
}

/**
 * A method called on a child device once committed (docs/devices.md, "Calls"), with the reading as
 * its payload; the answer (or why there is none) goes to the cloud as a `$call/{id}` record.
 */
export interface CallOutput {
  readonly route: 'call';
  readonly rule: string;
  readonly device: string;
  readonly method: string;
  readonly timeoutMs: number;
  readonly envelope: Envelope;
  readonly batch?: undefined;
}

export type RuleOutput = CloudOutput | MqttOutput | WriteOutput | CallOutput;
export type LocalOutput = MqttOutput | WriteOutput | CallOutput;

/** Persisted state of one open window or operator memory, keyed by the engine. */
export interface RuleStateRow {
  readonly key: string;
  /** JSON text, or null when the state was closed and must be deleted. */
  readonly state: string | null;
}

/**
 * The rule engine as seen by the runtime. `process` and `tick` are synchronous and run inside
 * the store's transaction: their outputs and `takeDirtyState()` are committed together, so a
 * restart neither loses nor double-counts a window.
 */
export interface RuleEngine {
  process(reading: Envelope, emit: (out: RuleOutput) => void): void;
  /**
   * Every reading of a batch, with the outcome `process` would give for each in turn; readings a
   * rule passes unchanged may be emitted as a selection of the batch.
   */
  processBatch(batch: ReadingBatch, emit: (out: RuleOutput) => void): void;
  /** Close whatever is due at `now` (processing time). */
  tick(now: number, emit: (out: RuleOutput) => void): void;
  /** Next time `tick` has work, or undefined when nothing is open. */
  nextDeadline(): number | undefined;
  takeDirtyState(): RuleStateRow[];
  restore(rows: readonly RuleStateRow[]): void;
  /** Forgets all in-memory state and takes `rows` instead (after a failed commit: the saved state is the truth). */
  reset(rows: readonly RuleStateRow[]): void;
}
