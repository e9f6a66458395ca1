import { dropOldest } from './drop-oldest.js';
import type { OverflowPolicy } from './policy.js';
import { rejectNew } from './reject-new.js';

export type { OverflowPolicy } from './policy.js';

/** The overflow policies by name (a stream's `overflow` in the site config). A new policy is its file and one line here. */
export const OVERFLOW_POLICIES: ReadonlyMap<string, OverflowPolicy> = new Map([dropOldest, rejectNew].map((p) => [p.name, p]));

/** The policy names, for the config schema. */
export const OVERFLOW_NAMES = [...OVERFLOW_POLICIES.keys()] as [string, ...string[]];

export function overflowPolicy(name: string): OverflowPolicy {
  const p = OVERFLOW_POLICIES.get(name);
  if (!p) throw new Error(`unknown overflow policy "${name}"; known: ${OVERFLOW_NAMES.join(', ')}`);
  return p;
}
