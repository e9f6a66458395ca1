import { afterEach, describe, expect, it } from 'vitest';
import { Uplink, type UplinkOptions } from '../../cloud-bridge/uplink.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { noneLeftSince, openHandles } from '../contracts/open-handles.js';
import { ManualClock, silentLogger } from '../helpers/fakes.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { AedesCloud, MemoryOutbox, Mqtt5Cloud, uplinkOptions } from './uplink-peers.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const ids = (prefix: string, n: number, from = 0): string[] => Array.from({ length: n }, (_, i) => `${prefix}${from + i}`);

const options = uplinkOptions;

async function aedesCloud(): Promise<AedesCloud> {
  const cloud = await AedesCloud.start();
  cleanup.push(() => cloud.close());
  return cloud;
}

function uplink(opts: UplinkOptions, outbox: MemoryOutbox, clock: ManualClock): Uplink {
  const u = new Uplink(opts, outbox, clock, silentLogger, new PromMetrics());
  cleanup.push(() => u.stop());
  return u;
}

/** Nothing more happens for a while (real time: the broker and the client run on it). */
const settle = (): Promise<void> => sleep(80);

describe('uplink', () => {
  it('deletes rows from the outbox only after the cloud broker acknowledged their batch', async () => {
    const cloud = await aedesCloud();
    const clock = new ManualClock();
    const outbox = new MemoryOutbox();
    outbox.add('telemetry', ids('r', 25), clock.now());
    cloud.holdAcks();
    const u = uplink(options(cloud.url), outbox, clock);
    await u.start();
    // One batch in flight on a new connection; it reached the broker, its PUBACK is held.
    await waitFor('the first batch at the broker', () => cloud.heldAcks === 1);
    await settle();
    expect(cloud.readings).toEqual(ids('r', 10));
    expect(outbox.held()).toHaveLength(25);
    cloud.ackHeld();
    await waitFor('the acknowledged rows to leave', () => outbox.held().length === 15);
    expect(outbox.held()).toEqual(ids('r', 15, 10));
    // The window grew: the other two batches go together, and stay until acknowledged.
    await waitFor('the next batches at the broker', () => cloud.heldAcks === 2);
    await settle();
    expect(outbox.held()).toHaveLength(15);
    cloud.releaseAcks();
    await waitFor('an empty outbox', () => outbox.held().length === 0);
    expect(cloud.readings).toEqual(ids('r', 25));
    expect(u.linkState).toBe('up');
  });

  it('reconnects after the backoff on the injected clock, doubling its ceiling, and sends the unacknowledged batch again', async () => {
    const cloud = await aedesCloud();
    const clock = new ManualClock();
    const outbox = new MemoryOutbox();
    outbox.add('telemetry', ids('r', 25), clock.now());
    cloud.holdAcks();
    const u = uplink(options(cloud.url), outbox, clock);
    await u.start();
    await waitFor('the first batch at the broker', () => cloud.heldAcks === 1);

    // The link breaks with the batch unacknowledged, and stays broken for the first attempt.
    cloud.refuseConnections = true;
    cloud.dropConnections();
    await waitFor('the link down', () => u.linkState === 'down');
    const attempts = cloud.connections;
    await clock.advance(499);
    await settle();
    expect(cloud.connections).toBe(attempts);
    await clock.advance(1);
    await waitFor('the first attempt', () => cloud.connections === attempts + 1);
    await waitFor('the link down again', () => u.linkState === 'down');
    // The second wait is twice as long (full jitter at 0.5 of a doubled ceiling).
    await clock.advance(999);
    await settle();
    expect(cloud.connections).toBe(attempts + 1);
    cloud.refuseConnections = false;
    cloud.releaseAcks();
    await clock.advance(1);
    await waitFor('the link up', () => u.linkState === 'up');
    await waitFor('an empty outbox', () => outbox.held().length === 0);
    // Nothing lost; the first batch went twice (the cloud deduplicates by reading id).
    expect(new Set(cloud.readings)).toEqual(new Set(ids('r', 25)));
    expect(cloud.readings.slice(0, 20)).toEqual([...ids('r', 10), ...ids('r', 10)]);
  });

  it('bisects a batch the broker refuses with an MQTT 5 reason code, then dead-letters the bad reading after maxAttempts refusals alone', async () => {
    // 0x99: payload format invalid, for the batch that holds the reading `bad`.
    const cloud = await Mqtt5Cloud.start((batch) => (batch.readings.some((r) => r.id === 'bad') ? 0x99 : 0));
    cleanup.push(() => cloud.close());
    const clock = new ManualClock();
    const outbox = new MemoryOutbox();
    outbox.add('telemetry', ['bad', ...ids('r', 9)], clock.now());
    const u = uplink(options(cloud.url, { protocolVersion: 5, batchSize: 8, maxAttempts: 2 }), outbox, clock);
    await u.start();
    await waitFor('the bad reading dead-lettered', () => outbox.deadLetters.length === 1, 5000, 10, () => JSON.stringify(cloud.refused.map((r) => r.batch.readings.length)));
    expect(cloud.refused.map((r) => r.batch.readings.length)).toEqual([8, 4, 2, 1, 1]);
    expect(cloud.refused.every((r) => r.reasonCode === 0x99)).toBe(true);
    expect(outbox.deadLetters[0]).toMatchObject({ stream: 'telemetry', id: 'bad' });
    expect(outbox.deadLetters[0]!.reason).toMatch(/refused by the cloud broker.*0x99/);
    // The stream goes on without it.
    await waitFor('the rest delivered', () => outbox.held().length === 0, 5000, 10);
    expect(new Set(cloud.readings)).toEqual(new Set(ids('r', 9)));
  });

  it('dead-letters a reading over which the broker drops the connection, after maxAttempts lost connections alone', async () => {
    const cloud = await aedesCloud();
    cloud.refuse = (batch) => batch.readings.some((r) => r.id === 'bad');
    const clock = new ManualClock();
    const outbox = new MemoryOutbox();
    outbox.add('telemetry', [...ids('r', 3), 'bad', ...ids('r', 4, 3)], clock.now());
    // No jitter: every reconnect is due at once on the injected clock.
    const u = uplink(options(cloud.url, { batchSize: 4, maxAttempts: 2, random: () => 0 }), outbox, clock);
    await u.start();
    await waitFor(
      'the bad reading dead-lettered',
      async () => {
        await clock.advance(0);
        return outbox.deadLetters.length === 1;
      },
      10_000,
      10,
    );
    expect(outbox.deadLetters[0]).toMatchObject({ id: 'bad' });
    expect(outbox.deadLetters[0]!.reason).toMatch(/connection lost/);
    await waitFor('the rest delivered', async () => {
      await clock.advance(0);
      return outbox.held().length === 0;
    });
    expect(new Set(cloud.readings)).toEqual(new Set(ids('r', 7)));
  });

  it('holds a batch that is not full until its oldest reading is lingerMs old; a full batch goes at once', async () => {
    const cloud = await aedesCloud();
    const clock = new ManualClock();
    clock.t = 1_000_000;
    const outbox = new MemoryOutbox();
    const u = uplink(options(cloud.url, { lingerMs: 5000 }), outbox, clock);
    await u.start();
    await waitFor('the link up', () => u.linkState === 'up');
    outbox.add('telemetry', ids('a', 3), clock.now());
    u.notify();
    await clock.advance(4999);
    await settle();
    expect(cloud.received).toHaveLength(0);
    await clock.advance(1);
    await waitFor('the lingering batch', () => cloud.received.length === 1);
    expect(cloud.readings).toEqual(ids('a', 3));

    outbox.add('telemetry', ids('b', 12), clock.now());
    u.notify();
    await waitFor('the full batch', () => cloud.received.length === 2);
    expect(cloud.received[1]!.batch.readings).toHaveLength(10);
    await settle();
    expect(cloud.received).toHaveLength(2);
    await clock.advance(5000);
    await waitFor('the last two', () => cloud.received.length === 3);
    expect(cloud.readings.slice(3)).toEqual(ids('b', 12));
  });

  it('a priority 0 stream does not linger', async () => {
    const cloud = await aedesCloud();
    const clock = new ManualClock();
    const outbox = new MemoryOutbox([
      { name: 'alarms', priority: 0 },
      { name: 'telemetry', priority: 5 },
    ]);
    const u = uplink(options(cloud.url, { lingerMs: 60_000 }), outbox, clock);
    await u.start();
    await waitFor('the link up', () => u.linkState === 'up');
    outbox.add('telemetry', ids('t', 2), clock.now());
    outbox.add('alarms', ids('alarm', 1), clock.now());
    u.notify();
    await waitFor('the alarm', () => cloud.received.length === 1);
    await settle();
    expect(cloud.readings).toEqual(['alarm0']);
  });

  it('holds batches to the byte-rate cap: the next batch waits until the first is paid back', async () => {
    const cloud = await aedesCloud();
    const clock = new ManualClock();
    const outbox = new MemoryOutbox();
    outbox.add('telemetry', ids('r', 30), clock.now());
    const rate = 500;
    // JSON batches: 10 readings of them (over 1 KB) are well over one second of this rate.
    const u = uplink(options(cloud.url, { maxBytesPerS: rate, encoding: 'json' }), outbox, clock);
    await u.start();
    await waitFor('the first batch acknowledged', () => outbox.held().length === 20);
    await settle();
    expect(cloud.received).toHaveLength(1);
    // One second of burst (500 bytes) went into the first batch; the rest is debt at 500 B/s.
    const first = cloud.received[0]!.bytes;
    expect(first).toBeGreaterThan(rate);
    const wait = Math.ceil(((first - rate) * 1000) / rate);
    await clock.advance(wait - 1);
    await settle();
    expect(cloud.received).toHaveLength(1);
    await clock.advance(1);
    await waitFor('the second batch', () => cloud.received.length === 2);
    expect(u.budgetStatus()).toMatchObject({ maxBytesPerS: rate, sentToday: first + cloud.received[1]!.bytes });
  });

  it('stop({drainMs}) delivers what the outbox holds before it closes the link', async () => {
    const cloud = await aedesCloud();
    const clock = new ManualClock();
    const outbox = new MemoryOutbox();
    const u = uplink(options(cloud.url), outbox, clock);
    await u.start();
    await waitFor('the link up', () => u.linkState === 'up');
    outbox.add('telemetry', ids('r', 45), clock.now());
    u.notify();
    await u.stop({ drainMs: 10_000 });
    expect(outbox.held()).toEqual([]);
    expect(cloud.readings).toEqual(ids('r', 45));
    expect(u.linkState).toBe('stopped');
  });

  it('stop({drainMs}) gives up after drainMs and leaves what was not acknowledged in the outbox', async () => {
    const cloud = await aedesCloud();
    const clock = new ManualClock();
    const outbox = new MemoryOutbox();
    outbox.add('telemetry', ids('r', 25), clock.now());
    cloud.holdAcks();
    const u = uplink(options(cloud.url), outbox, clock);
    await u.start();
    await waitFor('a batch at the broker', () => cloud.heldAcks === 1);
    let stopped = false;
    const stopping = u.stop({ drainMs: 2000 }).then(() => {
      stopped = true;
    });
    await clock.advance(1999);
    await settle();
    expect(stopped).toBe(false);
    await clock.advance(1);
    await stopping;
    expect(outbox.held()).toHaveLength(25);
    expect(u.linkState).toBe('stopped');
  });

  it('stop ends every timer and connection it holds', async () => {
    const cloud = await aedesCloud();
    const clock = new ManualClock();
    const outbox = new MemoryOutbox();
    const before = openHandles();
    // Linger and a rate cap arm timers; a dropped connection arms the reconnect.
    const u = uplink(options(cloud.url, { lingerMs: 60_000, maxBytesPerS: 100 }), outbox, clock);
    await u.start();
    await waitFor('the link up', () => u.linkState === 'up');
    outbox.add('telemetry', ids('r', 3), clock.now());
    u.notify();
    await settle();
    expect(clock.pending()).toBeGreaterThan(0);
    await u.stop();
    expect(clock.pending()).toBe(0);
    await waitFor('no client at the broker', () => cloud.clients === 0);
    await waitFor('the handles of before', () => noneLeftSince(before), 3000, 25, () => JSON.stringify({ before, after: openHandles() }));
  });

  it('stop while waiting to reconnect ends the reconnect timer', async () => {
    const cloud = await aedesCloud();
    const clock = new ManualClock();
    const u = uplink(options(cloud.url), new MemoryOutbox(), clock);
    await u.start();
    await waitFor('the link up', () => u.linkState === 'up');
    cloud.refuseConnections = true;
    cloud.dropConnections();
    await waitFor('the link down', () => u.linkState === 'down');
    expect(clock.pending()).toBe(1);
    const attempts = cloud.connections;
    await u.stop();
    expect(clock.pending()).toBe(0);
    await clock.advance(60_000);
    await settle();
    expect(cloud.connections).toBe(attempts);
  });

  it('passes downlink messages to the handlers whose filter matches, also when another handler throws', async () => {
    const cloud = await aedesCloud();
    const clock = new ManualClock();
    const u = uplink(options(cloud.url), new MemoryOutbox(), clock);
    const got: string[] = [];
    u.subscribe('outpost/v1/gw/gw-test/releases/+', () => {
      throw new Error('a broken handler');
    });
    u.subscribe('outpost/v1/gw/gw-test/releases/+', (topic, payload) => got.push(`${topic} ${payload.toString()}`));
    u.subscribe('outpost/v1/gw/other/#', (topic) => got.push(`wrong ${topic}`));
    let ups = 0;
    u.onLinkUp(() => ups++);
    await u.start();
    await waitFor('the link up', () => ups === 1);
    await waitFor('the subscription', async () => {
      await cloud.publish('outpost/v1/gw/gw-test/releases/r1', 'x');
      return got.length > 0;
    });
    expect(got[0]).toBe('outpost/v1/gw/gw-test/releases/r1 x');
    expect(got.every((g) => !g.startsWith('wrong'))).toBe(true);
  });
});
