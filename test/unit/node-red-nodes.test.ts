import { createRequire } from 'node:module';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { makeEnvelope, type Envelope } from '../../runtime/contracts/index.js';
import type { FlowDevices, FlowReading, OutpostNodeHost } from '../../runtime/node-red.js';
import { makeNodeHost, PALETTE_DIR } from '../../runtime/node-red.js';
import type { IngestPipeline } from '../../runtime/ingest.js';
import { createLogger } from '../../runtime/logger.js';
import { CallError } from '../../runtime/devices/calls.js';
import { RegistryError } from '../../runtime/devices/registry.js';
import { waitFor } from '../helpers/wait.js';
import { noneLeftSince, openHandles } from '../contracts/open-handles.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { WINDOW_KIND_NAMES } from '../../rules/config.js';
import { AGGREGATES } from '../../rules/aggregates.js';
import { MAX_WINDOW_VALUES } from '../../rules/accumulator.js';

/**
 * Each Outpost node in node-red-node-test-helper's runtime, against a fake gateway host: what
 * the node gets from the host and what it sends on. (The real host is tested end to end in
 * test/e2e/node-red.test.ts.)
 */
const require = createRequire(import.meta.url);

interface Helper {
  init(nodeRed: string): void;
  settings(s: Record<string, unknown>): void;
  startServer(): Promise<void>;
  stopServer(): Promise<void>;
  load(nodes: unknown, flow: unknown[]): Promise<void>;
  unload(): Promise<void>;
  getNode(id: string): NodeUnderTest;
}
interface NodeUnderTest {
  on(event: string, fn: (msg: Record<string, unknown>) => void): void;
  status(s: Record<string, unknown>): void;
  receive(msg: Record<string, unknown>): void;
  error?: unknown;
}

const helper = require('node-red-node-test-helper') as Helper;
helper.init(require.resolve('node-red'));
const node = (name: string): unknown => require(`${PALETTE_DIR}/${name}.cjs`);

/** A host that records what the nodes ask of the gateway. */
class FakeHost implements OutpostNodeHost {
  readonly gateway = 'gw';
  readonly streams = ['telemetry', 'alarms'];
  readonly sent: Array<{ reading: FlowReading; stream: string }> = [];
  readonly writes: Array<[string, string, unknown]> = [];
  readonly subscribers: Array<{ match: { device: string; point: string }; fn: (r: Envelope) => void; live: boolean }> = [];
  failWrite = false;
  subscribe(match: { device: string; point: string }, fn: (r: Envelope) => void): () => void {
    const s = { match, fn, live: true };
    this.subscribers.push(s);
    return () => (s.live = false);
  }
  send(reading: FlowReading, stream: string): Promise<Envelope> {
    if (!this.streams.includes(stream)) return Promise.reject(new Error(`no stream named "${stream}"`));
    this.sent.push({ reading, stream });
    return Promise.resolve(makeEnvelope({ id: `gw:${this.sent.length}`, seq: this.sent.length, device: reading.device, point: reading.point, value: reading.value, quality: reading.quality ?? 'good', ts: reading.ts ?? 1 }));
  }
  write(device: string, point: string, value: number | boolean | string): Promise<unknown> {
    this.writes.push([device, point, value]);
    return this.failWrite ? Promise.reject(new Error('exception 2 (illegal data address)')) : Promise.resolve({ device, point, value, readBack: value });
  }
  readonly patches: Array<[string, unknown]> = [];
  readonly calls: Array<{ device: string; method: string; payload: unknown; opts: { timeoutMs: number; wait: boolean } }> = [];
  twin(device: string): Promise<unknown> {
    return device === 'pump-1'
      ? Promise.resolve({ id: 'pump-1', desired: { version: 3, document: { maxSpeed: 20 } }, applied: { version: 2, rejected: {} }, reported: { maxSpeed: 25 }, direct: {} })
      : Promise.reject(new Error(`no device "${device}" in the inventory`));
  }
  patchDesired(device: string, patch: unknown): Promise<{ version: number; desired: unknown }> {
    this.patches.push([device, patch]);
    return Promise.resolve({ version: 4, desired: patch });
  }
  /** Calls to "slow-1" wait here until the test answers them. */
  readonly held: Array<(answer: { status: number; payload?: unknown; ms: number }) => void> = [];
  call(device: string, method: string, payload: unknown, opts: { timeoutMs: number; wait: boolean }): Promise<{ status: number; payload?: unknown; ms: number }> {
    this.calls.push({ device, method, payload, opts });
    if (device === 'pump-1') return Promise.resolve({ status: 200, payload: { done: method }, ms: 12 });
    if (device === 'slow-1') return new Promise((resolve) => this.held.push(resolve));
    if (device === 'mute-1') return new Promise((_resolve, reject) => setTimeout(() => reject(new Error(`no answer from "${device}" within ${opts.timeoutMs} ms`)), 20));
    return Promise.reject(new Error(`"${device}" is offline (ask to wait until the deadline to queue the call)`));
  }
  readonly windows: Array<{ spec: Record<string, unknown>; emit: (r: Envelope) => void; got: Envelope[]; closed: boolean }> = [];
  window(spec: Record<string, unknown>, emit: (r: Envelope) => void): { process(r: Envelope): void; open(): number; close(): void } {
    const w = { spec, emit, got: [] as Envelope[], closed: false };
    this.windows.push(w);
    // One window open per reading received until one is emitted: enough for the status line.
    return { process: (r) => w.got.push(r), open: () => w.got.length, close: () => (w.closed = true) };
  }
}

const reading = (device: string, point: string, value: number): Envelope => makeEnvelope({ id: `r:${value}`, device, point, value, quality: 'good', ts: 1000, seq: value, unit: 'kW' });
/** Every status the node shows from now on, the last one last. */
function statuses(n: NodeUnderTest): Array<Record<string, unknown>> {
  const seen: Array<Record<string, unknown>> = [];
  const show = n.status.bind(n);
  n.status = (s) => {
    seen.push(s);
    show(s);
  };
  return seen;
}
const lastText = (seen: Array<Record<string, unknown>>): string => {
  const text = seen.at(-1)?.text;
  return typeof text === 'string' ? text : '';
};

const nextMessage = (n: NodeUnderTest): Promise<Record<string, unknown>> => new Promise((resolve) => n.on('input', resolve));

let host: FakeHost;
beforeAll(async () => helper.startServer());
afterAll(async () => helper.stopServer());
afterEach(async () => helper.unload());

async function load(name: string, config: Record<string, unknown>): Promise<{ n: NodeUnderTest; out: NodeUnderTest }> {
  host = new FakeHost();
  helper.settings({ outpost: host });
  await helper.load(node(name), [
    { id: 'n1', ...config, wires: [['h1']] },
    { id: 'h1', type: 'helper' },
  ]);
  return { n: helper.getNode('n1'), out: helper.getNode('h1') };
}

describe('Outpost palette nodes', () => {
  it('outpost in: subscribes with its globs and sends each reading on; unsubscribes on close', async () => {
    const { out } = await load('outpost-in', { type: 'outpost in', device: 'meter-*', point: 'power' });
    expect(host.subscribers.map((s) => s.match)).toEqual([{ device: 'meter-*', point: 'power' }]);
    const got = nextMessage(out);
    host.subscribers[0]!.fn(reading('meter-1', 'power', 1400));
    const msg = await got;
    expect(msg).toMatchObject({ topic: 'meter-1/power', payload: 1400, reading: { id: 'r:1400', unit: 'kW' } });
    await helper.unload();
    expect(host.subscribers[0]!.live).toBe(false);
  });

  it('outpost in: its status says whether readings arrive (none yet, how many, how long ago), is cleared on close, and leaves no timer', async () => {
    const before = openHandles();
    const { n } = await load('outpost-in', { type: 'outpost in', device: 'meter-*', point: 'power' });
    const seen = statuses(n);
    await waitFor('the waiting status', () => /meter-\* \/ power: no readings yet/.test(lastText(seen)) || seen.length === 0, 3000);
    host.subscribers[0]!.fn(reading('meter-1', 'power', 1));
    host.subscribers[0]!.fn(reading('meter-2', 'power', 2));
    await waitFor('the count in the status', () => /2 readings, last \d s ago/.test(lastText(seen)), 3000, 25, () => JSON.stringify(seen));
    expect(seen.at(-1)).toMatchObject({ fill: 'green', shape: 'dot' });
    await helper.unload();
    await waitFor('the status cleared', () => seen.length > 0 && Object.keys(seen.at(-1)!).length === 0, 3000);
    expect(noneLeftSince(before)).toBe(true);
  });

  it('outpost out: sends msg.reading, or payload with topic device/point, to its stream; completes after the host commits', async () => {
    const { n, out } = await load('outpost-out', { type: 'outpost out', stream: 'alarms', device: 'flows' });
    let got = nextMessage(out);
    n.receive({ reading: reading('meter-1', 'power', 7) });
    expect(((await got).reading as Envelope).id).toBe('gw:1');
    got = nextMessage(out);
    n.receive({ topic: 'pump-3/flow', payload: 12.5, unit: 'm3/h' });
    await got;
    got = nextMessage(out);
    n.receive({ topic: 'level', payload: 3 });
    await got;
    expect(host.sent).toEqual([
      { stream: 'alarms', reading: expect.objectContaining({ device: 'meter-1', point: 'power', value: 7 }) as unknown },
      { stream: 'alarms', reading: expect.objectContaining({ device: 'pump-3', point: 'flow', value: 12.5, unit: 'm3/h' }) as unknown },
      { stream: 'alarms', reading: expect.objectContaining({ device: 'flows', point: 'level', value: 3 }) as unknown },
    ]);
  });

  it('outpost out: msg.payload and msg.topic win over msg.reading (as core nodes treat them); the id derives from the input reading\'s and the node\'s', async () => {
    const { n, out } = await load('outpost-out', { type: 'outpost out', stream: 'telemetry' });
    const input = { ...reading('plc-1', 'speed', 1.65), id: 'gw:7:12' };
    // A function node did msg.payload = Math.round(msg.payload * 60) and kept msg.reading.
    let got = nextMessage(out);
    n.receive({ topic: 'plc-1/speed', payload: 99, reading: input });
    await got;
    // A stale reading keeps its quality through a flow; msg.quality overrides it.
    got = nextMessage(out);
    n.receive({ topic: 'plc-1/rpm', payload: 100, quality: 'stale', reading: input });
    await got;
    // The same input again (a redelivery) gets the same id: the cloud deduplicates it.
    got = nextMessage(out);
    n.receive({ topic: 'plc-1/speed', payload: 99, reading: input });
    await got;
    const node = (n as unknown as { id: string }).id;
    expect(host.sent.map((x) => x.reading)).toEqual([
      expect.objectContaining({ device: 'plc-1', point: 'speed', value: 99, id: `gw:7:12/nr:${node}/speed` }),
      expect.objectContaining({ device: 'plc-1', point: 'rpm', value: 100, quality: 'stale', id: `gw:7:12/nr:${node}/rpm` }),
      expect.objectContaining({ device: 'plc-1', point: 'speed', value: 99, id: `gw:7:12/nr:${node}/speed` }),
    ]);
  });

  it('outpost out: an unknown stream is an error for Catch nodes, nothing sent on', async () => {
    const { n, out } = await load('outpost-out', { type: 'outpost out', stream: 'nope' });
    let passed = false;
    out.on('input', () => (passed = true));
    const errored = new Promise<unknown>((resolve) => (n as unknown as { on(e: string, f: (x: unknown) => void): void }).on('call:error', resolve));
    n.receive({ topic: 'a/b', payload: 1 });
    const call = (await errored) as { args: unknown[] };
    expect(String(call.args[0])).toMatch(/no stream named "nope"/);
    expect(passed).toBe(false);
  });

  it('outpost window: builds the engine window from its properties, feeds it readings, passes its outputs on', async () => {
    const { n, out } = await load('outpost-window', { type: 'outpost window', kind: 'hopping', windowMs: '60000', hopMs: '10000', aggregates: 'avg, p95' });
    expect(host.windows[0]!.spec).toEqual({ kind: 'hopping', windowMs: 60000, hopMs: 10000, aggregates: ['avg', 'p95'], time: 'processing' });
    n.receive({ reading: reading('meter-1', 'power', 5) });
    n.receive({ topic: 'pump-3/flow', payload: 2 });
    await new Promise((r) => setImmediate(r));
    expect(host.windows[0]!.got.map((r) => [r.device, r.point, r.value])).toEqual([
      ['meter-1', 'power', 5],
      ['pump-3', 'flow', 2],
    ]);
    const got = nextMessage(out);
    host.windows[0]!.emit(makeEnvelope({ id: 'w', device: 'meter-1', point: 'power.avg', value: 5, quality: 'good', ts: 2, seq: 9 }));
    expect(await got).toMatchObject({ topic: 'meter-1/power.avg', payload: 5 });
    await helper.unload();
    expect(host.windows[0]!.closed).toBe(true);
  });

  it('outpost window: its status shows the open windows and the last output, is cleared on close (a redeploy starts clean), and leaves no timer', async () => {
    const before = openHandles();
    const { n } = await load('outpost-window', { type: 'outpost window', kind: 'tumbling', windowMs: '60000', aggregates: 'avg', time: 'event', allowedLatenessMs: '5000', precision: '2' });
    expect(host.windows[0]!.spec).toEqual({ kind: 'tumbling', windowMs: 60000, aggregates: ['avg'], time: 'event', allowedLatenessMs: 5000, precision: 2 });
    const seen = statuses(n);
    n.receive({ reading: reading('meter-1', 'power', 5) });
    n.receive({ reading: reading('meter-2', 'power', 6) });
    await waitFor('the open windows in the status', () => /^2 open · no output yet/.test(lastText(seen)), 3000, 25, () => JSON.stringify(seen));
    host.windows[0]!.emit(makeEnvelope({ id: 'w', device: 'meter-1', point: 'power.avg', value: 5.5, quality: 'good', ts: 2, seq: 9 }));
    await waitFor('the last output in the status', () => /^2 open · last power\.avg=5\.5 \d s ago/.test(lastText(seen)), 3000, 25, () => JSON.stringify(seen));
    await helper.unload();
    await waitFor('the status cleared', () => Object.keys(seen.at(-1) ?? { x: 1 }).length === 0, 3000);
    expect(noneLeftSince(before)).toBe(true);
  });

  it('outpost window: the editor offers exactly the kinds and aggregates the gateway accepts', () => {
    const html = readFileSync(join(PALETTE_DIR, 'outpost-window.html'), 'utf8');
    const list = (name: string): unknown => JSON.parse(html.match(new RegExp(`var ${name} = (\\[[^\\]]*\\]);`))![1]!.replace(/'/g, '"'));
    expect(list('KINDS')).toEqual([...WINDOW_KIND_NAMES]);
    expect(list('AGGREGATES')).toEqual([...AGGREGATES]);
    expect(Number(html.match(/var MAX_COUNT = (\d+);/)![1])).toBe(MAX_WINDOW_VALUES);
  });

  it('outpost write: writes payload to its point and passes the read-back on; a refusal is an error; an untrusted source writes nothing', async () => {
    const { n, out } = await load('outpost-write', { type: 'outpost write', device: 'plc-1', point: 'speed-setpoint', sources: 'plc-1' });
    const errors: unknown[] = [];
    (n as unknown as { on(e: string, f: (x: unknown) => void): void }).on('call:error', (e) => errors.push(e));
    const got = nextMessage(out);
    n.receive({ payload: 48.5, reading: { device: 'plc-1', point: 'speed', value: 48.4 } });
    expect((await got).payload).toEqual({ device: 'plc-1', point: 'speed-setpoint', value: 48.5, readBack: 48.5 });
    host.failWrite = true;
    n.receive({ payload: 1, reading: { device: 'plc-1', point: 'speed', value: 1 } });
    await waitFor('the write error', () => errors.length === 1);
    expect(String((errors[0] as { args: unknown[] }).args[0])).toMatch(/illegal data address/);
    // A reading from another device (or none) is not a trusted source: refused, nothing written.
    n.receive({ payload: 55.5, reading: { device: 'pump-3', point: 'speed', value: 55.3 } });
    n.receive({ payload: 55.5 });
    await waitFor('the refusals', () => errors.length === 3);
    expect(String((errors[1] as { args: unknown[] }).args[0])).toMatch(/"pump-3" is not from a trusted source/);
    expect(host.writes).toEqual([
      ['plc-1', 'speed-setpoint', 48.5],
      ['plc-1', 'speed-setpoint', 1],
    ]);
  });

  it('outpost out and outpost write: the last status is cleared on close, so a redeployed flow starts clean', async () => {
    for (const [name, config, msg] of [
      ['outpost-out', { type: 'outpost out', stream: 'telemetry' }, { topic: 'a/b', payload: 1 }],
      ['outpost-write', { type: 'outpost write', device: 'plc-1', point: 'speed-setpoint', sources: 'plc-1' }, { payload: 2, reading: { device: 'plc-1', point: 'speed', value: 2 } }],
    ] as const) {
      const { n } = await load(name, config);
      const seen = statuses(n);
      n.receive({ ...msg });
      await waitFor(`${name}: a status`, () => lastText(seen) !== '', 3000);
      await helper.unload();
      await waitFor(`${name}: the status cleared`, () => Object.keys(seen.at(-1) ?? { x: 1 }).length === 0, 3000, 25, () => JSON.stringify(seen));
    }
  });

  it('outpost twin: reads a twin or patches desired state, the device from the node, msg.device or msg.topic; errors reach Catch; status cleared on close', async () => {
    const { n, out } = await load('outpost-twin', { type: 'outpost twin', action: 'get' });
    const errors: unknown[] = [];
    (n as unknown as { on(e: string, f: (x: unknown) => void): void }).on('call:error', (e) => errors.push(e));
    const seen = statuses(n);
    let got = nextMessage(out);
    n.receive({ topic: 'pump-1' });
    expect(await got).toMatchObject({ device: 'pump-1', payload: { desired: { version: 3 } } });
    n.receive({ device: 'ghost' });
    await waitFor('the unknown device error', () => errors.length === 1);
    expect(String((errors[0] as { args: unknown[] }).args[0])).toMatch(/no device "ghost"/);
    await helper.unload();
    await waitFor('the status cleared', () => Object.keys(seen.at(-1) ?? { x: 1 }).length === 0, 3000);

    const patching = await load('outpost-twin', { type: 'outpost twin', action: 'patch', device: 'pump-1' });
    const perrors: unknown[] = [];
    (patching.n as unknown as { on(e: string, f: (x: unknown) => void): void }).on('call:error', (e) => perrors.push(e));
    got = nextMessage(patching.out);
    patching.n.receive({ payload: { maxSpeed: 12 } });
    expect((await got).payload).toEqual({ version: 4, desired: { maxSpeed: 12 } });
    expect(host.patches).toEqual([['pump-1', { maxSpeed: 12 }]]);
    patching.n.receive({ payload: 42 });
    await waitFor('the bad patch error', () => perrors.length === 1);
    expect(String((perrors[0] as { args: unknown[] }).args[0])).toMatch(/msg.payload must be an object/);
    expect(host.patches.length).toBe(1);
  });

  it('outpost call: calls the method with msg.payload and passes the answer on; no answer is an error for Catch; status cleared on close', async () => {
    const { n, out } = await load('outpost-call', { type: 'outpost call', method: 'reboot', timeoutMs: '5000', wait: true });
    const errors: unknown[] = [];
    (n as unknown as { on(e: string, f: (x: unknown) => void): void }).on('call:error', (e) => errors.push(e));
    const seen = statuses(n);
    const got = nextMessage(out);
    n.receive({ topic: 'pump-1', payload: { delayS: 1 } });
    expect(await got).toMatchObject({ device: 'pump-1', method: 'reboot', status: 200, payload: { done: 'reboot' }, ms: 12 });
    expect(host.calls[0]).toEqual({ device: 'pump-1', method: 'reboot', payload: { delayS: 1 }, opts: { timeoutMs: 5000, wait: true } });
    n.receive({ device: 'pump-7', payload: 1 });
    await waitFor('the offline error', () => errors.length === 1);
    expect(String((errors[0] as { args: unknown[] }).args[0])).toMatch(/"pump-7" is offline/);
    n.receive({ payload: 1 });
    await waitFor('the missing device error', () => errors.length === 2);
    expect(String((errors[1] as { args: unknown[] }).args[0])).toMatch(/needs a device/);
    await helper.unload();
    await waitFor('the status cleared', () => seen.length > 0 && Object.keys(seen.at(-1)!).length === 0, 3000);
  });
  it('outpost twin: its status shows the versions read or written, and the error in a red ring', async () => {
    const { n, out } = await load('outpost-twin', { type: 'outpost twin', action: 'get', device: 'pump-1' });
    const errors: unknown[] = [];
    (n as unknown as { on(e: string, f: (x: unknown) => void): void }).on('call:error', (e) => errors.push(e));
    const seen = statuses(n);
    // The node's device wins over msg.topic.
    const got = nextMessage(out);
    n.receive({ topic: 'ghost' });
    expect(await got).toMatchObject({ device: 'pump-1', payload: { desired: { version: 3 }, applied: { version: 2 }, reported: { maxSpeed: 25 } } });
    expect(seen.at(-1)).toEqual({ fill: 'green', shape: 'dot', text: 'pump-1: desired v3, applied v2' });
    await helper.unload();

    const patching = await load('outpost-twin', { type: 'outpost twin', action: 'patch' });
    const pseen = statuses(patching.n);
    const perrors: unknown[] = [];
    (patching.n as unknown as { on(e: string, f: (x: unknown) => void): void }).on('call:error', (e) => perrors.push(e));
    // null removes a direct value: it goes to the gateway as it is.
    const pgot = nextMessage(patching.out);
    patching.n.receive({ device: 'pump-1', payload: { maxSpeed: null, mode: 'eco' } });
    expect((await pgot).payload).toEqual({ version: 4, desired: { maxSpeed: null, mode: 'eco' } });
    expect(host.patches).toEqual([['pump-1', { maxSpeed: null, mode: 'eco' }]]);
    expect(pseen.at(-1)).toEqual({ fill: 'green', shape: 'dot', text: 'pump-1: desired v4' });
    patching.n.receive({ payload: { mode: 'eco' } });
    await waitFor('the missing device error', () => perrors.length === 1);
    expect(String((perrors[0] as { args: unknown[] }).args[0])).toMatch(/name the device/);
    expect(pseen.at(-1)).toMatchObject({ fill: 'red', shape: 'ring', text: expect.stringMatching(/name the device/) as unknown });
    expect(host.patches.length).toBe(1);
  });

  it('outpost call: the method from msg.method; a timeout is an error for Catch, shown in a red ring', async () => {
    const { n, out } = await load('outpost-call', { type: 'outpost call', device: 'pump-1', timeoutMs: '' });
    const errors: unknown[] = [];
    (n as unknown as { on(e: string, f: (x: unknown) => void): void }).on('call:error', (e) => errors.push(e));
    const seen = statuses(n);
    const got = nextMessage(out);
    n.receive({ method: 'flush', payload: 'now' });
    expect(await got).toMatchObject({ payload: { done: 'flush' }, status: 200, ms: 12 });
    // A blank timeout is the default 10 s; not waiting for an offline device is the default.
    expect(host.calls[0]).toEqual({ device: 'pump-1', method: 'flush', payload: 'now', opts: { timeoutMs: 10000, wait: false } });
    expect(seen.at(-1)).toEqual({ fill: 'green', shape: 'dot', text: 'pump-1 flush: 200 in 12 ms' });
    await helper.unload();

    const timing = await load('outpost-call', { type: 'outpost call', method: 'flush', timeoutMs: '200' });
    const terrors: unknown[] = [];
    (timing.n as unknown as { on(e: string, f: (x: unknown) => void): void }).on('call:error', (e) => terrors.push(e));
    const tseen = statuses(timing.n);
    let passed = false;
    timing.out.on('input', () => (passed = true));
    timing.n.receive({ topic: 'mute-1', payload: 1 });
    await waitFor('the timeout error', () => terrors.length === 1);
    expect(String((terrors[0] as { args: unknown[] }).args[0])).toMatch(/no answer from "mute-1" within 200 ms/);
    expect(tseen.at(-1)).toMatchObject({ fill: 'red', shape: 'ring', text: 'no answer from "mute-1" within 200 ms' });
    await helper.unload();

    // A method or device name the API would refuse never reaches the gateway.
    const bad = await load('outpost-call', { type: 'outpost call', timeoutMs: '1000' });
    const berrors: unknown[] = [];
    (bad.n as unknown as { on(e: string, f: (x: unknown) => void): void }).on('call:error', (e) => berrors.push(e));
    bad.n.receive({ topic: 'pump-1', method: 'a:b', payload: 1 });
    bad.n.receive({ topic: 'pump 1', method: 'ok', payload: 1 });
    await waitFor('the refusals', () => berrors.length === 2);
    expect(String((berrors[0] as { args: unknown[] }).args[0])).toMatch(/"pump-1" and "a:b"/);
    expect(host.calls).toEqual([]);
    expect(passed).toBe(false);
  });

  it('outpost call: a timeout out of range is refused at deploy (status and error), and no call is made', async () => {
    for (const timeoutMs of ['50', '400000', '1.5', 'soon']) {
      const { n } = await load('outpost-call', { type: 'outpost call', device: 'pump-1', method: 'flush', timeoutMs });
      const seen = statuses(n);
      const errors: unknown[] = [];
      (n as unknown as { on(e: string, f: (x: unknown) => void): void }).on('call:error', (e) => errors.push(e));
      n.receive({ payload: 1 });
      // One error at deploy (the debug sidebar), one for the message (Catch nodes).
      await waitFor(`${timeoutMs}: the refusals`, () => errors.length === 2);
      for (const e of errors) expect(String((e as { args: unknown[] }).args[0])).toMatch(/timeoutMs: a whole number of ms from 100 to 300000/);
      expect(host.calls).toEqual([]);
      await helper.unload();
      expect(seen).toEqual([{}]);
    }
  });

  it('outpost call: its status counts the calls in flight, then shows the last outcome; a call settling after close leaves the status cleared', async () => {
    const { n, out } = await load('outpost-call', { type: 'outpost call', device: 'slow-1', method: 'drain', wait: true });
    const seen = statuses(n);
    n.receive({ payload: 1 });
    n.receive({ payload: 2 });
    await waitFor('two calls held', () => host.held.length === 2);
    expect(seen.at(-1)).toEqual({ fill: 'blue', shape: 'dot', text: '2 in flight' });
    expect(host.calls.map((c) => c.opts)).toEqual([
      { timeoutMs: 10000, wait: true },
      { timeoutMs: 10000, wait: true },
    ]);
    const got = nextMessage(out);
    host.held[0]!({ status: 503, payload: { busy: true }, ms: 40 });
    expect(await got).toMatchObject({ status: 503, payload: { busy: true }, ms: 40 });
    expect(seen.at(-1)).toEqual({ fill: 'blue', shape: 'dot', text: '1 in flight' });
    await helper.unload();
    expect(seen.at(-1)).toEqual({});
    // The redeployed node (same id) must not get the old node's last outcome.
    host.held[1]!({ status: 200, ms: 50 });
    await new Promise((r) => setTimeout(r, 20));
    expect(seen.at(-1)).toEqual({});
  });
});

describe('the gateway side of outpost twin and outpost call (makeNodeHost)', () => {
  const counter = { inc: () => undefined, bind: () => ({ inc: () => undefined }) };
  const asked: Array<Parameters<FlowDevices['call']>[0]> = [];
  const devices: FlowDevices = {
    show: (d) => {
      if (d !== 'pump-1') throw new RegistryError('unknown-device', `no device "${d}" in the inventory`);
      return { id: d, desired: { version: 3, document: {} } };
    },
    editDesired: (d, patch) => {
      if (Array.isArray((patch as Record<string, unknown>).speeds)) throw new RegistryError('invalid', 'desired.speeds: arrays are not allowed in twin documents');
      return { version: 4, doc: patch, appliedVersion: 3 } as { version: number; doc: unknown };
    },
    call: (req) => {
      asked.push(req);
      return req.device === 'pump-1' ? Promise.resolve({ id: 'c1', status: 200, payload: 'ok', ms: 3 }) : Promise.reject(new CallError('offline', `"${req.device}" is offline (ask to wait until the deadline to queue the call)`));
    },
  };
  const host = makeNodeHost({
    gateway: 'gw',
    streams: ['telemetry'],
    pipeline: {} as IngestPipeline,
    sequence: { next: () => ({ id: 'gw:1', seq: 1 }), reserve: () => ({ seq0: 1, idPrefix: 'gw:' }) },
    write: () => Promise.resolve(undefined),
    devices,
    metrics: { counter: () => counter, gauge: () => ({ set: () => undefined }) },
    log: createLogger({ level: 'silent' }),
  });

  it('passes the registry\'s twin, patch result and call answer on, and its errors with their messages', async () => {
    await expect(host.twin('pump-1')).resolves.toEqual({ id: 'pump-1', desired: { version: 3, document: {} } });
    await expect(host.twin('ghost')).rejects.toThrow('no device "ghost" in the inventory');
    await expect(host.patchDesired('pump-1', { maxSpeed: null })).resolves.toEqual({ version: 4, desired: { maxSpeed: null } });
    await expect(host.patchDesired('pump-1', { speeds: [1] })).rejects.toMatchObject({ name: 'RegistryError', kind: 'invalid', message: expect.stringMatching(/^desired\.speeds: arrays/) as unknown });
    await expect(host.call('pump-1', 'cool', { minutes: 5 }, { timeoutMs: 2000, wait: true })).resolves.toMatchObject({ status: 200, payload: 'ok', ms: 3 });
    await expect(host.call('pump-7', 'cool', 1, { timeoutMs: 2000, wait: false })).rejects.toMatchObject({ kind: 'offline', message: expect.stringMatching(/^"pump-7" is offline/) as unknown });
    expect(asked).toEqual([
      { device: 'pump-1', method: 'cool', payload: { minutes: 5 }, timeoutMs: 2000, wait: true },
      { device: 'pump-7', method: 'cool', payload: 1, timeoutMs: 2000, wait: false },
    ]);
  });

  it('refuses a call the API would refuse (a method name, a timeout out of range) instead of changing it', async () => {
    asked.length = 0;
    await expect(host.call('pump-1', 'a:b', 1, { timeoutMs: 2000, wait: false })).rejects.toThrow(/^method: only letters, digits/);
    await expect(host.call('pump-1', 'cool', 1, { timeoutMs: 50, wait: false })).rejects.toThrow(/^timeoutMs: /);
    await expect(host.call('pump-1', 'cool', 1, { timeoutMs: 300_001, wait: false })).rejects.toThrow(/^timeoutMs: /);
    expect(asked).toEqual([]);
  });
});
