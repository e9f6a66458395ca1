import type { OverflowPolicy } from './policy.js';

/**
 * Keeps what the stream holds and refuses a new reading that would take it over its budget (alarms
 * and events: the first ones explain the rest). Over budget only after its quota was lowered: then
 * the oldest go, as with drop-oldest.
 */
export const rejectNew: OverflowPolicy = {
  name: 'reject-new',
  measuresEach: true,
  admit: (bytes, size, quotaBytes) => bytes + size <= quotaBytes,
  excess: (bytes, quotaBytes) => Math.max(0, bytes - quotaBytes),
};
