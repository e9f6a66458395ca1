import { afterEach, describe, expect, it } from 'vitest';
import { SimCloud } from '../../sim/cloud.js';
import { startSiteAndGateway, type SiteAndGateway } from '../helpers/site-gateway.js';
import { sleep, waitFor } from '../helpers/wait.js';

let cloud: SimCloud | undefined;
let sg: SiteAndGateway | undefined;
afterEach(async () => {
  await sg?.close();
  await cloud?.stop();
});

/** The device's entry in its bus's status, with the bus's `connected`. */
function modbusStatus(sg: SiteAndGateway, device: string): Record<string, unknown> {
  for (const bus of sg.gateway.status().drivers) {
    const found = (bus.devices as Record<string, unknown>[] | undefined)?.find((x) => x.device === device);
    if (found) return { ...found, connected: bus.connected };
  }
  throw new Error(`no driver for ${device}`);
}

describe('a Modbus device that stops answering', () => {
  it('yields stale readings for its points, keeps the other device polled, and recovers when it answers again', async () => {
    const c = await SimCloud.start();
    cloud = c;
    sg = await startSiteAndGateway(c.url, { meters: 2, boilers: 0, children: 0, childIntervalMs: 1000, pollIntervalMs: 100 });
    const { site } = sg;
    const meter1 = site.slaves.get('meter-1')!;
    await waitFor('good readings from both meters', () => (c.ledger.byDevice.get('meter-1') ?? 0) > 20 && (c.ledger.byDevice.get('meter-2') ?? 0) > 20);
    expect(c.ledger.stale.get('meter-1') ?? 0).toBe(0);

    await meter1.stop();
    // One stale reading per point of the device (6 points), reported once on the transition.
    await waitFor('stale readings for meter-1', () => (c.ledger.stale.get('meter-1') ?? 0) >= 6);
    const meter2Before = c.ledger.byDevice.get('meter-2') ?? 0;
    const meter1Before = c.ledger.byDevice.get('meter-1') ?? 0;
    // The other meter keeps being polled (its readings reach the cloud within the uplink's
    // linger of 1 s, so wait for them rather than for a fixed time).
    await waitFor('meter-2 still polled', () => (c.ledger.byDevice.get('meter-2') ?? 0) - meter2Before > 20, 10_000);
    await sleep(500);
    expect(c.ledger.stale.get('meter-1')).toBe(6);
    expect(c.ledger.bad.get('meter-1') ?? 0).toBe(0);
    expect(c.ledger.byDevice.get('meter-1')).toBe(meter1Before);
    expect(modbusStatus(sg, 'meter-1').connected).toBe(false);

    await meter1.start();
    await waitFor('good readings from meter-1 again', () => (c.ledger.byDevice.get('meter-1') ?? 0) > meter1Before + 12, 35_000);
    expect(modbusStatus(sg, 'meter-1').connected).toBe(true);
  });

  it('treats a device that accepts requests but never answers as failed (timeout, stale), not as a silent gap', async () => {
    const c = await SimCloud.start();
    cloud = c;
    sg = await startSiteAndGateway(c.url, { meters: 1, boilers: 0, children: 0, childIntervalMs: 1000, pollIntervalMs: 100 });
    const meter = sg.site.slaves.get('meter-1')!;
    await waitFor('good readings', () => (c.ledger.byDevice.get('meter-1') ?? 0) > 10);
    meter.mode = 'mute';
    await waitFor('stale readings after the timeout', () => (c.ledger.stale.get('meter-1') ?? 0) >= 6, 10_000);
    expect(String(modbusStatus(sg, 'meter-1').lastError)).toMatch(/no answer within the timeout/);
    meter.mode = 'answer';
    const before = c.ledger.byDevice.get('meter-1') ?? 0;
    await waitFor('good readings again', () => (c.ledger.byDevice.get('meter-1') ?? 0) > before + 12, 35_000);
  });
});
