import { afterEach, describe, it } from 'vitest';
import { SimCloud } from '../../sim/cloud.js';
import { cloudOutageScenario } from '../helpers/outage-scenario.js';

let cloud: SimCloud | undefined;
afterEach(async () => {
  await cloud?.stop();
});

describe('site to cloud over loopback', () => {
  it('delivers every reading after the cloud broker is stopped mid-run and restarted (0 lost after dedup)', async () => {
    const c = await SimCloud.start();
    cloud = c;
    await cloudOutageScenario({ url: c.url, ledger: c.ledger, stop: () => c.stop(), start: () => c.start() });
  });
});
