/**
 * The one unit of data that flows through the gateway: an immutable reading.
 *
 * `id` is stable and unique per reading so that the cloud can deduplicate at-least-once delivery;
 * `seq` orders readings of one gateway (monotonic across restarts, see runtime/sequence.ts).
 * A failing sensor yields quality `bad` with value `null`, never a silent gap.
 */
export type Quality = 'good' | 'bad' | 'stale';
export type Value = number | boolean | string | null;

export interface Envelope {
  readonly id: string;
  readonly device: string;
  readonly point: string;
  readonly value: Value;
  readonly quality: Quality;
  /** Time the value was observed (ms since epoch). */
  readonly ts: number;
  readonly seq: number;
  /** Rule that produced this envelope, absent for raw readings. */
  readonly rule?: string;
  /** Engineering unit of `value` (e.g. "kWh", "degC"), when the source declares one. */
  readonly unit?: string;
}

/** What makeEnvelope takes: an Envelope whose optional fields may also be given as undefined. */
export type EnvelopeFields = Omit<Envelope, 'rule' | 'unit'> & { readonly rule?: string | undefined; readonly unit?: string | undefined };

/**
 * A new frozen reading. Frozen so that fan-out to several rules and sinks never needs a copy.
 * Built field by field (four fixed shapes, absent optionals left out) rather than by spreading:
 * on the polling hot path that is several times cheaper, and JSON keeps one field order.
 */
export function makeEnvelope(f: EnvelopeFields): Envelope {
  const { id, device, point, value, quality, ts, seq, rule, unit } = f;
  if (rule === undefined) {
    return Object.freeze(unit === undefined ? { id, device, point, value, quality, ts, seq } : { id, device, point, value, quality, ts, seq, unit });
  }
  return Object.freeze(unit === undefined ? { id, device, point, value, quality, ts, seq, rule } : { id, device, point, value, quality, ts, seq, rule, unit });
}
