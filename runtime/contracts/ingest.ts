import type { OutboxItem } from './outbox.js';
import type { Readings } from './reading-batch.js';

/**
 * Where drivers hand readings over. The promise resolves only once every reading (and whatever
 * the rules derived from it) is committed to the local store: a driver acknowledges its source
 * (an MQTT PUBACK) only after that. It rejects when the readings could not be stored.
 */
export interface ReadingSink {
  submit(readings: Readings): Promise<void>;
}

/**
 * Readings that go to the outbox as they are, past the rules (a flow's `outpost out`, OTA events):
 * appended in the next ingest transaction; the promise resolves once that committed.
 */
export interface OutboxWriter {
  append(items: readonly OutboxItem[]): Promise<void>;
}

/** Issues ids and sequence numbers that stay unique across restarts of the gateway. */
export interface SequenceSource {
  next(): { seq: number; id: string };
  /**
   * `n` consecutive numbers at once, from `seq0`; reading seq0 + k has the id
   * `idPrefix + (seq0 + k)`, as `next()` would have given it.
   */
  reserve(n: number): { seq0: number; idPrefix: string };
}
