/**
 * V8 heap settings the gateway runs with (the `outpost` command's first line carries the same;
 * test/unit/launch-flags.test.ts keeps them in step). Without a limit V8 sizes the heap by the
 * machine's memory and lets a ~40 MiB live set grow to several hundred MiB between collections; a
 * site gateway has 1–2 GB for everything. Override with NODE_OPTIONS if a site needs more.
 */
export const GATEWAY_NODE_FLAGS: readonly string[] = ['--max-old-space-size=128', '--max-semi-space-size=4'];

/**
 * Environment the gateway process starts with (the `outpost` command's first line sets the same).
 * glibc gives each thread that allocates its own malloc arena (Node has about ten threads), and
 * each keeps what it once held: two arenas held 11 MiB less on a busy site (2,000 children and
 * 10,000 Modbus points/s, docs/benchmarks.md, footprint) for no measurable cost in throughput.
 */
export const GATEWAY_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };
