import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { SimChildDevice } from '../../sim/child-device.js';
import { SimCloud } from '../../sim/cloud.js';
import { SimTwinChild } from '../../sim/twin-child.js';
import { Mosquitto } from '../../sim/mosquitto.js';
import { parseConfig } from '../../runtime/config/load.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { gatewayApi, json, TEST_API_TOKENS, TEST_TOKENS } from '../helpers/api.js';
import { cloudBehindDeadLink } from '../helpers/cloud-behind-link.js';
import { CLI, GatewayProcess } from '../helpers/gateway-process.js';
import { sleep, waitFor } from '../helpers/wait.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** Kills in CI; `OUTPOST_KILLS=50 npx vitest run test/e2e/external-broker.test.ts` for a longer run. */
const KILLS = Number(process.env.OUTPOST_KILLS ?? 6);
const GATEWAY_PASSWORD = 'gw-site-secret-0001';
const childPassword = (id: string): string => `pw-${id}-0001`;
const CHILDREN = ['dev-1', 'dev-2', 'dev-3', 'dev-9'];

/**
 * Debian's Mosquitto as a site broker as docs/operations.md asks for it: persistence, unlimited
 * queues for QoS 1 (`max_queued_messages 0`), no anonymous clients, each child held to its own
 * subtree by the ACL, the gateway allowed to read every child's topics and write their inboxes.
 */
async function siteBroker(dir: string, opts: { port?: number; gatewayPassword?: string } = {}): Promise<Mosquitto> {
  const broker = await Mosquitto.start({
    dir,
    persistence: true,
    ...(opts.port !== undefined ? { port: opts.port } : {}),
    users: { gateway: opts.gatewayPassword ?? GATEWAY_PASSWORD, ...Object.fromEntries(CHILDREN.map((id) => [id, childPassword(id)])) },
    acl: [
      'pattern write outpost/v1/dev/%u/#',
      'pattern read outpost/v1/dev/%u/cmd/#',
      'pattern read outpost/v1/dev/%u/desired/#',
      'user gateway',
      'topic readwrite outpost/v1/dev/#',
    ],
  });
  cleanup.push(() => broker.stop());
  return broker;
}

interface Setup {
  readonly dir: string;
  readonly broker: Mosquitto;
  readonly cloud: SimCloud;
  readonly configFile: string;
}

async function setup(name: string, external: Record<string, unknown> = {}, more: Record<string, unknown> = {}): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), `outpost-${name}-`));
  cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
  const broker = await siteBroker(join(dir, 'mosquitto'));
  const cloud = await SimCloud.start();
  cleanup.push(() => cloud.stop());
  const configFile = join(dir, 'site.yaml');
  writeFileSync(
    configFile,
    stringify({
      gateway: { id: 'ext-gw' },
      broker: { acceptUnknownDevices: true, external: { url: broker.url, username: 'gateway', password: GATEWAY_PASSWORD, backoff: { initialMs: 100, maxMs: 1000 }, ...external } },
      http: { host: '127.0.0.1', port: 0, tokens: TEST_API_TOKENS },
      rules: [{ id: 'all', type: 'filter', match: { device: '*', point: '*' } }],
      cloud: { url: cloud.url, backoff: { initialMs: 100, maxMs: 500 }, lingerMs: 50 },
      storage: { path: join(dir, 'outpost.db') },
      ...more,
    }),
    { mode: 0o600 },
  );
  return { dir, broker, cloud, configFile };
}

async function startGateway(s: Setup): Promise<GatewayProcess> {
  const gw = await GatewayProcess.start(s.configFile);
  cleanup.push(() => gw.kill9());
  return gw;
}

/** One metric's value from the gateway's /metrics (0 when absent). */
async function metric(gw: GatewayProcess, s: Setup, line: string): Promise<number> {
  const api = gatewayApi(gw.httpPort, s.dir);
  const text = await (await api.fetch(`${api.base}/metrics`)).text();
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found === undefined ? 0 : Number(found.slice(line.length + 1));
}

async function siteStatus(gw: GatewayProcess, s: Setup): Promise<{ state: string; refused?: string; sessionPresent?: boolean }> {
  const api = gatewayApi(gw.httpPort, s.dir);
  const body = (await (await api.fetch(`${api.base}/api/v1/status`)).json()) as { siteBroker: { state: string; refused?: string; sessionPresent?: boolean } };
  return body.siteBroker;
}

describe('child intake from an external site broker (Debian Mosquitto)', () => {
  it(`loses nothing a child got a PUBACK for from the site broker, across ${KILLS} gateway kill -9s mid-stream`, { timeout: 60_000 + KILLS * 15_000 }, async () => {
    const s = await setup('ext-kill9');
    // The gateway subscribes first: the site broker keeps messages only for a session that exists.
    let gw = await startGateway(s);
    await waitFor('the site broker link up', async () => (await siteStatus(gw, s)).state === 'up', 10_000, 50);
    const children = CHILDREN.slice(0, 3).map(
      (id) => new SimChildDevice({ url: s.broker.url, deviceId: id, password: childPassword(id), intervalMs: 5, points: { a: { kind: 'counter' }, b: { kind: 'sine', amplitude: 1, periodMs: 1000 } }, maxInFlight: 20 }),
    );
    for (const c of children) c.start();
    cleanup.push(() => Promise.all(children.map((c) => c.kill())));

    let backlogAtRestart = 0;
    for (let k = 0; k < KILLS; k++) {
      const before = s.cloud.ledger.unique;
      await waitFor('readings flowing through the gateway to the cloud', () => s.cloud.ledger.unique > before + 50, 15_000, 20);
      // A random moment mid-stream: children keep publishing to the site broker all along.
      await sleep(Math.floor(Math.random() * 200));
      await gw.kill9();
      // The gateway is away for a while; the site broker queues for its session.
      await sleep(200 + Math.floor(Math.random() * 300));
      const acked = children.reduce((n, c) => n + c.acked.length, 0);
      backlogAtRestart = Math.max(backlogAtRestart, acked - s.cloud.ledger.unique);
      gw = await startGateway(s);
      const st = await siteStatus(gw, s);
      expect(st.state === 'up' ? st.sessionPresent : true).toBe(true);
    }
    for (const c of children) await c.stop();
    const acked = children.flatMap((c) => [...c.acked]);
    expect(acked.length).toBeGreaterThan(KILLS * 100);
    await waitFor('every reading the site broker acknowledged at the cloud', () => s.cloud.ledger.missing(acked).length === 0, 60_000, 100, () => `${s.cloud.ledger.missing(acked).length} missing`);
    const lost = s.cloud.ledger.missing(acked).length;
    expect(lost).toBe(0);
    // Every session was found again: the site broker never dropped what it held for the gateway.
    expect(await metric(gw, s, 'outpost_site_broker_sessions_lost_total')).toBe(0);
    expect((await siteStatus(gw, s)).sessionPresent).toBe(true);
    console.log(
      `external site broker: ${KILLS} gateway kill -9s, ${acked.length} readings acknowledged by Mosquitto, 0 lost, ` +
        `${s.cloud.ledger.duplicates} duplicates at the cloud (deduplicated by reading id), up to ${backlogAtRestart} readings waiting at a restart, ` +
        `${s.cloud.ledger.orderViolations} order violations`,
    );
    expect(await gw.terminate()).toBe(0);
  });

  it('refuses a malformed payload, counts it and acknowledges it: it does not block the queue nor come back after a restart', { timeout: 60_000 }, async () => {
    const s = await setup('ext-poison');
    let gw = await startGateway(s);
    await waitFor('the site broker link up', async () => (await siteStatus(gw, s)).state === 'up', 10_000, 50);
    const dev = mqtt.connect(s.broker.url, { clientId: 'dev-9', username: 'dev-9', password: childPassword('dev-9'), reconnectPeriod: 200 });
    cleanup.push(() => dev.endAsync(true));
    await new Promise<void>((resolve) => dev.once('connect', () => resolve()));
    const topic = 'outpost/v1/dev/dev-9/telemetry';
    await dev.publishAsync(topic, 'this is not json {', { qos: 1 });
    await dev.publishAsync(topic, JSON.stringify({ id: 'bad-1', points: {} }), { qos: 1 });
    await dev.publishAsync(topic, JSON.stringify({ id: 'ok-1', points: { a: 1 } }), { qos: 1 });
    // The site broker refuses what its ACL forbids: a child publishing on another device's topic.
    await dev.publishAsync('outpost/v1/dev/dev-1/telemetry', JSON.stringify({ id: 'forged-1', points: { a: 666 } }), { qos: 1 });
    await waitFor('the valid message behind the malformed ones at the cloud', () => s.cloud.ledger.has('dev-9:ok-1:a'), 15_000, 20);
    expect(await metric(gw, s, 'outpost_child_rejected_total{reason="not-json"}')).toBe(1);
    expect(await metric(gw, s, 'outpost_child_rejected_total{reason="schema"}')).toBe(1);
    expect(await metric(gw, s, 'outpost_site_broker_messages_total{outcome="acknowledged"}')).toBe(3);
    expect(await metric(gw, s, 'outpost_site_broker_messages_total{outcome="not-acknowledged"}')).toBe(0);
    expect(s.cloud.ledger.has('dev-1:forged-1:a')).toBe(false);

    // Acknowledged means gone from the session: a new gateway process gets only what came later.
    expect(await gw.terminate()).toBe(0);
    await dev.publishAsync(topic, JSON.stringify({ id: 'ok-2', points: { a: 2 } }), { qos: 1 });
    gw = await startGateway(s);
    await waitFor('the message published while the gateway was stopped', () => s.cloud.ledger.has('dev-9:ok-2:a'), 15_000, 20);
    expect(await metric(gw, s, 'outpost_child_rejected_total{reason="not-json"}')).toBe(0);
    expect(await metric(gw, s, 'outpost_child_rejected_total{reason="schema"}')).toBe(0);
    expect(await metric(gw, s, 'outpost_site_broker_messages_total{outcome="acknowledged"}')).toBe(1);
    expect(s.cloud.ledger.duplicates).toBe(0);
    expect(await gw.terminate()).toBe(0);
  });

  it('keeps running when the site broker refuses its credentials or is gone, says so in status and metrics, and connects once it can', { timeout: 60_000 }, async () => {
    const s = await setup('ext-refused', { password: 'wrong-password' });
    const gw = await startGateway(s);
    await waitFor('the refusal in the status', async () => (await siteStatus(gw, s)).refused !== undefined, 10_000, 50);
    const st = await siteStatus(gw, s);
    expect(st.state).not.toBe('up');
    expect(st.refused).toMatch(/^CONNACK 5: /);
    expect(await metric(gw, s, 'outpost_site_broker_up')).toBe(0);
    // The site broker goes away altogether: the gateway retries with backoff and stays up.
    await s.broker.stop();
    await sleep(1500);
    expect(gw.proc.exitCode).toBeNull();
    // Back on the same address, with the gateway's password accepted (the operator fixed the account).
    await siteBroker(join(s.dir, 'mosquitto-2'), { port: s.broker.port, gatewayPassword: 'wrong-password' });
    await waitFor('the site broker link up', async () => (await siteStatus(gw, s)).state === 'up', 10_000, 50);
    expect(await metric(gw, s, 'outpost_site_broker_up')).toBe(1);
    expect(await metric(gw, s, 'outpost_site_broker_connects_total')).toBe(1);
    expect(await gw.terminate()).toBe(0);
  });

  it('acknowledges nothing to the site broker that a full store could not take, and gets it all again once space returns', { timeout: 90_000 }, async () => {
    const { dir, cloud, link } = await cloudBehindDeadLink('ext-full', cleanup);
    const broker = await siteBroker(join(dir, 'mosquitto'));
    const config = parseConfig({
      gateway: { id: 'ext-full-gw' },
      broker: { acceptUnknownDevices: true, external: { url: broker.url, username: 'gateway', password: GATEWAY_PASSWORD, backoff: { initialMs: 100, maxMs: 1000 } } },
      http: { host: '127.0.0.1', port: 0 },
      rules: [{ id: 'all', type: 'filter', match: { device: '*', point: '*' } }],
      cloud: { url: link.url, backoff: { initialMs: 100, maxMs: 1000 } },
      // The database file may not grow past 1 MiB: SQLite fails writes as on a full disk.
      storage: { path: join(dir, 'outpost.db'), maxDbBytes: 1024 * 1024, quotaBytes: 64 * 1024 * 1024 },
    });
    const gw = await Gateway.start(config, { log: createLogger({ level: 'silent' }) });
    cleanup.push(() => gw.stop());
    await waitFor('the site broker link up', () => gw.status().siteBroker?.state === 'up', 10_000, 20);
    const children = CHILDREN.slice(0, 3).map(
      (id) => new SimChildDevice({ url: broker.url, deviceId: id, password: childPassword(id), intervalMs: 5, points: { a: { kind: 'counter' }, b: { kind: 'sine', amplitude: 1, periodMs: 1000 } }, maxInFlight: 20 }),
    );
    for (const c of children) c.start();
    cleanup.push(() => Promise.all(children.map((c) => c.kill())));
    const notAcked = (): Promise<number> => gw.metrics.total('outpost_site_broker_messages_total').then(async (all) => all - (await acknowledged()));
    const acknowledged = async (): Promise<number> => {
      const text = await gw.metrics.text();
      const line = text.split('\n').find((l) => l.startsWith('outpost_site_broker_messages_total{outcome="acknowledged"} '));
      return line === undefined ? 0 : Number(line.split(' ')[1]);
    };
    await waitFor('the store to be full and messages left to the site broker', async () => (await notAcked()) > 0, 45_000, 50);
    // Full for a second: the site broker keeps taking the children's messages, the gateway acknowledges none.
    const ackedWhenFull = await acknowledged();
    await sleep(1000);
    expect(await acknowledged()).toBe(ackedWhenFull);
    expect(gw.status().outbox.dropped).toBe(0);

    // Space returns when the outbox drains to the cloud; the site broker delivers what it kept.
    link.restore();
    await waitFor('intake to resume', async () => (await acknowledged()) > ackedWhenFull + 300, 30_000, 50);
    for (const c of children) await c.stop();
    const acked = children.flatMap((c) => [...c.acked]);
    await waitFor('every reading the site broker acknowledged at the cloud', () => cloud.ledger.missing(acked).length === 0, 45_000, 100, () => `${cloud.ledger.missing(acked).length} missing`);
    expect(gw.status().outbox.dropped).toBe(0);
    console.log(`external site broker, full store: ${await notAcked()} deliveries left unacknowledged while full, ${acked.length} readings acknowledged by Mosquitto, 0 lost, ${cloud.ledger.duplicates} duplicates at the cloud`);
  });

  it('twins and calls reach children through the site broker: births, desired documents, reported state, call answers', { timeout: 60_000 }, async () => {
    const s = await setup('ext-twins', {}, { configurations: [{ id: 'eco', target: 'model = "V-2"', desired: { mode: 'eco' } }] });
    const gw = await startGateway(s);
    await waitFor('the site broker link up', async () => (await siteStatus(gw, s)).state === 'up', 10_000, 50);
    const child = new SimTwinChild({ url: s.broker.url, deviceId: 'dev-9', password: childPassword('dev-9'), attributes: { model: 'V-2' } });
    await child.start();
    cleanup.push(() => child.kill());
    // Its birth (on the site broker) puts it in the inventory; the configuration targets it and
    // its desired document comes back through the site broker; it applies and reports it.
    await waitFor('the desired document at the child', () => child.applied.length > 0, 15_000, 20);
    expect(child.desired).toEqual({ mode: 'eco' });
    const api = gatewayApi(gw.httpPort, s.dir);
    await waitFor(
      'the reported version at the gateway',
      async () => {
        const d = (await (await api.fetch(`${api.base}/api/v1/devices/dev-9`)).json()) as { online?: boolean; applied?: { version: number }; reported?: Record<string, unknown> };
        return d.online === true && d.applied?.version === child.version && d.reported?.mode === 'eco';
      },
      15_000,
      50,
    );
    // A call from the API: published to the site broker, answered by the child on its response topic.
    const res = await api.fetch(`${api.base}/api/v1/devices/dev-9/calls`, json({ method: 'reboot', payload: { delayS: 1 }, timeoutMs: 5000 }));
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 200, payload: { method: 'reboot', echo: { delayS: 1 } } });
    expect(await gw.terminate()).toBe(0);
  });

  it('keeps the site broker credentials out of the log (trace included), the status and the metrics', { timeout: 60_000 }, async () => {
    const MARKER = 'S3CR3T';
    const dir = mkdtempSync(join(tmpdir(), 'outpost-ext-secrets-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const broker = await Mosquitto.start({ dir: join(dir, 'mosquitto'), users: { gateway: `${MARKER}-pw` }, acl: ['user gateway', 'topic readwrite outpost/v1/dev/#'] });
    cleanup.push(() => broker.stop());
    const logFile = join(dir, 'gateway.log');
    const seen: string[] = [];
    // Credentials in the URL's user info (accepted), then in `password` (refused by the broker).
    for (const [i, external] of [
      { url: `mqtt://gateway:${MARKER}-pw@127.0.0.1:${broker.port}` },
      { url: broker.url, username: 'gateway', password: `${MARKER}-wrong` },
    ].entries()) {
      const config = parseConfig({
        gateway: { id: `ext-secrets-${i}` },
        broker: { external: { ...external, backoff: { initialMs: 100, maxMs: 200 } } },
        http: { host: '127.0.0.1', port: 0, tokens: TEST_API_TOKENS },
        cloud: { url: 'mqtt://127.0.0.1:9' },
        storage: { path: join(dir, `outpost-${i}.db`) },
      });
      const gw = await Gateway.start(config, { log: createLogger({ level: 'trace', destination: logFile }) });
      cleanup.push(() => gw.stop());
      await waitFor('the site broker answered', () => gw.status().siteBroker?.state === 'up' || gw.status().siteBroker?.refused !== undefined, 10_000, 20);
      expect(gw.status().siteBroker?.state).toBe(i === 0 ? 'up' : 'down');
      await sleep(500);
      seen.push(JSON.stringify(gw.status()), await gw.metrics.text());
      const api = gatewayApi(gw.ports.http, dir);
      seen.push(await (await api.fetch(`${api.base}/api/v1/status`)).text());
      await gw.stop();
    }
    seen.push(readFileSync(logFile, 'utf8'));
    expect(seen[seen.length - 1]).toMatch(/site broker link up/);
    expect(seen[seen.length - 1]).toMatch(/the site broker refused the gateway/);
    for (const text of seen) expect(text).not.toContain(MARKER);
  });

  it('rolls back a deployed config whose site broker credentials are refused, and the link comes back on the old ones', { timeout: 90_000 }, async () => {
    const s = await setup('ext-deploy', {}, { deploy: { healthWindowMs: 5000 } });
    const gw = await startGateway(s);
    await waitFor('the site broker link up', async () => (await siteStatus(gw, s)).state === 'up', 10_000, 50);
    const current = readFileSync(s.configFile, 'utf8');
    const wrong = join(s.dir, 'wrong.yaml');
    writeFileSync(wrong, current.replace(`password: ${GATEWAY_PASSWORD}`, 'password: not-the-password'), { mode: 0o600 });
    expect(readFileSync(wrong, 'utf8')).toContain('not-the-password');
    const env = { ...process.env, OUTPOST_URL: `https://127.0.0.1:${gw.httpPort}`, OUTPOST_CA: join(s.dir, 'http.crt'), OUTPOST_TOKEN: TEST_TOKENS.admin };
    const failed = await promisify(execFile)(process.execPath, [CLI, 'config', 'deploy', wrong], { env, timeout: 60_000 }).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code?: number; stderr?: string }) => ({ code: err.code ?? -1, stderr: err.stderr ?? '' }),
    );
    expect(failed.stderr).toMatch(/failed: the site broker refused the connection \(CONNACK 5/);
    expect(failed.code).toBe(1);
    await waitFor('the site broker link up again on the version before', async () => (await siteStatus(gw, s)).state === 'up', 15_000, 50);
    expect(await gw.terminate()).toBe(0);
  });
});
