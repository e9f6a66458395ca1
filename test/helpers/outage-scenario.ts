import { expect } from 'vitest';
import type { DeliveryLedger } from '../../sim/ledger.js';
import { startSiteAndGateway } from './site-gateway.js';
import { sleep, waitFor } from './wait.js';

/** A cloud broker the scenario can take away and bring back, and what its consumer received. */
export interface CloudUnderTest {
  readonly url: string;
  readonly ledger: DeliveryLedger;
  stop(): Promise<void>;
  start(): Promise<void>;
}

/**
 * Site (Modbus slaves + MQTT children) -> gateway -> cloud broker, with the cloud broker stopped
 * mid-run and started again. Asserts that every reading the gateway took for the cloud arrived
 * (after dedup by id), that every reading a child got a PUBACK for is among them, and that the
 * outbox held the data while the cloud was away.
 */
export async function cloudOutageScenario(cloud: CloudUnderTest, qos: 1 | 2 = 1): Promise<void> {
  const sg = await startSiteAndGateway(cloud.url, { meters: 1, boilers: 1, children: 3, childIntervalMs: 50, pollIntervalMs: 200 }, undefined, { qos });
  const { gateway, site } = sg;
  try {
    await waitFor('first readings at the cloud', () => cloud.ledger.uniqueFrom('e2e-gw') >= 100);
    await cloud.stop();
    await waitFor('the gateway to see the link down', () => gateway.status().link !== 'up');
    const depthAtOutage = gateway.status().outbox.depth;
    const deliveredAtOutage = cloud.ledger.uniqueFrom('e2e-gw');
    await sleep(1500);
    // Data kept flowing in and piled up in the outbox while the cloud was away.
    expect(gateway.status().outbox.depth).toBeGreaterThan(depthAtOutage + 50);
    expect(cloud.ledger.uniqueFrom('e2e-gw')).toBe(deliveredAtOutage);
    await cloud.start();
    await waitFor('the link to come back', () => gateway.status().link === 'up', 15_000);
    await sleep(500);
    await site.stopChildren();
    await gateway.stop({ drainMs: 20_000 });
    const s = gateway.status();
    expect(s.outbox.depth).toBe(0);
    expect(s.outbox.dropped).toBe(0);
    // The consumer may still be receiving what the broker already acknowledged.
    await waitFor(
      'every reading at the cloud consumer',
      () => cloud.ledger.uniqueFrom('e2e-gw') >= s.outbox.appended,
      15_000,
      25,
      () => `consumer has ${cloud.ledger.uniqueFrom('e2e-gw')} of ${s.outbox.appended}; gateway status ${JSON.stringify(s.outbox)}`,
    );
    expect(cloud.ledger.uniqueFrom('e2e-gw')).toBe(s.outbox.appended);
    expect(s.outbox.delivered).toBeGreaterThanOrEqual(s.outbox.appended);
    const acked = site.childAcked();
    expect(acked.length).toBeGreaterThan(100);
    expect(cloud.ledger.missing(acked)).toEqual([]);
    for (const device of ['meter-1', 'boiler-1', 'pump-1', 'pump-3']) expect(cloud.ledger.byDevice.get(device) ?? 0).toBeGreaterThan(0);
    expect(cloud.ledger.rejected).toBe(0);
    expect(cloud.ledger.orderViolations).toBe(0);
  } finally {
    await sg.close();
  }
}
