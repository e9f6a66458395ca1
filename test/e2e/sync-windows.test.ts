import { afterEach, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import { SimCloud } from '../../sim/cloud.js';
import { startSiteAndGateway } from '../helpers/site-gateway.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { deviceCredentials } from '../helpers/broker-access.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

describe('sync windows on a metered link', () => {
  it('sends telemetry only inside the cron windows, while alarms open the link at once', async () => {
    const cloud = await SimCloud.start();
    cleanup.push(() => cloud.stop());
    const sg = await startSiteAndGateway(
      cloud.url,
      { meters: 0, boilers: 0, children: 2, childIntervalMs: 50, pollIntervalMs: 1000 },
      [
        { id: 'alarms', type: 'filter', match: { device: '*', point: 'alarm' }, stream: 'alarms' },
        { id: 'telemetry', type: 'filter', match: { device: 'pump-*', point: '*' } },
      ],
      // A 1.5 s window every 6 s (node-cron with a seconds field).
      { syncWindows: [{ cron: '*/6 * * * * *', durationMs: 1500 }] },
      [
        { name: 'alarms', priority: 0 },
        { name: 'telemetry', priority: 5 },
      ],
    );
    cleanup.push(() => sg.close());
    const { gateway } = sg;

    // Sample the link and the cloud for 13 s: it opens for the windows and idles between them.
    const samples: Array<{ link: string; delivered: number }> = [];
    const end = Date.now() + 13_000;
    while (Date.now() < end) {
      samples.push({ link: gateway.status().link, delivered: cloud.ledger.uniqueFrom('e2e-gw') });
      await sleep(100);
    }
    const idle = samples.filter((s) => s.link === 'idle').length;
    const up = samples.filter((s) => s.link === 'up').length;
    expect(idle).toBeGreaterThan(samples.length / 2);
    expect(up).toBeGreaterThan(3);
    // Nothing arrives while idle: between two consecutive idle samples the count does not move.
    for (let i = 1; i < samples.length; i++) {
      if (samples[i - 1]!.link === 'idle' && samples[i]!.link === 'idle') expect(samples[i]!.delivered).toBe(samples[i - 1]!.delivered);
    }
    expect(samples.at(-1)!.delivered).toBeGreaterThan(100);

    // An alarm outside a window opens the link at once.
    await waitFor('an idle link', () => gateway.status().link === 'idle', 10_000);
    const device = mqtt.connect(`mqtt://127.0.0.1:${gateway.ports.broker}`, deviceCredentials('boiler-9'));
    cleanup.push(() => device.endAsync().then(() => undefined));
    const sent = Date.now();
    await device.publishAsync('outpost/v1/dev/boiler-9/telemetry', JSON.stringify({ id: 'a1', points: { alarm: true } }), { qos: 1 });
    await waitFor('the alarm at the cloud', () => cloud.ledger.has('boiler-9:a1:alarm'), 3000);
    expect(Date.now() - sent).toBeLessThan(3000);
  });
});
