/** Timers and sockets the process holds, by kind (those of the test runner included). */
export type Handles = Record<string, number>;

export function openHandles(): Handles {
  const out: Handles = {};
  for (const r of process.getActiveResourcesInfo()) if (r === 'Timeout' || r.startsWith('TCP')) out[r] = (out[r] ?? 0) + 1;
  return out;
}

/** No kind of handle is held more than in `before`: what was opened since has been closed. */
export function noneLeftSince(before: Handles, now: Handles = openHandles()): boolean {
  return Object.keys(now).every((k) => (now[k] ?? 0) <= (before[k] ?? 0));
}
