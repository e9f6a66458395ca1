import { setFlagsFromString } from 'node:v8';

/**
 * How the gateway's V8 trades memory for pause times (`gateway.gc` in the site config):
 * - `compact` (the default): V8's own heap growing, which collects the old generation whenever it
 *   grows a little past its live size; the smallest RSS.
 * - `low-latency`: the old generation may grow to 2.5× its live size between full collections, and
 *   no allocation site is pretenured (per-message objects are then allocated young and die there,
 *   instead of filling the old generation). Full collections, whose incremental marking steps on
 *   the main thread are what delays a reading by 10–30 ms, become several times rarer.
 *
 * What each costs and gives is measured in docs/benchmarks.md (actuation, footprint).
 */
export type GcProfile = 'compact' | 'low-latency';

/** The V8 flags of a profile; each profile sets every flag, so switching back undoes the other. */
export function gcFlags(profile: GcProfile): readonly string[] {
  return profile === 'low-latency'
    ? ['--heap-growing-percent=150', '--no-allocation-site-pretenuring']
    : ['--heap-growing-percent=0', '--allocation-site-pretenuring'];
}

/** Applies `profile` to this process's V8 (the heap limits are read at each collection). */
export function applyGcProfile(profile: GcProfile): void {
  for (const flag of gcFlags(profile)) setFlagsFromString(flag);
}
