import { afterEach, describe, expect, it } from 'vitest';
import { Uplink, type UplinkOptions } from '../../cloud-bridge/uplink.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { ManualClock, silentLogger } from '../helpers/fakes.js';
import { waitFor } from '../helpers/wait.js';
import { MemoryOutbox, Mqtt5Cloud, uplinkOptions, type Verdict } from './uplink-peers.js';

/**
 * Every way a cloud broker refuses a batch ends the same way within a bounded number of failures:
 * the bad reading isolated and dead-lettered, the rest delivered, and the status saying the link
 * is failing meanwhile. A refusal about the link (not authorized, quota) dead-letters nothing.
 */
const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const ids = (prefix: string, n: number, from = 0): string[] => Array.from({ length: n }, (_, i) => `${prefix}${from + i}`);

async function setup(
  verdict: (bad: boolean) => Verdict,
  over: Partial<UplinkOptions> = {},
): Promise<{ cloud: Mqtt5Cloud; clock: ManualClock; outbox: MemoryOutbox; u: Uplink; metrics: PromMetrics }> {
  const cloud = await Mqtt5Cloud.start((batch) => verdict(batch.readings.some((r) => r.id === 'bad')));
  cleanup.push(() => cloud.close());
  const clock = new ManualClock();
  const outbox = new MemoryOutbox();
  // 40 readings with the bad one in the middle: four batches of 10, all in flight at once.
  outbox.add('telemetry', [...ids('r', 17), 'bad', ...ids('r', 22, 17)], clock.now());
  const metrics = new PromMetrics();
  // No jitter: every reconnect is due at once on the injected clock.
  const u = new Uplink(uplinkOptions(cloud.url, { protocolVersion: 5, batchSize: 10, maxInFlight: 4, maxAttempts: 2, random: () => 0, ...over }), outbox, clock, silentLogger, metrics);
  cleanup.push(() => u.stop());
  await u.start();
  return { cloud, clock, outbox, u, metrics };
}

/** Runs the injected clock along (reconnects, held batches) until `check` holds; records the link states seen. */
async function until(clock: ManualClock, u: Uplink, what: string, check: () => boolean, stepMs = 0, seen = new Set<string>()): Promise<Set<string>> {
  await waitFor(
    what,
    async () => {
      seen.add(u.status().link);
      await clock.advance(stepMs);
      return check();
    },
    10_000,
    10,
    () => JSON.stringify(u.status()),
  );
  return seen;
}

describe('uplink: every shape of refusal ends in isolation and a dead letter', () => {
  const shapes: Array<[string, Verdict, number]> = [
    ['a PUBACK with a reason code MQTT does not allow there (Mosquitto’s 0x95 for a message over message_size_limit)', { invalidPuback: 0x95 }, 0],
    ['a PUBACK refusing it (0x99 payload format invalid)', 0x99, 0],
    ['a DISCONNECT right after the publish (0x95 packet too large)', { disconnect: 0x95 }, 0],
    ['the connection closed right after the publish', 'close', 0],
    ['no answer at all (the broker drops it silently)', 'silent', 1000],
  ];
  for (const [shape, verdict, stepMs] of shapes) {
    it(shape, async () => {
      const { cloud, clock, outbox, u, metrics } = await setup((bad) => (bad ? verdict : 0), { ackTimeoutMs: 5000 });
      const seen = await until(clock, u, 'the bad reading dead-lettered', () => outbox.deadLetters.length === 1, stepMs);
      expect(outbox.deadLetters[0]).toMatchObject({ stream: 'telemetry', id: 'bad' });
      // Bisection: 10 rows, then 5, 3, 2, 1, and the reading alone maxAttempts (2) times.
      expect(cloud.refused.length).toBeLessThanOrEqual(Math.ceil(Math.log2(10)) + 2);
      expect(seen.has('failing')).toBe(true);
      await until(clock, u, 'the rest delivered', () => outbox.held().length === 0, stepMs);
      expect(new Set(cloud.readings)).toEqual(new Set([...ids('r', 39)]));
      await until(clock, u, 'the link up', () => u.status().link === 'up', stepMs);
      expect(u.status().uplink.failing).toBeUndefined();
      expect(await metrics.text()).toMatch(/outpost_uplink_failing 0/);
    });
  }

  it('the reasons name the shape', async () => {
    const reasons: string[] = [];
    for (const verdict of [{ invalidPuback: 0x95 }, 0x99, { disconnect: 0x95 }, 'silent'] as Verdict[]) {
      const { clock, outbox, u } = await setup((bad) => (bad ? verdict : 0), { ackTimeoutMs: 5000 });
      await until(clock, u, 'the bad reading dead-lettered', () => outbox.deadLetters.length === 1, 1000);
      reasons.push(outbox.deadLetters[0]!.reason);
      await u.stop();
    }
    expect(reasons).toEqual([
      'protocol error from the cloud broker: Invalid puback reason code',
      'refused by the cloud broker: payload format invalid (0x99)',
      'the cloud broker disconnected: packet too large (0x95)',
      'not acknowledged by the cloud broker within 5 s',
    ]);
  });
});

describe('uplink: a refusal about the link is no poison', () => {
  for (const [shape, verdict] of [
    ['PUBACK 0x87 not authorized', 0x87],
    ['DISCONNECT 0x87 not authorized', { disconnect: 0x87 }],
    ['PUBACK 0x97 quota exceeded', 0x97],
  ] as Array<[string, Verdict]>) {
    it(`${shape}: nothing dead-lettered, batches held with a growing backoff, the status says why; delivered once allowed`, async () => {
      let allowed = false;
      const { cloud, clock, outbox, u } = await setup(() => (allowed ? 0 : verdict), { backoff: { initialMs: 1000, maxMs: 8000 }, random: () => 0.999 });
      await until(clock, u, 'the first refusal', () => u.status().link === 'failing');
      const failing = u.status().uplink.failing!;
      expect(failing.reason).toMatch(verdict === 0x97 ? /quota exceeded.*\(0x97\)/ : /not authorized.*ACL.*\(0x87\)/);
      expect(failing.heldUntil).toBeGreaterThan(clock.now());
      // Held: nothing more is sent before the backoff is over, then it grows.
      const refusedBefore = cloud.refused.length;
      await clock.advance(500);
      await new Promise((r) => setTimeout(r, 50));
      expect(cloud.refused.length).toBe(refusedBefore);
      await until(clock, u, 'a few more refusals', () => cloud.refused.length >= refusedBefore + 3, 1000);
      expect(outbox.deadLetters).toEqual([]);
      expect(outbox.held()).toHaveLength(40);
      // The broker's ACL fixed: everything goes, nothing lost.
      allowed = true;
      await until(clock, u, 'everything delivered', () => outbox.held().length === 0, 1000);
      expect(new Set(cloud.readings).size).toBe(40);
      expect(u.status().link).toBe('up');
    });
  }

  it('a broker that closes the connection on every publish (an ACL refusal over MQTT 3.1.1 looks so) gets at most 3 readings dead-lettered, then held', async () => {
    const { clock, outbox, u } = await setup(() => 'close');
    await until(clock, u, 'held with the reason', () => /refuses every reading/.test(u.status().uplink.failing?.reason ?? ''), 1000);
    const dead = outbox.deadLetters.length;
    expect(dead).toBe(3);
    await until(clock, u, 'a while longer', () => true, 5000);
    for (let i = 0; i < 20; i++) await clock.advance(1000);
    expect(outbox.deadLetters.length).toBe(dead);
    expect(u.status().link).toBe('failing');
    // The broker may close the connection under the offline status the stop publishes: it waits a second at most.
    const stopped = u.stop();
    await clock.advance(1000);
    await stopped;
  });
});
