import { Aedes, type AuthorizePublishHandler } from 'aedes';
import mqtt from 'mqtt';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { outboxMigrations, SqliteOutbox } from '../../cloud-bridge/outbox.js';
import { Uplink, type UplinkOptions } from '../../cloud-bridge/uplink.js';
import { cloudTopics, decodeUplinkPayload, makeEnvelope, systemClock, type Clock, type Envelope } from '../../runtime/contracts/index.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { migrate, openDatabase, type Db } from '../../runtime/store/database.js';
import { runtimeMigrations } from '../../runtime/store/runtime-schema.js';
import { ManualClock, silentLogger } from '../helpers/fakes.js';
import { sleep, waitFor } from '../helpers/wait.js';

const cleanup: Array<() => Promise<unknown> | void> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** What the cloud broker does with an uplink batch. */
type Verdict = 'ack' | 'refuse' | 'hold';

/** An in-process cloud broker on port 0 that records the readings it acknowledged, with a hook deciding each batch. */
async function cloudBroker(decide: (readings: Envelope[]) => Verdict = () => 'ack', port = 0): Promise<{ url: string; received: Envelope[]; held: Array<() => void>; close(): Promise<void> }> {
  const aedes = await Aedes.createBroker();
  const received: Envelope[] = [];
  const held: Array<() => void> = [];
  const authorize: AuthorizePublishHandler = (_client, packet, callback) => {
    if (!packet.topic.endsWith('/telemetry')) return callback(null);
    const readings = (decodeUplinkPayload(Buffer.from(packet.payload)) as { readings: Envelope[] }).readings;
    const verdict = decide(readings);
    if (verdict === 'refuse') return callback(new Error('refused'));
    const ack = (): void => {
      received.push(...readings);
      callback(null);
    };
    if (verdict === 'hold') held.push(ack);
    else ack();
  };
  aedes.authorizePublish = authorize;
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    aedes.handle(s);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    url: `mqtt://127.0.0.1:${(server.address() as AddressInfo).port}`,
    received,
    held,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
    },
  };
}

function memoryOutbox(): { db: Db; outbox: SqliteOutbox } {
  const db = openDatabase({ path: ':memory:', synchronous: 'normal' });
  migrate(db, 'runtime', runtimeMigrations);
  migrate(db, 'outbox', outboxMigrations);
  cleanup.push(() => void db.close());
  return { db, outbox: new SqliteOutbox(db, 64 * 1024 * 1024, new PromMetrics()) };
}

const reading = (i: number, value: Envelope['value'] = i): Envelope => makeEnvelope({ id: `r${i}`, device: 'd', point: 'p', value, quality: 'good', ts: 1_700_000_000_000 + i, seq: i });

function options(url: string, more: Partial<UplinkOptions> = {}): UplinkOptions {
  return {
    gatewayId: 'gw',
    url,
    clientId: 'outpost-gw',
    topicPrefix: 'outpost',
    batchSize: 8,
    maxInFlight: 4,
    keepaliveS: 30,
    backoff: { initialMs: 20, maxMs: 100 },
    compression: 'none',
    qos: 1,
    protocolVersion: 4,
    maxAttempts: 2,
    liveShare: 0,
    lingerMs: 0,
    netWatchMs: 0,
    ...more,
  };
}

function start(opts: UplinkOptions, outbox: SqliteOutbox, clock: Clock = systemClock): Uplink {
  const uplink = new Uplink(opts, outbox, clock, silentLogger, new PromMetrics());
  cleanup.push(() => uplink.stop());
  return uplink;
}

function append(db: Db, outbox: SqliteOutbox, readings: readonly Envelope[], now = Date.now()): void {
  db.transaction(() => outbox.append(readings.map((envelope) => ({ envelope, stream: 'telemetry' })), now))();
  outbox.committed();
}

describe('uplink', () => {
  it('deletes rows only after the cloud broker acknowledged their batch', async () => {
    const cloud = await cloudBroker(() => 'hold');
    cleanup.push(() => cloud.close());
    const { db, outbox } = memoryOutbox();
    append(db, outbox, [1, 2, 3].map((i) => reading(i)));
    const uplink = start(options(cloud.url), outbox);
    await uplink.start();
    await waitFor('a batch at the broker', () => cloud.held.length === 1);
    await sleep(100);
    expect(outbox.stats().depth).toBe(3);
    cloud.held.shift()!();
    await waitFor('the rows deleted', () => outbox.stats().depth === 0);
    expect(cloud.received.map((r) => r.id)).toEqual(['r1', 'r2', 'r3']);
    expect(outbox.stats()).toMatchObject({ delivered: 3 });
  });

  it('isolates a reading the broker keeps refusing and dead-letters it, delivering every other reading', async () => {
    const cloud = await cloudBroker((readings) => (readings.some((r) => r.value === 'poison') ? 'refuse' : 'ack'));
    cleanup.push(() => cloud.close());
    const { db, outbox } = memoryOutbox();
    append(db, outbox, Array.from({ length: 20 }, (_, i) => reading(i, i === 7 ? 'poison' : i)));
    const uplink = start(options(cloud.url, { random: () => 0 }), outbox);
    await uplink.start();
    await waitFor('the poison reading isolated', () => outbox.deadLetterCount() === 1 && outbox.stats().depth === 0, 20_000);
    expect(outbox.listDeadLetters().map((d) => (JSON.parse(d.body) as Envelope).id)).toEqual(['r7']);
    expect(new Set(cloud.received.map((r) => r.id)).size).toBe(19);
    expect(outbox.stats()).toMatchObject({ deadLettered: 1, delivered: 19 });
  });

  it('lingers a batch that is not full until its oldest reading is lingerMs old', async () => {
    const cloud = await cloudBroker();
    cleanup.push(() => cloud.close());
    const { db, outbox } = memoryOutbox();
    const clock = new ManualClock(1_000_000);
    const uplink = start(options(cloud.url, { lingerMs: 5000 }), outbox, clock);
    await uplink.start();
    await waitFor('the link up', () => uplink.linkState === 'up');
    append(db, outbox, [reading(1), reading(2)], clock.now());
    uplink.notify();
    await sleep(200);
    expect(cloud.received).toEqual([]);
    await clock.advance(4999);
    await sleep(100);
    expect(cloud.received).toEqual([]);
    await clock.advance(1);
    await waitFor('the partial batch sent', () => cloud.received.length === 2);
  });

  it('reconnects on the injected clock after the backoff, and resends what was not acknowledged', async () => {
    const first = await cloudBroker(() => 'hold');
    const port = Number(new URL(first.url).port);
    const { db, outbox } = memoryOutbox();
    append(db, outbox, [reading(1), reading(2)]);
    const clock = new ManualClock(Date.now());
    // Full jitter drawn at its top: the wait is just under the 1 s ceiling.
    const uplink = start(options(first.url, { backoff: { initialMs: 1000, maxMs: 1000 }, random: () => 0.999 }), outbox, clock);
    await uplink.start();
    await waitFor('a batch at the broker', () => first.held.length === 1);
    await first.close();
    await waitFor('the link down', () => uplink.linkState === 'down');
    const again = await cloudBroker(() => 'ack', port);
    cleanup.push(() => again.close());
    await sleep(300);
    expect(again.received).toEqual([]);
    await clock.advance(998);
    await sleep(100);
    expect(uplink.linkState).toBe('down');
    await clock.advance(1);
    await waitFor('every reading delivered', () => outbox.stats().depth === 0, 10_000);
    expect(again.received.map((r) => r.id)).toEqual(['r1', 'r2']);
    // Stopped while the broker is up: the offline status waits on the (manual) clock otherwise.
    await uplink.stop();
  });

  it('delivers what the outbox holds when stopped with a drain time, then publishes offline and holds no timer', async () => {
    const cloud = await cloudBroker();
    cleanup.push(() => cloud.close());
    const { db, outbox } = memoryOutbox();
    const clock = new ManualClock(Date.now());
    const uplink = start(options(cloud.url, { syncWindows: [], backoff: { initialMs: 50, maxMs: 50 } }), outbox, clock);
    await uplink.start();
    await waitFor('the link up', () => uplink.linkState === 'up');
    append(db, outbox, Array.from({ length: 30 }, (_, i) => reading(i)), clock.now());
    uplink.notify();
    const status = await mqtt.connectAsync(cloud.url, { reconnectPeriod: 0 });
    cleanup.push(() => status.endAsync(true));
    const seen: string[] = [];
    status.on('message', (_t, p) => seen.push(p.toString()));
    await status.subscribeAsync(cloudTopics.status('outpost', 'gw'), { qos: 1 });
    await uplink.stop({ drainMs: 10_000 });
    expect(outbox.stats().depth).toBe(0);
    expect(cloud.received).toHaveLength(30);
    await waitFor('offline published', () => seen.includes('{"state":"offline"}'));
    expect(uplink.linkState).toBe('stopped');
    expect(clock.pending).toBe(0);
  });
});
