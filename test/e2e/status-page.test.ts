import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer, { type Page } from 'puppeteer-core';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../runtime/config/load.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { ProblemLog } from '../../runtime/problems.js';
import { SimChildDevice } from '../../sim/child-device.js';
import { SimCloud } from '../../sim/cloud.js';
import { profiles, SimModbusSlave } from '../../sim/modbus-slave.js';
import { pointEntries } from '../../sim/site.js';
import { gatewayApi, TEST_API_TOKENS, TEST_TOKENS } from '../helpers/api.js';
import { deviceCredentials, testIdentities } from '../helpers/broker-access.js';
import { waitFor } from '../helpers/wait.js';

/** Debian's chromium; .ci/run installs it. Missing, the test fails: it does not skip. */
const CHROMIUM = '/usr/bin/chromium';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
});

/** The text of the first element matching `selector`, or undefined. */
const text = (page: Page, selector: string): Promise<string | undefined> =>
  page.$eval(selector, (e: { textContent: string | null }) => e.textContent ?? undefined).catch(() => undefined);

/** Waits until the text of `selector` satisfies `ok` (polled from here: no DOM types in the test). */
async function waitText(page: Page, selector: string, ok: (t: string) => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  let last: string | undefined;
  await waitFor(what, async () => ok((last = (await text(page, selector)) ?? '')), timeoutMs, 100, () => `${selector}: ${last ?? '(none)'}`);
}

describe('the status page', () => {
  it("asks for a token, shows the site's devices with values and trends, updates live, shows the link going down and coming back, and fits a phone", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-status-page-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const cloud = await SimCloud.start();
    cleanup.push(() => cloud.stop());
    const plc = await SimModbusSlave.start({ points: profiles.plc() });
    cleanup.push(() => plc.stop());
    const problems = new ProblemLog();
    const gateway = await Gateway.start(
      parseConfig({
        gateway: { id: 'page-gw' },
        http: { host: '127.0.0.1', port: 0, tokens: TEST_API_TOKENS },
        broker: { host: '127.0.0.1', port: 0 },
        identities: testIdentities,
        devices: [
          { id: 'plc-1', protocol: 'modbus-tcp', host: plc.host, port: plc.port, pollIntervalMs: 250, points: pointEntries(plc.points) },
          { id: 'pump-1', protocol: 'mqtt' },
        ],
        rules: [{ id: 'all', type: 'filter', match: { device: '*', point: '*' } }],
        cloud: { url: cloud.url, lingerMs: 0, backoff: { initialMs: 100, maxMs: 500 } },
        storage: { path: join(dir, 'outpost.db') },
      }),
      { problems, log: createLogger({ problems, level: 'silent' }) },
    );
    cleanup.push(() => gateway.stop());
    const api = gatewayApi(gateway.ports.http, dir);
    const child = new SimChildDevice({ url: `mqtt://127.0.0.1:${gateway.ports.broker}`, deviceId: 'pump-1', password: deviceCredentials('pump-1').password, intervalMs: 200, points: { flow: { kind: 'counter' } } });
    child.start();
    cleanup.push(() => child.kill());

    // The data is behind the API's tokens; the page itself holds none.
    expect((await api.as(undefined)(`${api.base}/api/v1/status/stream`)).status).toBe(401);
    const pageRes = await api.as(undefined)(`${api.base}/status`);
    expect(pageRes.status).toBe(200);
    expect(pageRes.headers.get('content-security-policy')).toContain("default-src 'none'");

    const spki = createHash('sha256').update(new X509Certificate(api.cert).publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
    const browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking', '--disable-component-update', `--ignore-certificate-errors-spki-list=${spki}`],
    });
    cleanup.push(() => browser.close());
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(String(err)));
    await page.goto(`${api.base}/status`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#login:not([hidden])', { timeout: 10_000 });

    // A wrong token is refused and says so; the read token shows the site.
    await page.type('#token', 'opt_not-a-token-of-this-gateway-000000000000000000');
    await page.click('#login button[type=submit]');
    await waitText(page, '#login-error', (t) => t.startsWith('Refused'), 'the wrong token refused');
    await page.type('#token', TEST_TOKENS.read);
    await page.click('#login button[type=submit]');
    await page.waitForSelector('#view:not([hidden])', { timeout: 10_000 });
    await page.waitForSelector('[data-device="plc-1"] [data-point]', { timeout: 15_000 });
    await page.waitForSelector('[data-device="pump-1"] [data-point="flow"]', { timeout: 15_000 });
    expect(await text(page, '#gateway')).toBe('page-gw');

    // Values update while readings flow, and numeric points draw a trend.
    const flow = '[data-device="pump-1"] [data-point="flow"] .value';
    const first = await text(page, flow);
    await waitText(page, flow, (t) => t !== first, 'the value of pump-1 flow to change');
    await page.waitForSelector('[data-device="pump-1"] [data-point="flow"] svg.trend polyline', { timeout: 15_000 });
    expect(await text(page, '#buses')).toContain('plc-1');
    expect(await text(page, '#rules')).toMatch(/all\s*filter/);
    await waitText(page, '#rules', (t) => /\d\/s/.test(t), 'a rule rate');

    // The link: up, then down while the cloud is away, then up again.
    await waitText(page, '#link', (t) => t === 'cloud up', 'the link up');
    await cloud.stop();
    await waitText(page, '#link', (t) => /cloud (down|connecting)/.test(t), 'the link down');
    // The outbox fills while the link is down, and the oldest reading's age shows.
    await waitText(page, '#outbox', (t) => /telemetry/.test(t) && !/^queued: 0 /.test(t) && /\d+ s/.test(t), 'readings queued with the age of the oldest');
    await cloud.start();
    await waitText(page, '#link', (t) => t === 'cloud up', 'the link up again', 20_000);
    // The link errors of the outage are among the recent problems.
    await waitText(page, '#problems', (t) => /cloud link/.test(t), 'the outage among the recent problems');

    // OUTPOST_SCREENSHOT=DIR keeps pictures of the page, to look at.
    const shots = process.env.OUTPOST_SCREENSHOT;
    if (shots) await page.screenshot({ path: join(shots, 'status-page-desktop.png'), fullPage: true });
    // On a phone: one column, nothing wider than the screen.
    await page.setViewport({ width: 390, height: 844, deviceScaleFactor: 2, isMobile: true });
    await waitFor('a narrow layout', async () => (await page.$eval('html', (e: { scrollWidth: number }) => e.scrollWidth)) <= 390, 5_000);
    const cards = await page.$$eval('#devices .card', (els: Array<{ getBoundingClientRect(): { left: number } }>) => els.map((e) => Math.round(e.getBoundingClientRect().left)));
    expect(new Set(cards).size).toBe(1);
    if (shots) await page.screenshot({ path: join(shots, 'status-page-phone.png') });
    expect(errors).toEqual([]);
  }, 120_000);
});
