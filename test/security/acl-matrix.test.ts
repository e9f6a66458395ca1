import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EmbeddedBroker } from '../../runtime/broker/embedded-broker.js';
import { systemClock } from '../../runtime/contracts/index.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { brokerAccess, deviceCredentials } from '../helpers/broker-access.js';
import { silentLogger } from '../helpers/fakes.js';

/**
 * The ACL matrix (docs/security.md, "Permissions"): every identity kind × every topic form ×
 * publish / subscribe / retained publish / last will, against the real broker over TCP. The
 * expectations are written out below as a table of what is allowed, independent of the policy's
 * code; everything not in the table must be refused.
 */
const P = 'outpost/v1/dev';
type Op = 'publish' | 'subscribe' | 'retain' | 'will';
type Who = 'device dev-a' | 'device dev' | 'panel-1 (site/# grant)' | 'anonymous (loopback, public/# grant)' | 'gateway-internal';

const topics: Record<string, string> = {
  'own telemetry': `${P}/dev-a/telemetry`,
  'own status': `${P}/dev-a/status`,
  'own cmd': `${P}/dev-a/cmd`,
  'own cmd subtree': `${P}/dev-a/cmd/#`,
  'own desired': `${P}/dev-a/desired/reported`,
  'own update': `${P}/dev-a/update/+`,
  'own subtree #': `${P}/dev-a/#`,
  "other's telemetry": `${P}/dev-b/telemetry`,
  "other's cmd": `${P}/dev-b/cmd`,
  'prefix-sharing id (dev vs dev-a)': `${P}/dev-a/telemetry#prefix`,
  'every device cmd (+)': `${P}/+/cmd`,
  'every device (#)': `${P}/#`,
  'root #': '#',
  'root +': '+/+/+/+/+',
  '$SYS': '$SYS/broker/clients',
  '$SYS #': '$SYS/#',
  'site panel topic': 'site/pump-1/flow',
  'site #': 'site/#',
  'public topic': 'public/notice',
};

/** What each identity may do; anything else is refused. */
const allowed: Record<Who, Partial<Record<Op, string[]>>> = {
  'device dev-a': {
    publish: ['own telemetry', 'own status', 'own cmd', 'own desired', 'prefix-sharing id (dev vs dev-a)'],
    retain: ['own telemetry', 'own status', 'own cmd', 'own desired', 'prefix-sharing id (dev vs dev-a)'],
    will: ['own telemetry', 'own status', 'own cmd', 'own desired', 'prefix-sharing id (dev vs dev-a)'],
    subscribe: ['own cmd', 'own cmd subtree', 'own desired', 'own update'],
  },
  // A device whose id is a prefix of another's: none of dev-a's topics are its own.
  'device dev': {},
  'panel-1 (site/# grant)': { subscribe: ['site panel topic', 'site #'] },
  'anonymous (loopback, public/# grant)': { subscribe: ['public topic'] },
  'gateway-internal': {},
};

function topicOf(name: string): string {
  const t = topics[name]!;
  // "dev" would own `outpost/v1/dev/dev/...`; the prefix-sharing row checks `dev-a`'s topic from "dev".
  return t.replace('#prefix', '');
}

function credentials(who: Who): IClientOptions {
  if (who === 'device dev-a') return deviceCredentials('dev-a');
  if (who === 'device dev') return deviceCredentials('dev');
  if (who === 'panel-1 (site/# grant)') return { clientId: 'panel-1', username: 'panel-1', password: 'panel-password-1' };
  return { clientId: 'visitor-1' };
}

describe('ACL matrix: identity × topic form × operation', () => {
  let broker: EmbeddedBroker;
  let url: string;
  const results: string[] = [];

  beforeAll(async () => {
    const { hashPassword } = await import('../../runtime/identity/passwords.js');
    const access = brokerAccess({
      broker: {
        anonymous: true,
        grants: [
          { identities: ['panel-*'], subscribe: ['site/#'] },
          { identities: ['anonymous'], subscribe: ['public/#'] },
        ],
        limits: { connectRate: { perSecond: 10_000, burst: 10_000 } },
      },
      identities: { groups: [{ name: 'test', devices: 'dev*', secret: 'outpost-test-group-secret-0001' }], clients: [{ id: 'panel-1', passwordHash: await hashPassword('panel-password-1', { ln: 10 }) }] },
    });
    broker = new EmbeddedBroker(access);
    await broker.start({ clock: systemClock, log: silentLogger, metrics: new PromMetrics() });
    url = `mqtt://127.0.0.1:${await broker.listen('127.0.0.1', 0)}`;
  });
  afterAll(async () => {
    await broker.close();
  });

  async function connect(who: Who, extra: IClientOptions = {}): Promise<MqttClient> {
    return mqtt.connectAsync(url, { ...credentials(who), reconnectPeriod: 0, connectTimeout: 3000, ...extra });
  }

  /** true when the broker took the operation. */
  async function attempt(who: Who, op: Op, topic: string): Promise<boolean> {
    if (who === 'gateway-internal') {
      // The gateway's own publishes (rule outputs) are not subject to device permissions; it
      // neither subscribes nor has a will. Checked separately below.
      return false;
    }
    if (op === 'will') {
      try {
        const c = await connect(who, { will: { topic, payload: Buffer.from('{"state":"offline"}'), qos: 1, retain: false } });
        await c.endAsync(true);
        return true;
      } catch {
        return false;
      }
    }
    const c = await connect(who);
    try {
      if (op === 'subscribe') {
        // SUBACK 0x80: mqtt.js rejects the subscribe.
        const granted = await c.subscribeAsync(topic, { qos: 1 }).catch(() => [{ qos: 128 }]);
        return granted.every((g) => g.qos !== 128);
      }
      // A refused publish gets no PUBACK: aedes closes the connection.
      const closed = new Promise<false>((resolve) => c.once('close', () => resolve(false)));
      const acked = c.publishAsync(topic, '{"points":{"x":1}}', { qos: 1, retain: op === 'retain' }).then(() => true as const, () => false as const);
      return await Promise.race([acked, closed]);
    } finally {
      await c.endAsync(true);
    }
  }

  const whos = Object.keys(allowed) as Who[];
  const ops: Op[] = ['publish', 'retain', 'will', 'subscribe'];
  for (const who of whos) {
    it(`${who}: only what its permissions name`, async () => {
      for (const op of ops) {
        for (const name of Object.keys(topics)) {
          const topic = topicOf(name);
          // Wildcards are no topic for a publish; MQTT clients refuse to send them.
          if (op !== 'subscribe' && /[+#]/.test(topic)) continue;
          const want = (allowed[who][op] ?? []).includes(name);
          const got = await attempt(who, op, topic);
          results.push(`${who} ${op} ${name}: ${got ? 'allowed' : 'refused'}`);
          expect(got, `${who} ${op} ${topic}`).toBe(want);
        }
      }
    });
  }

  it('the gateway itself publishes anywhere it needs to (rule outputs), and its messages reach only permitted subscribers', async () => {
    const panel = await connect('panel-1 (site/# grant)');
    const got: string[] = [];
    panel.on('message', (t) => got.push(t));
    await panel.subscribeAsync('site/#', { qos: 1 });
    await broker.publish('site/pump-1/flow', '1', 1, false);
    await broker.publish(`${P}/dev-c/cmd`, '{"run":true}', 1, false);
    const dev = await mqtt.connectAsync(url, { ...deviceCredentials('dev-c'), reconnectPeriod: 0 });
    const devGot: string[] = [];
    dev.on('message', (t) => devGot.push(t));
    await dev.subscribeAsync(`${P}/dev-c/cmd`, { qos: 1 });
    await broker.publish(`${P}/dev-c/cmd`, '{"run":false}', 1, false);
    await broker.publish(`${P}/dev-b/cmd`, '{"run":false}', 1, false);
    await broker.publish('site/pump-1/flow', '2', 1, false);
    await new Promise((r) => setTimeout(r, 200));
    expect(got).toEqual(['site/pump-1/flow', 'site/pump-1/flow']);
    expect(devGot).toEqual([`${P}/dev-c/cmd`]);
    await panel.endAsync(true);
    await dev.endAsync(true);
    results.push('gateway-internal publish site/…, device cmd: allowed (delivered to permitted subscribers only)');
  });

  afterAll(() => {
    const refused = results.filter((r) => r.endsWith('refused')).length;
    process.stdout.write(`ACL matrix: ${results.length} cases, ${results.length - refused} allowed, ${refused} refused\n`);
  });
});
