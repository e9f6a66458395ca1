import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runFleet, type FleetProgress } from '../../sim/fleet.js';
import { Mosquitto } from '../../sim/mosquitto.js';
import { CLI } from '../helpers/gateway-process.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
});

describe('fleet simulation', () => {
  it('5 gateways × 200 children each sync to one cloud broker: every acknowledged reading arrives, lag reported per gateway', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-fleet-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const cloud = await Mosquitto.start({ dir: join(dir, 'mosquitto') });
    cleanup.push(() => cloud.stop());
    const seen: FleetProgress[] = [];
    const report = await runFleet({ gateways: 5, children: 200, intervalMs: 1000, durationMs: 20_000, cloudUrls: [cloud.url], cli: CLI, dir: join(dir, 'fleet'), onProgress: (p) => seen.push(p) });
    expect(report.gateways).toHaveLength(5);
    for (const g of report.gateways) {
      expect(g.children).toBe(200);
      // Each child publishes about once a second for the run: the gateway acknowledged most of it.
      expect(g.acked).toBeGreaterThan(200 * 10);
      expect(g.missing).toBe(0);
      expect(g.lagMs.p50).toBeGreaterThan(0);
      expect(g.lagMs.p99).toBeGreaterThanOrEqual(g.lagMs.p50);
    }
    expect(report.totals.missing).toBe(0);
    expect(seen.some((p) => p.phase === 'running' && p.acked > 0)).toBe(true);
    console.log(
      `fleet 5 × 200: ${report.totals.delivered} of ${report.totals.acked} delivered, ${report.totals.duplicates} duplicates, ${report.totals.readingsPerS} readings/s; lag p50/p99/max per gateway: ${report.gateways.map((g) => `${g.lagMs.p50}/${g.lagMs.p99}/${g.lagMs.max}`).join(', ')} ms`,
    );
  }, 180_000);
});
