import { afterEach, describe, expect, it } from 'vitest';
import { BrokerList, brokerTarget } from '../../cloud-bridge/broker-list.js';
import { Uplink, type UplinkOptions } from '../../cloud-bridge/uplink.js';
import type { Logger } from '../../runtime/contracts/index.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { freePort } from '../../sim/free-port.js';
import { configProblems, ManualClock } from '../helpers/fakes.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { AedesCloud, MemoryOutbox, uplinkOptions } from './uplink-peers.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const ids = (prefix: string, n: number, from = 0): string[] => Array.from({ length: n }, (_, i) => `${prefix}${from + i}`);

/** A logger that keeps what it is given (messages at warn and above, and every message). */
function recordingLogger(): Logger & { lines: Array<{ level: string; msg: string; obj: Record<string, unknown> }> } {
  const lines: Array<{ level: string; msg: string; obj: Record<string, unknown> }> = [];
  const at =
    (level: string) =>
    (obj: unknown, msg?: string): void => {
      lines.push({ level, msg: msg ?? '', obj: (obj ?? {}) as Record<string, unknown> });
    };
  const log = { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug'), child: () => log, lines } as unknown as Logger & { lines: typeof lines };
  return log;
}

async function clouds(n: number): Promise<AedesCloud[]> {
  const all: AedesCloud[] = [];
  for (let i = 0; i < n; i++) {
    const c = await AedesCloud.start();
    cleanup.push(() => c.close());
    all.push(c);
  }
  return all;
}

function uplink(opts: UplinkOptions, outbox: MemoryOutbox, clock: ManualClock, log: Logger, metrics = new PromMetrics()): Uplink {
  const u = new Uplink(opts, outbox, clock, log, metrics);
  cleanup.push(() => u.stop());
  return u;
}

/** Nothing more happens for a while (real time: the brokers and the client run on it). */
const settle = (): Promise<void> => sleep(80);

describe('uplink failover between the brokers of a cluster (cloud.urls)', () => {
  it('connects to the first broker that answers, in the listed order, and reports it in status and metrics', async () => {
    const [a, b, d] = await clouds(3);
    a!.refuseConnections = true;
    const dead = `mqtt://127.0.0.1:${await freePort()}`;
    const clock = new ManualClock();
    const outbox = new MemoryOutbox();
    outbox.add('telemetry', ids('r', 25), clock.now());
    const log = recordingLogger();
    const metrics = new PromMetrics();
    // Nobody listens on the first; the second closes every connection; the third answers, the fourth is never needed.
    const u = uplink(uplinkOptions([dead, a!.url, b!.url, d!.url]), outbox, clock, log, metrics);
    await u.start();
    await waitFor('the link up', () => u.linkState === 'up');
    await waitFor('an empty outbox', () => outbox.held().length === 0);
    expect(a!.connections).toBe(1);
    expect(b!.readings).toEqual(ids('r', 25));
    expect(d!.connections).toBe(0);
    expect(u.status().uplink.broker).toEqual({ url: b!.url, index: 2, of: 4 });
    const text = await metrics.text();
    expect(text).toContain(`outpost_uplink_broker{url="${b!.url}"} 1`);
    expect(text).toContain(`outpost_uplink_broker{url="${dead}"} 0`);
    expect(text).toContain('outpost_uplink_failovers_total 1');
    // The round went through with the clock standing still: the backoff waits only between rounds.
    expect(clock.now()).toBe(0);
    // One line says where the link went; the failed attempts before it are not warnings.
    const warnings = log.lines.filter((l) => l.level === 'warn');
    expect(warnings.map((l) => l.msg)).toEqual(['cloud link failed over to another broker']);
    expect(warnings[0]!.obj).toMatchObject({ from: dead, to: b!.url, position: 3, of: 4 });
    expect(log.lines.filter((l) => l.msg === 'cloud link error').map((l) => [l.level, l.obj.broker])).toEqual([['debug', dead]]);
  });

  it('after a drop starts again from the first broker instead of rotating, and goes back to it once it answers', async () => {
    const [a, b, c] = await clouds(3);
    const clock = new ManualClock();
    const outbox = new MemoryOutbox();
    const log = recordingLogger();
    const u = uplink(uplinkOptions([a!.url, b!.url, c!.url]), outbox, clock, log);
    await u.start();
    await waitFor('the link up on the first', () => u.linkState === 'up' && a!.clients === 1);

    // A drop with the first broker still there: back to the first after the backoff.
    a!.dropConnections();
    await waitFor('the link down', () => u.linkState === 'down');
    await clock.advance(500);
    await waitFor('the link up on the first again', () => u.linkState === 'up' && a!.clients === 1);
    expect(b!.connections + c!.connections).toBe(0);

    // The first broker dies: the next round fails over to the second.
    a!.refuseConnections = true;
    a!.dropConnections();
    await waitFor('the link down', () => u.linkState === 'down');
    await clock.advance(500);
    await waitFor('the link up on the second', () => u.linkState === 'up' && b!.clients === 1);
    expect(u.status().uplink.broker.index).toBe(1);

    // The second drops too: the next round tries the first, then the second again (rotation would go to the third).
    const firstTries = a!.connections;
    b!.dropConnections();
    await waitFor('the link down', () => u.linkState === 'down');
    await clock.advance(500);
    await waitFor('the link up on the second again', () => u.linkState === 'up' && b!.clients === 1);
    expect(a!.connections).toBe(firstTries + 1);
    expect(c!.connections).toBe(0);

    // The first is back: the link stays where it is until it drops, then returns to the first.
    a!.refuseConnections = false;
    await settle();
    expect(b!.clients).toBe(1);
    b!.dropConnections();
    await waitFor('the link down', () => u.linkState === 'down');
    await clock.advance(500);
    await waitFor('the link up on the first', () => u.linkState === 'up' && a!.clients === 1);
    expect(u.status().uplink.broker).toEqual({ url: a!.url, index: 0, of: 3 });
    expect(c!.connections).toBe(0);

    // Two failovers (first -> second, second -> first), each logged once.
    const failovers = log.lines.filter((l) => l.msg === 'cloud link failed over to another broker').map((l) => [l.obj.from, l.obj.to]);
    expect(failovers).toEqual([
      [a!.url, b!.url],
      [b!.url, a!.url],
    ]);
  });

  it('waits the backoff between rounds, not between the brokers of a round, and loses nothing across the failover', async () => {
    const [a, b] = await clouds(2);
    const clock = new ManualClock();
    const outbox = new MemoryOutbox();
    outbox.add('telemetry', ids('r', 25), clock.now());
    a!.holdAcks();
    const log = recordingLogger();
    const u = uplink(uplinkOptions([a!.url, b!.url]), outbox, clock, log);
    await u.start();
    await waitFor('the first batch at the first broker', () => a!.heldAcks === 1);

    // Both brokers go away with the batch unacknowledged.
    a!.refuseConnections = true;
    b!.refuseConnections = true;
    a!.dropConnections();
    await waitFor('the link down', () => u.linkState === 'down');
    await settle();
    // The backoff (jitter at half the 1000 ms ceiling: 500 ms) before the first round.
    expect([a!.connections, b!.connections]).toEqual([1, 0]);
    await clock.advance(500);
    // One round: the first, then at once the second, then the backoff (1000 ms).
    await waitFor('a round over both', () => a!.connections === 2 && b!.connections === 1);
    await settle();
    expect(clock.pending()).toBe(1);
    await clock.advance(999);
    await settle();
    expect([a!.connections, b!.connections]).toEqual([2, 1]);
    await clock.advance(1);
    await waitFor('the second round', () => a!.connections === 3 && b!.connections === 2);

    // The second comes back: the next round ends there, and the unacknowledged batch is sent again.
    b!.refuseConnections = false;
    await clock.advance(2000);
    await waitFor('the link up on the second', () => u.linkState === 'up' && b!.clients === 1);
    await waitFor('an empty outbox', () => outbox.held().length === 0);
    expect(new Set(b!.readings)).toEqual(new Set(ids('r', 25)));
  });
});

describe('downlink subscriptions a broker will not take', () => {
  it('a broker that closes the connection over them gets no batch blamed: the uplink delivers without them, then subscribes again after a backoff', async () => {
    const [cloud] = await clouds(1);
    cloud!.refuseSubscriptions = true;
    const clock = new ManualClock();
    const outbox = new MemoryOutbox();
    outbox.add('telemetry', ids('r', 25), clock.now());
    const u = uplink(uplinkOptions(cloud!.url, { maxAttempts: 2 }), outbox, clock, recordingLogger());
    const got: string[] = [];
    u.subscribe('outpost/v1/gw/gw-test/releases/+', (topic) => got.push(topic));
    await u.start();
    await waitFor('the connection closed over the subscriptions', () => u.status().uplink.downlinks !== undefined);
    // The backoff (500 ms), then a connection that delivers without subscribing.
    await clock.advance(500);
    await waitFor('an empty outbox', () => outbox.held().length === 0);
    expect(outbox.deadLetters).toEqual([]);
    expect(cloud!.readings).toEqual(ids('r', 25));
    expect(u.status().uplink.downlinks).toContain('closed the connection over the downlink subscriptions');

    // Taken again: after the retry's backoff (jitter at half of backoff.maxMs) they are subscribed, between batches.
    cloud!.refuseSubscriptions = false;
    await clock.advance(4000);
    await waitFor('the subscriptions back', () => u.status().uplink.downlinks === undefined);
    await waitFor('a downlink message', async () => {
      await cloud!.publish('outpost/v1/gw/gw-test/releases/r1', 'x');
      return got.length > 0;
    });
    expect(u.linkState).toBe('up');
  });
});

describe('the broker list', () => {
  it('reads host, port and user info of each URL as mqtt.js does, and logs it redacted', () => {
    expect(brokerTarget('mqtts://gw:p%40ss@[::1]:8884', 1)).toEqual({ index: 1, url: 'mqtts://gw:p%40ss@[::1]:8884', shown: expect.not.stringContaining('p%40ss') as unknown, protocol: 'mqtts', host: '::1', port: 8884, username: 'gw', password: 'p@ss' });
    expect(brokerTarget('mqtt://mq1.example.net', 0)).toMatchObject({ protocol: 'mqtt', host: 'mq1.example.net', port: undefined, username: undefined });
  });

  it('goes down the list within a round, starts each round at the first, and names a failover only when the broker changed', () => {
    const list = new BrokerList(['mqtt://a', 'mqtt://b', 'mqtt://c']);
    expect(list.current.host).toBe('a');
    expect(list.connected()).toBeUndefined();
    expect(list.restart().host).toBe('a');
    expect(list.advance()?.host).toBe('b');
    expect(list.connected()?.host).toBe('a');
    expect(list.restart().host).toBe('a');
    expect(list.advance()?.host).toBe('b');
    expect(list.connected()).toBeUndefined();
    expect(list.advance()?.host).toBe('c');
    expect(list.advance()).toBeUndefined();
    expect(() => new BrokerList([])).toThrow(/cloud\.url or cloud\.urls/);
  });
});

describe('cloud.urls in the site config', () => {
  const site = (cloud: string): string => `gateway: { id: gw1 }\n${cloud}\nstorage: { path: /tmp/x.db }\n`;

  it('takes either url or a list of urls, each checked like url', () => {
    expect(configProblems(site('cloud: { url: "mqtt://a:1883" }'))).toEqual([]);
    expect(configProblems(site('cloud: { urls: ["mqtt://a:1883", "mqtts://b:8883"] }'))).toEqual([]);
    expect(configProblems(site('cloud: { urls: ["mqtt://a:1883", "http://b"] }'))).toEqual(['cloud.urls[1]: expected an mqtt://, mqtts://, tcp:// or ssl:// URL']);
    expect(configProblems(site('cloud: { urls: [] }'))).toEqual([expect.stringMatching(/^cloud\.urls: /)]);
  });

  it('refuses both, neither, and a URL listed twice, naming the field', () => {
    expect(configProblems(site('cloud: { url: "mqtt://a:1883", urls: ["mqtt://b:1883"] }'))).toEqual(['cloud.urls: give either url or urls, not both']);
    expect(configProblems(site('cloud: { qos: 1 }'))).toEqual(['cloud.url: expected the cloud broker: url (one broker) or urls (the nodes of a cluster, in order of preference)']);
    expect(configProblems(site('cloud: { urls: ["mqtt://a:1883", "mqtt://a:1883"] }'))).toEqual(['cloud.urls: lists the same URL twice']);
  });
});
