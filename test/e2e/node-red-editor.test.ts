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
import mqtt from 'mqtt';
import { gatewayApi } from '../helpers/api.js';
import { deviceCredentials, testIdentities } from '../helpers/broker-access.js';
import { waitFor } from '../helpers/wait.js';

const require = createRequire(import.meta.url);
const bcrypt = require('bcryptjs') as { hashSync(p: string, rounds: number): string };
/** Debian's chromium; .ci/run installs it. Missing, the test fails: it does not skip. */
const CHROMIUM = '/usr/bin/chromium';

/** What the test reads of the editor's page. */
interface EditorNode {
  valid: boolean;
  validationErrors?: string[];
}
interface EditorWindow {
  RED: { nodes: { node(id: string): EditorNode | null }; editor: { edit(n: EditorNode): void }; tray: { close(): void } };
  document: { querySelector(selector: string): { textContent: string | null } | null };
  // jQuery, as the editor loads it.
  $: (selector: string) => { map(fn: (i: number, el: { value: string }) => string): { get(): string[] }; val(): unknown; length: number };
}

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
      broker: { host: '127.0.0.1', port: 0, acceptUnknownDevices: true },
      identities: testIdentities,
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

    // A flow with a valid window fed by `outpost in`, and a window the gateway would refuse (a
    // hopping window without its hop), deployed as `node-red-admin` would.
    const flow = [
      { id: 't1', type: 'tab', label: 'windows' },
      { id: 'in1', z: 't1', type: 'outpost in', device: '*', point: '*', x: 120, y: 80, wires: [['w1']] },
      { id: 'w1', z: 't1', type: 'outpost window', kind: 'tumbling', windowMs: '60000', aggregates: 'avg,max', x: 320, y: 80, wires: [[]] },
      { id: 'bad', z: 't1', type: 'outpost window', kind: 'hopping', windowMs: '60000', hopMs: '', aggregates: 'avg', x: 320, y: 160, wires: [[]] },
    ];
    const deploy = await api.fetch(`${base}/red/flows`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'Node-RED-API-Version': 'v2', 'Node-RED-Deployment-Type': 'full' },
      body: JSON.stringify({ flows: flow }),
    });
    expect(deploy.status).toBe(200);

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
    expect(palette.sort()).toEqual(['outpost call', 'outpost in', 'outpost out', 'outpost twin', 'outpost window', 'outpost write']);

    // The editor validates windows as the gateway does: the hopping window without a hop is
    // marked invalid (the red triangle; Deploy asks before deploying invalid nodes).
    await page.waitForFunction(() => (globalThis as unknown as EditorWindow).RED.nodes.node('w1') !== null, { timeout: 20_000 });
    const validity = await page.evaluate(() => {
      const RED = (globalThis as unknown as EditorWindow).RED;
      return { good: RED.nodes.node('w1')!.valid, bad: RED.nodes.node('bad')!.valid, errors: RED.nodes.node('bad')!.validationErrors };
    });
    expect(validity).toEqual({ good: true, bad: false, errors: ['a hopping window needs hopMs ≥ 100 ms'] });
    await page.waitForSelector('#red-ui-workspace .red-ui-flow-node-error:not(.hide)', { timeout: 10_000 });

    // Its dialog: a dropdown of the window kinds, a checkbox per aggregate, the event-time fields.
    await page.evaluate(() => (globalThis as unknown as EditorWindow).RED.editor.edit((globalThis as unknown as EditorWindow).RED.nodes.node('w1')!));
    await page.waitForSelector('select#node-input-kind', { visible: true, timeout: 10_000 });
    const dialog = await page.evaluate(() => {
      const $ = (globalThis as unknown as EditorWindow).$;
      return {
        kinds: $('#node-input-kind option').map((_i: number, o: { value: string }) => o.value).get(),
        kind: $('#node-input-kind').val(),
        aggregates: $('#node-input-aggregate-list input').map((_i: number, o: { value: string }) => o.value).get(),
        checked: $('#node-input-aggregate-list input:checked').map((_i: number, o: { value: string }) => o.value).get(),
        time: $('#node-input-time option').map((_i: number, o: { value: string }) => o.value).get(),
        lateness: $('#node-input-allowedLatenessMs').length,
      };
    });
    expect(dialog).toEqual({
      kinds: ['tumbling', 'hopping', 'sliding', 'session', 'count'],
      kind: 'tumbling',
      aggregates: ['avg', 'min', 'max', 'sum', 'count', 'first', 'last', 'stddev', 'p50', 'p95', 'p99'],
      checked: ['avg', 'max'],
      time: ['processing', 'event'],
      lateness: 1,
    });
    await page.evaluate(() => (globalThis as unknown as EditorWindow).RED.tray.close());

    // Live statuses: readings from a child show in `outpost in`, open windows in `outpost window`;
    // the refused window says why.
    const child = mqtt.connect(`mqtt://127.0.0.1:${gateway.ports.broker}`, deviceCredentials('probe-1'));
    cleanup.push(() => child.endAsync());
    for (let i = 0; i < 3; i++) await child.publishAsync('outpost/v1/dev/probe-1/telemetry', JSON.stringify({ id: `m${i}`, points: { temp: 20 + i } }), { qos: 1 });
    const statusOf = (id: string): Promise<string> =>
      page.evaluate((nodeId: string) => {
        const el = (globalThis as unknown as EditorWindow).document.querySelector(`#red-ui-workspace g.red-ui-flow-node-group[id="${nodeId.replace(/\./g, '_')}"] .red-ui-flow-node-status-label`);
        return el?.textContent ?? '';
      }, id);
    await waitFor('the readings in outpost in’s status', async () => /3 readings, last \d+ s ago/.test(await statusOf('in1')), 15_000, 100, () => 'no status');
    await waitFor('the open window in outpost window’s status', async () => /^1 open · no output yet/.test(await statusOf('w1')), 15_000, 100);
    expect(await statusOf('bad')).toMatch(/^invalid: .*hopMs/);
    expect(errors).toEqual([]);
  }, 90_000);
});
