import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { SimCloud } from '../../sim/cloud.js';
import { LinkProxy } from '../../sim/link-proxy.js';
import { startSiteAndGateway } from '../helpers/site-gateway.js';
import { waitFor } from '../helpers/wait.js';
import { deviceCredentials } from '../helpers/broker-access.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** After an outage, a slow link drains the backlog; returns how much backlog was left when a fresh reading arrived. */
async function backlogLeftWhenLiveArrives(liveShare: number): Promise<{ backlog: number; leftAtArrival: number }> {
  const cloud = await SimCloud.start();
  cleanup.push(() => cloud.stop());
  const link = await LinkProxy.start({ port: cloud.port });
  cleanup.push(() => link.close());
  link.down();
  const sg = await startSiteAndGateway(link.url, { meters: 0, boilers: 0, children: 4, childIntervalMs: 5, pollIntervalMs: 1000 }, undefined, {
    liveShare,
    batchSize: 200,
    maxBytesPerS: 8_000,
  });
  cleanup.push(() => sg.close());
  // A backlog of some thousands of readings (on a loaded machine the children take longer to make it).
  await waitFor('a backlog', () => sg.gateway.status().outbox.depth > 3500, 30_000);
  await sg.site.stopChildren();
  const backlog = sg.gateway.status().outbox.depth;
  link.restore();
  await waitFor('the drain to start', () => cloud.ledger.unique > 0, 10_000);
  const device = mqtt.connect(`mqtt://127.0.0.1:${sg.gateway.ports.broker}`, deviceCredentials('fresh'));
  cleanup.push(() => device.endAsync().then(() => undefined));
  await device.publishAsync('outpost/v1/dev/fresh/telemetry', JSON.stringify({ id: 'now', points: { v: 1 } }), { qos: 1 });
  await waitFor('the fresh reading at the cloud', () => cloud.ledger.has('fresh:now:v'), 60_000, 20);
  return { backlog, leftAtArrival: sg.gateway.status().outbox.depth };
}

describe('live data and backlog share the link', () => {
  it('with liveShare 0.5 a fresh reading overtakes most of a long backlog', async () => {
    const r = await backlogLeftWhenLiveArrives(0.5);
    expect(r.backlog).toBeGreaterThan(3000);
    expect(r.leftAtArrival).toBeGreaterThan(r.backlog / 2);
  });

  it('with liveShare 0 (the default) it waits behind the backlog, so every device stays in order', async () => {
    const r = await backlogLeftWhenLiveArrives(0);
    expect(r.backlog).toBeGreaterThan(3000);
    expect(r.leftAtArrival).toBeLessThan(400);
  });
});
