import { afterEach, describe, expect, it } from 'vitest';
import { SimCloud } from '../../sim/cloud.js';
import { LinkProxy } from '../../sim/link-proxy.js';
import { startSiteAndGateway, type SiteAndGateway } from '../helpers/site-gateway.js';
import { sleep, waitFor } from '../helpers/wait.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** Hundreds of faults at one every 60-180 ms: what a very bad cellular hour looks like, compressed. */
const CHAOS_MS = 30_000;
const BATCH = 100;
/** The gateway's backoff cap in startSiteAndGateway. */
const BACKOFF_CAP_MS = 1_000;

/** One random fault on the link; returns a short name for the tally. */
function injectFault(link: LinkProxy, rand: () => number): string {
  const r = rand();
  if (r < 0.3) {
    link.reset();
    return 'reset';
  }
  if (r < 0.45) {
    link.stall(50 + Math.floor(rand() * 750));
    return 'stall';
  }
  if (r < 0.6) {
    link.setConditions({ latencyMs: 5 + Math.floor(rand() * 45) });
    return 'slow';
  }
  if (r < 0.7) {
    link.setConditions({ bytesPerS: 20_000 + Math.floor(rand() * 180_000) });
    return 'throttle';
  }
  if (r < 0.8) {
    // Within the first few batches of a connection: columnar batches are a few hundred bytes.
    link.setConditions({ dropAfterBytes: 200 + Math.floor(rand() * 1000) });
    return 'drop-after';
  }
  if (r < 0.9) {
    link.clear();
    return 'clear';
  }
  link.down();
  setTimeout(() => link.restore(), 100 + Math.floor(rand() * 1400));
  return 'down';
}

describe('link chaos between gateway and cloud', () => {
  it.each([
    { qos: 2 as const, chaosMs: CHAOS_MS, maxDupRatio: 0.02 },
    // At QoS 1 a connection lost with batches in flight may repeat them; the in-flight cap shrinks
    // on a link that keeps dropping, which keeps that under 1%.
    { qos: 1 as const, chaosMs: CHAOS_MS, maxDupRatio: 0.02 },
  ])('QoS $qos: loses nothing through hundreds of faults, duplicates bounded, uplink back within backoff cap + 10 s', async ({ qos, chaosMs, maxDupRatio }) => {
    const cloud = await SimCloud.start();
    cleanup.push(() => cloud.stop());
    const link = await LinkProxy.start({ port: cloud.port });
    cleanup.push(() => link.close());
    const sg: SiteAndGateway = await startSiteAndGateway(
      link.url,
      { meters: 1, boilers: 1, children: 8, childIntervalMs: 5, pollIntervalMs: 100 },
      undefined,
      { qos },
    );
    cleanup.push(() => sg.close());
    const { gateway, site } = sg;

    let seed = 7;
    const rand = (): number => (seed = (seed * 16807) % 2147483647) / 2147483647;
    const tally = new Map<string, number>();
    const end = Date.now() + chaosMs;
    while (Date.now() < end) {
      const f = injectFault(link, rand);
      tally.set(f, (tally.get(f) ?? 0) + 1);
      await sleep(60 + Math.floor(rand() * 120));
    }
    link.clear();
    link.restore();
    const healed = Date.now();
    await waitFor('the uplink to recover', () => gateway.status().link === 'up', BACKOFF_CAP_MS + 10_000, 10, () => JSON.stringify({ link: gateway.status().link, uplink: gateway.status().uplink }));
    expect(Date.now() - healed).toBeLessThan(BACKOFF_CAP_MS + 10_000);
    expect(link.faults).toBeGreaterThanOrEqual((200 * chaosMs) / CHAOS_MS);

    // No connect/disconnect loop once the link is healthy.
    const connections = link.connections;
    await sleep(3000);
    expect(link.connections).toBe(connections);
    expect(gateway.status().link).toBe('up');

    await site.stopChildren();
    await gateway.stop({ drainMs: 20_000 });
    const s = gateway.status().outbox;
    expect(s.depth).toBe(0);
    expect(s.dropped + s.expired + s.deadLettered).toBe(0);
    expect(cloud.ledger.uniqueFrom('e2e-gw')).toBe(s.appended);
    const acked = site.childAcked();
    expect(acked.length).toBeGreaterThan(10_000);
    expect(cloud.ledger.missing(acked)).toEqual([]);
    expect(cloud.ledger.orderViolations).toBe(0);
    const dupRatio = cloud.ledger.duplicates / cloud.ledger.unique;
    console.log(
      `link chaos, QoS ${qos}: ${link.faults} faults ${JSON.stringify(Object.fromEntries(tally))}, ${link.connections} connections, ` +
        `${cloud.ledger.unique} readings, ${cloud.ledger.duplicates} duplicates (${(dupRatio * 100).toFixed(2)}%)`,
    );
    // At least once: a connection lost with batches in flight may repeat them, never more. The
    // ratio is empirical: columnar batches are about a fifth of the JSON ones, so the faults that
    // cut a connection after N bytes fall more often per reading (0.74-1.22 % at QoS 2, 0.81 % at
    // QoS 1 since); the bound above is the guarantee.
    expect(cloud.ledger.duplicates).toBeLessThanOrEqual(link.connections * 8 * BATCH);
    expect(dupRatio).toBeLessThanOrEqual(maxDupRatio);
  }, 120_000);
});
