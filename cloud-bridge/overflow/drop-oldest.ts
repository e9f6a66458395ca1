import type { OverflowPolicy } from './policy.js';

/** Takes every new reading; a stream over its budget then drops its oldest (telemetry: the newest matters most). */
export const dropOldest: OverflowPolicy = {
  name: 'drop-oldest',
  measuresEach: false,
  admit: () => true,
  excess: (bytes, quotaBytes) => Math.max(0, bytes - quotaBytes),
};
