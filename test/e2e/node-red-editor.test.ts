import { createHash, X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../runtime/config/load.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { gatewayApi } from '../helpers/api.js';

const require = createRequire(import.meta.url);
const bcrypt = require('bcryptjs') as { hashSync(p: string, rounds: number): string };
/** Debian's chromium; .ci/run installs it. Missing, the test fails: it does not skip. */
const CHROMIUM = '/usr/bin/chromium';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

describe('the Node-RED editor at /red', () => {
  it('loads in a headless Chromium after login and shows the Outpost palette', async () => {
    expect(existsSync(CHROMIUM), `${CHROMIUM} (Debian package chromium) is needed`).toBe(true);
    const dir = mkdtempSync(join(tmpdir(), 'outpost-editor-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const config = parseConfig({
      gateway: { id: 'editor-gw' },
      broker: { host: '127.0.0.1', port: 0 },
      http: { host: '127.0.0.1', port: 0, admin: { username: 'admin', passwordHash: bcrypt.hashSync('s3cret', 8) } },
      nodeRed: { enabled: true },
      cloud: { url: 'mqtt://127.0.0.1:9' },
      storage: { path: join(dir, 'o.db') },
    });
    const gateway = await Gateway.start(config, { log: createLogger({ level: 'silent' }) });
    cleanup.push(() => gateway.stop());
    const api = gatewayApi(gateway.ports.http, dir, undefined);
    const base = api.base;
    const res = await api.fetch(`${base}/red/auth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_id: 'node-red-editor', grant_type: 'password', scope: '*', username: 'admin', password: 's3cret' }),
    });
    const { access_token: token } = (await res.json()) as { access_token: string };

    // The browser trusts the gateway's self-signed certificate by pinning its public key, as an
    // operator's browser would after checking the fingerprint, not by ignoring certificate errors.
    const spki = createHash('sha256').update(new X509Certificate(api.cert).publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
    const browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', `--ignore-certificate-errors-spki-list=${spki}`],
    });
    cleanup.push(() => browser.close());
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(String(err)));
    // Without a token the editor asks for the login.
    await page.goto(`${base}/red/`, { waitUntil: 'domcontentloaded' });
    await page.waitForSelector('#node-dialog-login-username', { timeout: 20_000 });
    // The editor takes a token from its URL (raw, not encoded), stores it and reloads.
    await page.goto(`${base}/red/?access_token=${token}`, { waitUntil: 'domcontentloaded' });
    for (const type of ['outpost in', 'outpost out', 'outpost window', 'outpost write']) {
      await page.waitForSelector(`.red-ui-palette-node[data-palette-type="${type}"]`, { timeout: 30_000 });
    }
    const palette = await page.$$eval('#red-ui-palette-container-outpost .red-ui-palette-node', (els: Array<{ getAttribute(name: string): string | null }>) =>
      els.map((e) => e.getAttribute('data-palette-type')),
    );
    expect(palette.sort()).toEqual(['outpost in', 'outpost out', 'outpost window', 'outpost write']);
    expect(errors).toEqual([]);
  }, 90_000);
});
