import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EmbeddedBroker } from '../../runtime/broker/embedded-broker.js';
import type { brokerSchema } from '../../runtime/broker/config.js';
import { systemClock } from '../../runtime/contracts/index.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { createCa, issue, selfSigned } from '../../runtime/security/certificates.js';
import { attemptConnect, brokerAccess, deviceCredentials } from '../helpers/broker-access.js';
import { silentLogger } from '../helpers/fakes.js';
import { waitFor } from '../helpers/wait.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

type BrokerInput = Partial<Parameters<typeof brokerSchema.parse>[0]>;
type BrokerAccessOptions = NonNullable<Parameters<typeof brokerAccess>[0]>;

async function broker(b: BrokerInput = {}, identities?: BrokerAccessOptions['identities']): Promise<{ broker: EmbeddedBroker; url: string; port: number; metrics: PromMetrics }> {
  const metrics = new PromMetrics();
  const bk = new EmbeddedBroker(brokerAccess({ broker: b, ...(identities ? { identities } : {}) }));
  await bk.start({ clock: systemClock, log: silentLogger, metrics });
  const port = await bk.listen('127.0.0.1', 0);
  cleanup.push(() => bk.close());
  return { broker: bk, url: `mqtt://127.0.0.1:${port}`, port, metrics };
}

/** Connected, or rejected when the broker refuses (CONNACK) or closes the connection before answering. */
function attempt(url: string, opts: IClientOptions): Promise<MqttClient> {
  return attemptConnect(url, opts, (c) => cleanup.push(() => c.endAsync(true)));
}

function device(url: string, id: string, opts: IClientOptions = {}): Promise<MqttClient> {
  return attempt(url, { ...deviceCredentials(id), ...opts });
}

const refused = (metrics: PromMetrics, cause: string): Promise<number> =>
  metrics.text().then((t) => Number(new RegExp(`outpost_broker_refused_total\\{cause="${cause}"\\} (\\d+)`).exec(t)?.[1] ?? 0));

describe('broker limits', () => {
  it('refuses a packet over maxPacketBytes from its header: a 120 MiB PUBLISH is cut after a few bytes, not buffered', async () => {
    const { url, port, metrics } = await broker({ limits: { maxPacketBytes: 64 * 1024 } });
    const mqttPacket = (await import('mqtt-packet')).default;
    const creds = deviceCredentials('big-1');
    const socket = tcpConnect(port, '127.0.0.1');
    cleanup.push(() => Promise.resolve(socket.destroy()));
    await new Promise<void>((r) => socket.once('connect', () => r()));
    socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 30, clientId: creds.clientId, username: creds.username, password: Buffer.from(creds.password) }));
    await new Promise<void>((r) => socket.once('data', () => r()));
    // The fixed header of a PUBLISH announcing 120 MiB (remaining length as a variable byte integer).
    let len = 120 * 1024 * 1024;
    const header = [0x30];
    do {
      let b = len % 128;
      len = Math.floor(len / 128);
      if (len > 0) b |= 0x80;
      header.push(b);
    } while (len > 0);
    let sent = 0;
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.on('error', () => undefined);
    socket.write(Buffer.from(header));
    const chunk = Buffer.alloc(64 * 1024);
    // Keep sending as an attacker would; the broker closes the connection.
    while (!socket.destroyed && sent < 120 * 1024 * 1024) {
      if (!socket.write(chunk)) await Promise.race([new Promise((r) => socket.once('drain', r)), closed]);
      sent += chunk.length;
    }
    await closed;
    expect(sent).toBeLessThan(16 * 1024 * 1024);
    expect(await refused(metrics, 'packet-too-large')).toBe(1);
    // The broker serves the next device.
    const ok = await device(url, 'after-1');
    await ok.publishAsync('outpost/v1/dev/after-1/telemetry', '{"points":{"x":1}}', { qos: 1 });
  });

  it('bounds connections per source address and per listener, refusing the excess at once', async () => {
    const { url, metrics } = await broker({ limits: { maxConnectionsPerAddress: 3, maxConnections: 5 } });
    for (let i = 0; i < 3; i++) await device(url, `addr-${i}`);
    await expect(device(url, 'addr-3')).rejects.toThrow();
    expect(await refused(metrics, 'too-many-from-address')).toBe(1);
  });

  it('listens with a backlog sized for a connection storm, not Node\'s 511: a site\'s children reconnecting at once are queued by the kernel, not dropped', async () => {
    const { port } = await broker({ limits: { maxConnections: 3000 } });
    const somaxconn = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8'));
    // A listening socket's Send-Q in `ss -lnt` is its backlog.
    const line = execFileSync('ss', ['-Hlnt', `sport = :${port}`], { encoding: 'utf8' }).trim();
    const backlog = Number(line.split(/\s+/)[2]);
    expect(backlog).toBe(Math.min(3000, somaxconn));
  });

  it('refuses new connections while the heap is nearly full, instead of running out of it; takes them again once there is room', async () => {
    let heap = 0.5;
    const metrics = new PromMetrics();
    const bk = new EmbeddedBroker({ ...brokerAccess(), heapInUse: () => heap });
    await bk.start({ clock: systemClock, log: silentLogger, metrics });
    const url = `mqtt://127.0.0.1:${await bk.listen('127.0.0.1', 0)}`;
    cleanup.push(() => bk.close());
    const first = await device(url, 'heap-1');
    heap = 0.9;
    await expect(device(url, 'heap-2')).rejects.toThrow();
    expect(await refused(metrics, 'memory')).toBe(1);
    // Those already connected keep working.
    await first.publishAsync('outpost/v1/dev/heap-1/telemetry', '{"points":{"x":1}}', { qos: 1 });
    heap = 0.6;
    await device(url, 'heap-2');
    expect(bk.connectedClients).toBe(2);
  });

  it('staggers a connection storm with a clear refusal (server unavailable) that devices retry: 300 devices at once, all in', async () => {
    const { broker: bk, url, metrics } = await broker({ limits: { connectRate: { perSecond: 150, burst: 50 }, maxConnectionsPerAddress: 1000 } });
    const clients = Array.from({ length: 300 }, (_, i) => {
      // A device retries a refused CONNECT after its own (jittered) delay.
      const c = mqtt.connect(url, { ...deviceCredentials(`storm-${i}`), reconnectPeriod: 300 + Math.floor(Math.random() * 400), reconnectOnConnackError: true, connectTimeout: 5000 });
      c.on('error', () => undefined);
      cleanup.push(() => c.endAsync(true));
      return c;
    });
    await waitFor('every device connected', () => clients.every((c) => c.connected), 30_000, 100, () => `${clients.filter((c) => c.connected).length} of 300`);
    expect(bk.connectedClients).toBe(300);
    expect(await refused(metrics, 'connect-rate')).toBeGreaterThan(0);
  });

  it('refuses retained messages over maxRetainedBytes and new retained topics past maxRetained', async () => {
    const { metrics, url } = await broker({ limits: { maxRetained: 2, maxRetainedBytes: 100 } });
    const d = await device(url, 'ret-1');
    await d.publishAsync('outpost/v1/dev/ret-1/a', 'x', { qos: 1, retain: true });
    await d.publishAsync('outpost/v1/dev/ret-1/b', 'x', { qos: 1, retain: true });
    // Replacing an existing retained topic is fine; a third topic is not.
    await d.publishAsync('outpost/v1/dev/ret-1/a', 'y', { qos: 1, retain: true });
    const closed = new Promise<void>((r) => d.once('close', () => r()));
    d.publish('outpost/v1/dev/ret-1/c', 'x', { qos: 1, retain: true });
    await closed;
    expect(await refused(metrics, 'too-many-retained')).toBe(1);
    const e = await device(url, 'ret-2');
    const closedE = new Promise<void>((r) => e.once('close', () => r()));
    e.publish('outpost/v1/dev/ret-2/a', 'z'.repeat(101), { qos: 1, retain: true });
    await closedE;
    expect(await refused(metrics, 'retained-too-large')).toBe(1);
  });

  it('slows a device over its publish rate by withholding PUBACKs, losing nothing', async () => {
    const { url, metrics, broker: bk } = await broker({ limits: { publishRate: { perSecond: 50, burst: 10 } } });
    let seen = 0;
    bk.intercept(() => {
      seen++;
      return Promise.resolve();
    });
    const d = await device(url, 'fast-1');
    await Promise.all(Array.from({ length: 60 }, (_, i) => d.publishAsync('outpost/v1/dev/fast-1/telemetry', `{"points":{"n":${i}}}`, { qos: 1 })));
    expect(seen).toBe(60);
    expect(await refused(metrics, 'publish-rate')).toBeGreaterThan(0);
  });

  it('keeps the keepalive within its range: a client asking for none (0) is still timed out when silent', async () => {
    const { url } = await broker({ limits: { minKeepaliveS: 1, maxKeepaliveS: 1 } });
    const d = await device(url, 'silent-1', { keepalive: 0 });
    // It never pings; the broker's timer (1.5 × the 1 s ceiling) closes the connection.
    await new Promise<void>((r) => d.once('close', () => r()));
  });

  it('bounds subscriptions per client', async () => {
    const { url } = await broker({ limits: { maxSubscriptionsPerClient: 2 } });
    const d = await device(url, 'subs-1');
    await d.subscribeAsync('outpost/v1/dev/subs-1/cmd/a', { qos: 1 });
    await d.subscribeAsync('outpost/v1/dev/subs-1/cmd/b', { qos: 1 });
    await expect(d.subscribeAsync('outpost/v1/dev/subs-1/cmd/c', { qos: 1 })).rejects.toThrow();
  });

  it('refuses client ids that are not identities: "/", "+", "#", NUL, over the bound, empty', async () => {
    const { url } = await broker();
    for (const clientId of ['a/b', 'dev+', '#', 'dev\u0000x', 'd'.repeat(65)]) {
      await expect(mqtt.connectAsync(url, { clientId, username: clientId, password: 'x', reconnectPeriod: 0, connectTimeout: 3000 }), clientId).rejects.toThrow(/Identifier rejected/);
    }
    await expect(attempt(url, { clientId: '', clean: true })).rejects.toThrow();
  });
});

describe('broker over TLS', () => {
  async function tlsBroker(requireCertificate: boolean, identities: BrokerAccessOptions['identities'], ca?: string): Promise<{ port: number; serverCert: string }> {
    const server = await selfSigned('outpost-test', ['127.0.0.1', 'localhost']);
    const bk = new EmbeddedBroker(brokerAccess({ identities }));
    await bk.start({ clock: systemClock, log: silentLogger, metrics: new PromMetrics() });
    cleanup.push(() => bk.close());
    const port = await bk.listenTls('127.0.0.1', 0, { cert: server.cert, key: server.key, ...(ca ? { ca: [ca] } : {}) }, { requireCertificate, verifiesChains: ca !== undefined });
    return { port, serverCert: server.cert };
  }

  it('mTLS: a device certificate from the group CA identifies the device (CN = client id); another CN, no certificate or a foreign CA are refused', async () => {
    const siteCa = await createCa('site-ca');
    const otherCa = await createCa('other-ca');
    const dir = mkdtempSync(join(tmpdir(), 'outpost-mtls-'));
    writeFileSync(join(dir, 'ca.crt'), siteCa.cert);
    const { port, serverCert } = await tlsBroker(true, { groups: [{ name: 'valves', devices: 'valve-*', caFile: join(dir, 'ca.crt') }] }, siteCa.cert);
    const url = `mqtts://127.0.0.1:${port}`;
    const good = await issue(siteCa, 'valve-1');
    const c = await mqtt.connectAsync(url, { clientId: 'valve-1', cert: good.cert, key: good.key, ca: serverCert, reconnectPeriod: 0, connectTimeout: 3000 });
    await c.publishAsync('outpost/v1/dev/valve-1/telemetry', '{"points":{"open":true}}', { qos: 1 });
    await c.endAsync();
    // The certificate says valve-1; the client id claims valve-2.
    await expect(mqtt.connectAsync(url, { clientId: 'valve-2', cert: good.cert, key: good.key, ca: serverCert, reconnectPeriod: 0, connectTimeout: 3000 })).rejects.toThrow(/Not authorized/);
    // A certificate outside the group's pattern, and one from another CA.
    const outside = await issue(siteCa, 'pump-1');
    await expect(mqtt.connectAsync(url, { clientId: 'pump-1', cert: outside.cert, key: outside.key, ca: serverCert, reconnectPeriod: 0, connectTimeout: 3000 })).rejects.toThrow(/Not authorized/);
    const foreign = await issue(otherCa, 'valve-3');
    await expect(mqtt.connectAsync(url, { clientId: 'valve-3', cert: foreign.cert, key: foreign.key, ca: serverCert, reconnectPeriod: 0, connectTimeout: 3000 })).rejects.toThrow(/Not authorized/);
    // No certificate at all on a listener that requires one: the connection is closed.
    await expect(attempt(url, { ...deviceCredentials('valve-4'), ca: serverCert })).rejects.toThrow();
  });

  it('a pinned certificate (certSha256) identifies its device without a CA; a password works over TLS too', async () => {
    const pinned = await selfSigned('meter-9', ['meter-9']);
    const { fingerprint } = await import('../../runtime/security/certificates.js');
    const { hashPassword } = await import('../../runtime/identity/passwords.js');
    const { port, serverCert } = await tlsBroker(false, {
      devices: [
        { id: 'meter-9', certSha256: fingerprint(pinned.cert) },
        { id: 'meter-10', passwordHash: await hashPassword('correct horse battery', { ln: 10 }) },
      ],
    });
    const url = `mqtts://127.0.0.1:${port}`;
    const c = await mqtt.connectAsync(url, { clientId: 'meter-9', cert: pinned.cert, key: pinned.key, ca: serverCert, reconnectPeriod: 0 });
    await c.endAsync();
    const p = await mqtt.connectAsync(url, { clientId: 'meter-10', username: 'meter-10', password: 'correct horse battery', ca: serverCert, reconnectPeriod: 0 });
    await p.endAsync();
    await expect(mqtt.connectAsync(url, { clientId: 'meter-10', username: 'meter-10', password: 'wrong', ca: serverCert, reconnectPeriod: 0, connectTimeout: 3000 })).rejects.toThrow(/Bad username or password/);
    const other = await selfSigned('meter-9', ['meter-9']);
    await expect(mqtt.connectAsync(url, { clientId: 'meter-9', cert: other.cert, key: other.key, ca: serverCert, reconnectPeriod: 0, connectTimeout: 3000 })).rejects.toThrow(/Not authorized/);
  });
});
