import { silentLogger as silent } from '../helpers/fakes.js';
import { describe, expect, it } from 'vitest';
import { ChildIntake, childReadingId, DEFAULT_MAX_TRACKED, type ChildDeviceSpec } from '../../drivers/mqtt/child-intake.js';
import { mqttChildren } from '../../drivers/mqtt/protocol.js';
import type { Clock, DriverContext, Envelope, InboundPublish, LocalBroker, ReadingSink } from '../../runtime/contracts/index.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { CountingSequence } from '../../runtime/sequence.js';

/** The local broker as the intake sees it: publishing runs the interceptor, as the broker does before its PUBACK. */
class FakeBroker implements LocalBroker {
  private handler: ((msg: InboundPublish) => Promise<void>) | undefined;
  private observer: ((msg: { topic: string; payload: Buffer; retain: boolean }) => void) | undefined;
  intercept(handler: (msg: InboundPublish) => Promise<void>): void {
    this.handler = handler;
  }
  observe(handler: (msg: { topic: string; payload: Buffer; retain: boolean }) => void): void {
    this.observer = handler;
  }
  /** A message the broker delivered (a status, or a last will). */
  deliver(topic: string, payload: string | object): void {
    this.observer?.({ topic, payload: Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload)), retain: true });
  }
  /** As the device of the topic, by default (the broker lets a device publish only under its own id). */
  publish(topic: string, payload: string | object, clientId = topic.split('/')[3] ?? ''): Promise<void> {
    if (!this.handler) throw new Error('no interceptor installed');
    const text = typeof payload === 'string' ? payload : JSON.stringify(payload);
    return this.handler({ clientId, topic, payload: Buffer.from(text, 'utf8'), qos: 1 });
  }
}

/** Stores what it is given, or refuses everything when `failWith` is set. */
class FakeSink implements ReadingSink {
  readonly stored: Envelope[] = [];
  failWith: Error | undefined;
  submit(readings: readonly Envelope[]): Promise<void> {
    if (this.failWith) return Promise.reject(this.failWith);
    this.stored.push(...readings);
    return Promise.resolve();
  }
}

const fixedClock = (t: number): Clock => ({ now: () => t, setTimeout: () => ({}), clearTimeout: () => undefined });


const NOW = 1_764_000_000_000;

async function startIntake(opts: { known?: string[]; specs?: Record<string, ChildDeviceSpec>; acceptUnknown?: boolean; sink?: ReadingSink; maxTracked?: number } = {}) {
  const broker = new FakeBroker();
  const sink = new FakeSink();
  const metrics = new PromMetrics();
  const ctx: DriverContext = {
    sink: opts.sink ?? sink,
    sequence: new CountingSequence('gw1:'),
    clock: fixedClock(NOW),
    log: silent,
    metrics,
  };
  const devices = new Map<string, ChildDeviceSpec>((opts.known ?? ['pump-1']).map((id) => [id, { strict: true }]));
  for (const [id, spec] of Object.entries(opts.specs ?? {})) devices.set(id, spec);
  const intake = new ChildIntake(broker, { devices, acceptUnknownDevices: opts.acceptUnknown ?? false, maxTracked: opts.maxTracked });
  await intake.start(ctx);
  const rejected = async (reason: string): Promise<number> => {
    const m = new RegExp(`^outpost_child_rejected_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(await metrics.text());
    return m ? Number(m[1]) : 0;
  };
  return { broker, sink, metrics, intake, rejected };
}

const topic = (device: string): string => `outpost/v1/dev/${device}/telemetry`;

describe('child telemetry intake', () => {
  it('turns a valid message with an id into one reading per point, with ids {device}:{msgId}:{point}', async () => {
    const { broker, sink, metrics } = await startIntake();
    await broker.publish(topic('pump-1'), {
      id: 'boot7-1042',
      ts: 1_763_999_999_000,
      points: { temperature: 21.5, running: true, mode: 'auto', pressure: { value: null, quality: 'bad' } },
    });
    expect(sink.stored.map((r) => ({ id: r.id, device: r.device, point: r.point, value: r.value, quality: r.quality, ts: r.ts }))).toEqual([
      { id: 'pump-1:boot7-1042:temperature', device: 'pump-1', point: 'temperature', value: 21.5, quality: 'good', ts: 1_763_999_999_000 },
      { id: 'pump-1:boot7-1042:running', device: 'pump-1', point: 'running', value: true, quality: 'good', ts: 1_763_999_999_000 },
      { id: 'pump-1:boot7-1042:mode', device: 'pump-1', point: 'mode', value: 'auto', quality: 'good', ts: 1_763_999_999_000 },
      { id: 'pump-1:boot7-1042:pressure', device: 'pump-1', point: 'pressure', value: null, quality: 'bad', ts: 1_763_999_999_000 },
    ]);
    expect(sink.stored.map((r) => r.seq)).toEqual([1, 2, 3, 4]);
    expect(await metrics.total('outpost_child_messages_total')).toBe(1);
  });

  it('gives a resent message the same reading ids, so the cloud can deduplicate it', async () => {
    const { broker, sink } = await startIntake();
    const msg = { id: 42, points: { a: 1, b: 2 } };
    await broker.publish(topic('pump-1'), msg);
    await broker.publish(topic('pump-1'), msg);
    const ids = sink.stored.map((r) => r.id);
    expect(ids).toEqual(['pump-1:42:a', 'pump-1:42:b', 'pump-1:42:a', 'pump-1:42:b']);
    expect(childReadingId('pump-1', 42, 'a')).toBe('pump-1:42:a');
    // Parts that contain ':' are escaped, so they cannot collide.
    expect(childReadingId('pump-1', 'a:b', 'c')).toBe('pump-1:a%3Ab:c');
    expect(childReadingId('pump-1', 'a', 'b:c')).toBe('pump-1:a:b%3Ac');
    expect(childReadingId('p%1', '50%', 'x')).toBe('p%251:50%25:x');
  });

  it('uses the gateway sequence ids and the arrival time for a message without id and ts', async () => {
    const { broker, sink } = await startIntake();
    await broker.publish(topic('pump-1'), { points: { a: 1, b: 2 } });
    await broker.publish(topic('pump-1'), { points: { a: 3 } });
    expect(sink.stored.map((r) => [r.id, r.seq, r.ts])).toEqual([
      ['gw1:1', 1, NOW],
      ['gw1:2', 2, NOW],
      ['gw1:3', 3, NOW],
    ]);
  });

  it('hands over frozen readings', async () => {
    const { broker, sink } = await startIntake();
    await broker.publish(topic('pump-1'), { points: { a: 1 } });
    expect(Object.isFrozen(sink.stored[0])).toBe(true);
  });

  it('acknowledges, stores nothing and counts "not-json" for a payload that is not JSON', async () => {
    const { broker, sink, rejected, metrics, intake } = await startIntake();
    await expect(broker.publish(topic('pump-1'), '{"points": {')).resolves.toBeUndefined();
    expect(sink.stored).toEqual([]);
    expect(await rejected('not-json')).toBe(1);
    expect(await metrics.total('outpost_child_messages_total')).toBe(0);
    expect(intake.status()).toMatchObject({ accepted: 0, rejected: 1 });
  });

  it('acknowledges, stores nothing and counts "schema" for a message that breaks the schema', async () => {
    const { broker, sink, rejected } = await startIntake();
    await expect(broker.publish(topic('pump-1'), { points: { 'bad name': 1 } })).resolves.toBeUndefined();
    await expect(broker.publish(topic('pump-1'), { points: { a: { value: 1, quality: 'meh' } } })).resolves.toBeUndefined();
    await expect(broker.publish(topic('pump-1'), { points: {} })).resolves.toBeUndefined();
    await expect(broker.publish(topic('pump-1'), '{"points":{"a":1e999}}')).resolves.toBeUndefined();
    expect(sink.stored).toEqual([]);
    expect(await rejected('schema')).toBe(4);
  });

  it('refuses a message from a device not in the site config when unknown devices are not accepted', async () => {
    const { broker, sink, rejected, metrics } = await startIntake({ known: ['pump-1'], acceptUnknown: false });
    await expect(broker.publish(topic('stranger'), { points: { a: 1 } })).resolves.toBeUndefined();
    expect(sink.stored).toEqual([]);
    expect(await rejected('unknown-device')).toBe(1);
    expect(await metrics.total('outpost_child_rejected_total')).toBe(1);
  });

  it('takes a message from a device not in the site config when unknown devices are accepted', async () => {
    const { broker, sink } = await startIntake({ known: [], acceptUnknown: true });
    await broker.publish(topic('stranger'), { id: 'm1', points: { a: 1 } });
    expect(sink.stored.map((r) => r.id)).toEqual(['stranger:m1:a']);
  });

  it('counts each refusal reason apart and sums them in total()', async () => {
    const { broker, rejected, metrics } = await startIntake();
    await broker.publish(topic('pump-1'), 'nope');
    await broker.publish(topic('pump-1'), 'nope');
    await broker.publish(topic('pump-1'), { points: {} });
    await broker.publish(topic('ghost'), { points: { a: 1 } });
    expect([await rejected('not-json'), await rejected('schema'), await rejected('unknown-device')]).toEqual([2, 1, 1]);
    expect(await metrics.total('outpost_child_rejected_total')).toBe(4);
  });

  it('ignores publishes on other topics without storing or counting them', async () => {
    const { broker, sink, metrics } = await startIntake();
    await expect(broker.publish('outpost/v1/dev/pump-1/status', 'not json at all')).resolves.toBeUndefined();
    await expect(broker.publish('some/other/topic', { points: { a: 1 } })).resolves.toBeUndefined();
    expect(sink.stored).toEqual([]);
    expect(await metrics.total('outpost_child_rejected_total')).toBe(0);
    expect(await metrics.total('outpost_child_messages_total')).toBe(0);
  });

  it('rejects (so no PUBACK is sent) when the sink cannot store the readings, and does not count them accepted', async () => {
    const { broker, sink, metrics, intake } = await startIntake();
    sink.failWith = new Error('disk full');
    await expect(broker.publish(topic('pump-1'), { id: 1, points: { a: 1 } })).rejects.toThrow('disk full');
    expect(await metrics.total('outpost_child_messages_total')).toBe(0);
    expect(await metrics.total('outpost_child_rejected_total')).toBe(0);
    expect(intake.status()).toMatchObject({ accepted: 0, rejected: 0 });
    // The device resends once the store recovers; the message is taken then.
    sink.failWith = undefined;
    await broker.publish(topic('pump-1'), { id: 1, points: { a: 1 } });
    expect(sink.stored.map((r) => r.id)).toEqual(['pump-1:1:a']);
    expect(intake.status()).toMatchObject({ accepted: 1, rejected: 0 });
  });

  it('rejects telemetry after stop(), so the device keeps it and resends to the next gateway run', async () => {
    const { broker, sink, intake } = await startIntake();
    await intake.stop();
    await expect(broker.publish(topic('pump-1'), { points: { a: 1 } })).rejects.toThrow(/stopping/);
    expect(sink.stored).toEqual([]);
  });

  it('waits in stop() for a submit that is still in flight', async () => {
    let release: () => void = () => undefined;
    const held: ReadingSink = { submit: () => new Promise<void>((resolve) => (release = resolve)) };
    const { broker, intake } = await startIntake({ sink: held });
    const published = broker.publish(topic('pump-1'), { points: { a: 1 } });
    let stopped = false;
    const stopping = intake.stop().then(() => (stopped = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(stopped).toBe(false);
    release();
    await published;
    await stopping;
    expect(stopped).toBe(true);
    expect(intake.status()).toMatchObject({ accepted: 1, rejected: 0 });
  });

  it("checks a device's messages against the payload schema declared for it, naming every problem", async () => {
    const spec: ChildDeviceSpec = {
      strict: true,
      points: { flow: { type: 'number', min: 0, max: 100, unit: 'm3/h' }, running: { type: 'boolean' }, mode: { type: 'string', enum: ['auto', 'manual'] } },
    };
    const { broker, sink, rejected, intake } = await startIntake({ specs: { 'pump-1': spec } });
    await broker.publish(topic('pump-1'), { points: { flow: 12.5, running: true, mode: 'auto' } });
    expect(sink.stored.map((r) => [r.point, r.value, r.unit])).toEqual([
      ['flow', 12.5, 'm3/h'],
      ['running', true, undefined],
      ['mode', 'auto', undefined],
    ]);
    const refusedBefore = sink.stored.length;
    await broker.publish(topic('pump-1'), { points: { flow: 250, running: 'yes', mode: 'turbo', vibration: 3 } });
    await broker.publish(topic('pump-1'), { points: { flow: null } });
    expect(sink.stored).toHaveLength(refusedBefore);
    expect(await rejected('device-schema')).toBe(2);
    // A bad reading may carry null; a good one may not.
    await broker.publish(topic('pump-1'), { points: { flow: { value: null, quality: 'bad' } } });
    expect(sink.stored.at(-1)).toMatchObject({ point: 'flow', value: null, quality: 'bad' });
    expect(intake.status()).toMatchObject({ rejected: 2 });
  });

  it('names what is wrong with a message that breaks the device schema', async () => {
    const spec: ChildDeviceSpec = { strict: true, points: { flow: { type: 'number', min: 0, max: 100 }, mode: { type: 'string', enum: ['auto', 'manual'] } } };
    const warnings: string[] = [];
    const broker = new FakeBroker();
    const intake = new ChildIntake(broker, { devices: new Map([['pump-1', spec]]), acceptUnknownDevices: false });
    await intake.start({
      sink: new FakeSink(),
      sequence: new CountingSequence('x:'),
      clock: fixedClock(NOW),
      log: { ...silent, warn: (o: unknown) => warnings.push(JSON.stringify(o)) },
      metrics: new PromMetrics(),
    });
    await broker.publish(topic('pump-1'), { points: { flow: 250, mode: 'turbo', vibration: 3 } });
    const detail = String((JSON.parse(warnings[0]!) as { detail: string }).detail);
    expect(detail).toMatch(/points\.flow: Too big: expected number to be <=100/);
    expect(detail).toMatch(/points\.mode: Invalid option: expected one of "auto"\|"manual"/);
    expect(detail).toMatch(/points\.vibration: not a point of device "pump-1" \(declared: flow, mode\)/);
  });

  it('turns a last will into stale readings carrying the last values, and notes birth', async () => {
    const { broker, sink, intake, metrics } = await startIntake();
    await broker.publish(topic('pump-1'), { points: { flow: 12.5, running: true } });
    broker.deliver('outpost/v1/dev/pump-1/status', { state: 'online' });
    expect(intake.status()).toMatchObject({ online: ['pump-1'], offline: [] });
    broker.deliver('outpost/v1/dev/pump-1/status', { state: 'offline' });
    await Promise.resolve();
    expect(sink.stored.slice(-2).map((r) => [r.point, r.value, r.quality])).toEqual([
      ['flow', 12.5, 'stale'],
      ['running', true, 'stale'],
    ]);
    expect(intake.status()).toMatchObject({ online: [], offline: ['pump-1'] });
    // A second offline (a retained will seen again) adds nothing.
    broker.deliver('outpost/v1/dev/pump-1/status', { state: 'offline' });
    await Promise.resolve();
    expect(sink.stored).toHaveLength(4);
    broker.deliver('outpost/v1/dev/pump-1/status', { state: 'sleeping' });
    expect(await metrics.text()).toMatch(/outpost_child_rejected_total\{reason="status-schema"\} 1/);
    expect(await metrics.text()).toMatch(/outpost_child_status_total\{state="offline"\} 2/);
  });

  it('takes telemetry as proof of life: a last will without an earlier birth still turns the points stale', async () => {
    const { broker, sink, intake } = await startIntake();
    await broker.publish(topic('pump-1'), { points: { flow: 3 } });
    expect(intake.status()).toMatchObject({ online: ['pump-1'] });
    broker.deliver('outpost/v1/dev/pump-1/status', { state: 'offline' });
    await Promise.resolve();
    expect(sink.stored.at(-1)).toMatchObject({ point: 'flow', value: 3, quality: 'stale' });
  });

  it('tracks the online state of as many devices as the site is sized for (maxTracked), and no more', async () => {
    const { broker, sink, intake } = await startIntake({ acceptUnknown: true, maxTracked: 3 });
    for (const d of ['c1', 'c2', 'c3', 'c4']) await broker.publish(topic(d), { points: { flow: 1 } });
    expect(intake.status()).toMatchObject({ online: ['c1', 'c2', 'c3'] });
    broker.deliver('outpost/v1/dev/c3/status', { state: 'offline' });
    broker.deliver('outpost/v1/dev/c4/status', { state: 'offline' });
    await Promise.resolve();
    // The fourth device's readings were taken; only its will turns nothing stale.
    expect(sink.stored.map((r) => [r.device, r.quality])).toEqual([
      ['c1', 'good'],
      ['c2', 'good'],
      ['c3', 'good'],
      ['c4', 'good'],
      ['c3', 'stale'],
    ]);
  });

  it('a site sized for more children than the default bound (broker.limits.maxConnections) tracks every one of them', async () => {
    const broker = new FakeBroker();
    const sink = new FakeSink();
    const intake = mqttChildren.create([], { localBroker: broker, acceptUnknownDevices: true, otherDevices: new Set<string>(), maxChildren: DEFAULT_MAX_TRACKED + 10 })[0]!;
    await intake.start({ sink, sequence: new CountingSequence('gw1:'), clock: fixedClock(NOW), log: silent, metrics: new PromMetrics() });
    const last = `c${DEFAULT_MAX_TRACKED + 1}`;
    for (let i = 0; i <= DEFAULT_MAX_TRACKED + 1; i++) await broker.publish(topic(`c${i}`), { points: { flow: 1 } });
    broker.deliver(`outpost/v1/dev/${last}/status`, { state: 'offline' });
    await Promise.resolve();
    expect(sink.stored.at(-1)).toMatchObject({ device: last, point: 'flow', quality: 'stale' });
  });
});
