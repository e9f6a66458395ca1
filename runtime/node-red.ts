import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import type { EventEmitter } from 'node:events';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { fileURLToPath } from 'node:url';
import { WindowRule } from '../rules/window.js';
import { windowRuleSchema } from '../rules/config.js';
import { formatIssues } from './config/load.js';
import { z } from 'zod';
import {
  callTimeoutMsSchema,
  compileGlob,
  errorMessage,
  isBatch,
  makeEnvelope,
  nameSchema,
  type Component,
  type ComponentContext,
  type Envelope,
  type Logger,
  type Metrics,
  type Quality,
  type Readings,
  type SequenceSource,
  type Value,
  type WriteValue,
} from './contracts/index.js';
import { sendError } from './http/respond.js';
import { replaceNodeRedLoginLock } from './node-red-login.js';
import { restrictToOwner } from './security/secret-files.js';
import type { IngestPipeline } from './ingest.js';

const require = createRequire(import.meta.url);

/** The part of the node-red package the gateway uses (it ships no typings). */
interface NodeRed {
  init(server: Server, settings: Record<string, unknown>): void;
  start(): Promise<void>;
  stop(): Promise<void>;
  readonly httpAdmin: (req: IncomingMessage, res: ServerResponse) => void;
  /** The runtime's events: `flows:stopping`, `flows:started`, `runtime-event`. */
  readonly events: EventEmitter;
}

/** How long a stop waits for a flows start under way (they take milliseconds) before it stops anyway. */
const FLOW_START_WAIT_MS = 10_000;

/**
 * Where the Outpost palette lives: rules/node-red, a package with a `node-red` field (CommonJS and
 * HTML as Node-RED loads them, not compiled), loaded through nodesDir. Found from the sources and
 * from dist/.
 */
export const PALETTE_DIR = ['../rules/node-red', '../../rules/node-red']
  .map((p) => fileURLToPath(new URL(p, import.meta.url)))
  .find((dir) => existsSync(join(dir, 'package.json')))!;

/** What a reading sent by a flow may say; the rest (id, seq, ts by default) the gateway gives it. */
export interface FlowReading {
  readonly device: string;
  readonly point: string;
  readonly value: Value;
  readonly quality?: Quality | undefined;
  readonly ts?: number | undefined;
  readonly unit?: string | undefined;
  /** The output's id, derived from the input reading's (deduplicated in the cloud); default: a new one. */
  readonly id?: string | undefined;
}

/** What Node-RED hands a log handler. */
interface NodeRedLogMessage {
  readonly level: number;
  readonly msg?: unknown;
  readonly type?: string;
  readonly id?: string;
  readonly name?: string;
}

/** Node-RED's log messages (level 10 fatal … 30 warn) as the gateway's, at warn or error. */
export function nodeRedLogHandler(log: Logger): (m: NodeRedLogMessage) => void {
  return (m) => {
    if (m.level > 30) return;
    const text = m.msg instanceof Error ? m.msg.message : typeof m.msg === 'string' ? m.msg : JSON.stringify(m.msg);
    const fields = { component: 'node-red', ...(m.id ? { node: m.id } : {}), ...(m.type ? { type: m.type } : {}), ...(m.name ? { name: m.name } : {}) };
    if (m.level <= 20) log.error(fields, `node-red: ${text}`);
    else log.warn(fields, `node-red: ${text}`);
  };
}

/** A window of the rule engine inside a flow. */
export interface FlowWindow {
  process(reading: Envelope): void;
  /** Windows open now (all groups). */
  open(): number;
  close(): void;
}

/**
 * What the Outpost nodes reach through `RED.settings.outpost`: readings after they are committed,
 * the durable outbox, Modbus writes and the engine's windows.
 */
export interface OutpostNodeHost {
  readonly gateway: string;
  readonly streams: readonly string[];
  /** Calls `fn` with every committed reading whose device and point match the globs; returns the unsubscribe. */
  subscribe(match: { device: string; point: string }, fn: (reading: Envelope) => void): () => void;
  /** Appends a reading to the outbox stream; resolves with it once committed (durable). */
  send(reading: FlowReading, stream: string): Promise<Envelope>;
  /** Writes a device point through its driver's write capability, verified by reading it back. */
  write(device: string, point: string, value: WriteValue): Promise<unknown>;
  /** A window rule (the fields of a `type: window` rule, without id/route/stream) emitting to `emit`. */
  window(spec: Record<string, unknown>, emit: (reading: Envelope) => void): FlowWindow;
  /** A device's twin as the API shows it (docs/devices.md); rejects for an unknown device. */
  twin(device: string): Promise<unknown>;
  /** Direct desired edits (a JSON merge patch); resolves with the new effective document and its version. */
  patchDesired(device: string, patch: unknown): Promise<{ version: number; desired: unknown }>;
  /** A method call to a child; resolves with its answer, rejects when there is none (offline, timeout…). */
  call(device: string, method: string, payload: unknown, opts: { timeoutMs: number; wait: boolean }): Promise<{ status: number; payload?: unknown; ms: number }>;
}

/** The device registry as flows reach it (runtime/devices). */
export interface FlowDevices {
  show(device: string): unknown;
  editDesired(device: string, patch: unknown): { version: number; doc: unknown };
  call(req: { device: string; method: string; payload?: unknown; timeoutMs: number; wait: boolean }): Promise<{ status: number; payload?: unknown; ms: number }>;
}

export interface NodeRedOptions {
  readonly userDir: string;
  /**
   * Encrypts the credentials of flows (flows_cred.json): derived from the gateway's secret, so the
   * userDir copied elsewhere (a backup) reveals no credential without the state directory.
   */
  readonly credentialSecret: string;
  readonly admin: { readonly username: string; readonly passwordHash: string };
  /** What the Outpost nodes reach, made once the component starts (it needs the metrics and log). */
  readonly host: (ctx: ComponentContext) => OutpostNodeHost;
  /** The gateway's HTTP server (WebSocket upgrades of the editor) and where /red is mounted. */
  readonly server: () => Server | undefined;
  readonly mount: (prefix: string, handler: (req: IncomingMessage, res: ServerResponse) => void) => void;
}

const FLOW_FIELDS = /^[A-Za-z0-9_.:-]{1,64}$/;
const FLOW_POINT = /^[A-Za-z0-9_.:-]{1,128}$/;
/** A flow's call, checked as the API checks one (POST /api/v1/devices/{id}/calls). */
const flowCallSchema = z.strictObject({ method: nameSchema, timeoutMs: callTimeoutMsSchema, wait: z.boolean() });

export function makeNodeHost(opts: {
  gateway: string;
  streams: readonly string[];
  pipeline: IngestPipeline;
  sequence: SequenceSource;
  write: (device: string, point: string, value: WriteValue) => Promise<unknown>;
  devices: FlowDevices;
  metrics: Metrics;
  log: Logger;
}): OutpostNodeHost {
  const failures = opts.metrics.counter('outpost_flow_delivery_failures_total', "Readings an 'outpost in' node failed to take (the flow threw)");
  let lastFailure = '';
  const subscribers = new Set<{ device: (s: string) => boolean; point: (s: string) => boolean; fn: (r: Envelope) => void }>();
  const give = (s: { fn: (r: Envelope) => void }, r: Envelope): void => {
    try {
      s.fn(r);
    } catch (err) {
      // A flow's failure is the flow's: the other subscribers and readings still get theirs.
      failures.inc();
      const message = errorMessage(err);
      if (message !== lastFailure) opts.log.warn({ err: message }, "an 'outpost in' flow failed to take a reading");
      lastFailure = message;
    }
  };
  const deliver = (all: readonly Readings[]): void => {
    for (const readings of all) {
      if (isBatch(readings)) {
        for (const s of subscribers) {
          if (!s.device(readings.device)) continue;
          for (let k = 0; k < readings.length; k++) if (s.point(readings.point(k))) give(s, readings.at(k));
        }
      } else {
        for (const r of readings) for (const s of subscribers) if (s.device(r.device) && s.point(r.point)) give(s, r);
      }
    }
  };
  let removeTap: (() => void) | undefined;
  let windows = 0;
  return {
    gateway: opts.gateway,
    streams: opts.streams,
    subscribe(match, fn) {
      const s = { device: compileGlob(match.device || '*'), point: compileGlob(match.point || '*'), fn };
      subscribers.add(s);
      removeTap ??= opts.pipeline.addTap(deliver);
      return () => {
        subscribers.delete(s);
        if (subscribers.size === 0) {
          removeTap?.();
          removeTap = undefined;
        }
      };
    },
    async send(reading, stream) {
      if (!opts.streams.includes(stream)) throw new Error(`no stream named "${stream}"; the gateway has ${opts.streams.join(', ')}`);
      if (typeof reading.device !== 'string' || !FLOW_FIELDS.test(reading.device)) throw new Error(`device: expected a name of letters, digits, "_.:-", not ${JSON.stringify(reading.device)}`);
      if (typeof reading.point !== 'string' || !FLOW_POINT.test(reading.point)) throw new Error(`point: expected a name of letters, digits, "_.:-", not ${JSON.stringify(reading.point)}`);
      const v = reading.value;
      if (!(v === null || (typeof v === 'string' && v.length <= 1024) || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v)))) {
        throw new Error(`value: expected a finite number, text (up to 1024 characters), true/false or null, not ${JSON.stringify(v)}`);
      }
      const quality = reading.quality ?? (v === null ? 'bad' : 'good');
      if (quality !== 'good' && quality !== 'bad' && quality !== 'stale') throw new Error(`quality: expected good, bad or stale, not ${JSON.stringify(quality)}`);
      const now = Date.now();
      const ts = reading.ts ?? now;
      if (typeof ts !== 'number' || !Number.isSafeInteger(ts) || ts <= 0 || ts > now + 5 * 60_000) throw new Error(`ts: expected ms since the epoch, not in the future, not ${JSON.stringify(ts)}`);
      if (reading.unit !== undefined && (typeof reading.unit !== 'string' || reading.unit.length === 0 || reading.unit.length > 32)) throw new Error(`unit: expected short text, not ${JSON.stringify(reading.unit)}`);
      if (reading.id !== undefined && (typeof reading.id !== 'string' || reading.id.length === 0 || reading.id.length > 256 || !/^[\x20-\x7e]+$/.test(reading.id))) {
        throw new Error(`id: expected printable ASCII of up to 256 characters, not ${JSON.stringify(reading.id)}`);
      }
      const next = opts.sequence.next();
      const envelope = makeEnvelope({ id: reading.id ?? next.id, device: reading.device, point: reading.point, value: v, quality, ts, seq: next.seq, unit: reading.unit });
      await opts.pipeline.append([{ envelope, stream }]);
      return envelope;
    },
    write: opts.write,
    twin: (device) => Promise.resolve().then(() => opts.devices.show(device)),
    patchDesired: (device, patch) =>
      Promise.resolve().then(() => {
        const s = opts.devices.editDesired(device, patch);
        return { version: s.version, desired: s.doc };
      }),
    call: (device, method, payload, o) => {
      // Refused, not replaced by a default: a flow asking for 50 ms should hear why it gets no 50 ms.
      const raw = { method, timeoutMs: o.timeoutMs, wait: o.wait };
      const parsed = flowCallSchema.safeParse(raw);
      if (!parsed.success) return Promise.reject(new Error(formatIssues(raw, parsed.error.issues).join('; ')));
      return opts.devices.call({ device, payload, ...parsed.data });
    },
    window(spec, emit) {
      const parsed = windowRuleSchema.safeParse({ ...spec, id: `node-red-${++windows}`, type: 'window' });
      if (!parsed.success) throw new Error(formatIssues(spec, parsed.error.issues).join('; '));
      const rule = new WindowRule(parsed.data, opts.sequence);
      const out = (o: { envelope?: Envelope | undefined }): void => {
        if (o.envelope) emit(o.envelope);
      };
      // Processing-time windows close on the clock; four times a second is soon enough for a flow.
      // takeDirty() forgets groups with nothing open: the node's memory stays bounded by what is open.
      const timer = setInterval(() => {
        rule.tick(Date.now(), out);
        rule.takeDirty();
      }, 250);
      timer.unref();
      return {
        process: (r) => rule.process(r, Date.now(), out),
        open: () => rule.openWindows(),
        close: () => clearInterval(timer),
      };
    },
  };
}

/** Makes every file under `dir` owner-only (0600, directories 0700) where group or others could read it. */
function restrictTree(dir: string): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const path = join(dir, name);
    let st;
    try {
      st = statSync(path);
    } catch {
      continue; // removed meanwhile
    }
    // node_modules holds code, not secrets, and may be large: the 0700 userDir already hides it.
    if (st.isDirectory() && name !== 'node_modules') restrictTree(path);
    if ((st.mode & 0o077) !== 0) restrictToOwner(path);
  }
  restrictToOwner(dir);
}

/** The part of Node-RED's storage API (`@node-red/runtime/lib/storage/localfilesystem`) wrapped below. */
type NodeRedStorage = Record<string, unknown>;

/**
 * Node-RED's own file storage, with every file it writes made owner-only right after: it writes
 * with the process umask (0644 usually) and has no setting for a mode, and flows_cred.json,
 * .sessions.json (editor tokens) and .config.users.json must not be readable by other users.
 */
function ownerOnlyStorage(userDir: string): NodeRedStorage {
  // Resolved from node-red's own package: the runtime is its dependency, not ours.
  const local = createRequire(require.resolve('node-red'))('@node-red/runtime/lib/storage/localfilesystem') as NodeRedStorage;
  const wrapped: NodeRedStorage = { ...local };
  for (const key of Object.keys(local)) {
    const fn = local[key];
    if (typeof fn !== 'function' || !(key === 'init' || key.startsWith('save'))) continue;
    wrapped[key] = async (...args: unknown[]): Promise<unknown> => {
      const result: unknown = await (fn as (...a: unknown[]) => Promise<unknown>).apply(local, args);
      restrictTree(userDir);
      return result;
    };
  }
  return wrapped;
}

/** The part of Node-RED's editor token store (`@node-red/editor-api/lib/auth/tokens.js`) used below. */
interface NodeRedTokens {
  init(adminAuth: Record<string, unknown>, storage: { getSessions(): Promise<object>; saveSessions(s: object): Promise<void> }): Promise<void>;
  get(token: string): Promise<unknown>;
}

/**
 * Node-RED's editor keeps its login sessions in a module that arms a timer for the next session
 * expiry (7 days) on every login, and `RED.stop()` does not clear it: after an operator logged in,
 * that timer alone kept a stopped gateway's process alive. Its only way to clear the timer is a
 * first session lookup after `init`, which expires sessions and re-arms the timer only for the
 * sessions it holds; giving it none (an empty store that saves nothing: the real sessions file is
 * untouched, and the next RED.init loads it again) clears it.
 */
async function endSessionExpiryTimer(): Promise<void> {
  let tokens: NodeRedTokens;
  try {
    // Resolved from node-red's own package: the editor API is its dependency, not ours.
    tokens = createRequire(require.resolve('node-red'))('@node-red/editor-api/lib/auth/tokens.js') as NodeRedTokens;
  } catch {
    return; // another layout of node-red: nothing we know to end
  }
  await tokens.init({}, { getSessions: () => Promise.resolve({}), saveSessions: () => Promise.resolve() });
  await tokens.get('');
}

/**
 * Node-RED inside the gateway: the editor and its admin API at /red on the gateway's HTTP server,
 * behind the gateway's admin credentials, flows in `userDir`, the Outpost palette loaded, npm
 * installs from the editor off. One per process (Node-RED keeps module-level state).
 */
export class HostedNodeRed implements Component {
  readonly name = 'node-red';
  private red: NodeRed | undefined;
  private server: Server | undefined;
  private upgradeBefore: Set<(...args: unknown[]) => void> = new Set();
  private log: Logger | undefined;
  /** The flows starts Node-RED is making (see watchFlowStarts); `done` once none is left. */
  private flowStarts: { pending: number; readonly done: Promise<void>; readonly settle: () => void } | undefined;
  private unwatchFlowStarts: (() => void) | undefined;

  constructor(private readonly opts: NodeRedOptions) {}

  async start(ctx: ComponentContext): Promise<void> {
    const server = this.opts.server();
    if (!server) throw new Error('node-red: the gateway HTTP server is not listening');
    this.log = ctx.log;
    if (!replaceNodeRedLoginLock()) ctx.log.warn('node-red: its editor API was loaded before the gateway could replace its name-wide login lock');
    const red = require('node-red') as NodeRed;
    // Flows, their credentials and the editor's sessions: the owner's alone (a userDir made by an
    // earlier version is tightened too).
    mkdirSync(this.opts.userDir, { recursive: true, mode: 0o700 });
    restrictTree(this.opts.userDir);
    this.server = server;
    this.upgradeBefore = new Set(server.listeners('upgrade') as Array<(...args: unknown[]) => void>);
    red.init(server, {
      userDir: this.opts.userDir,
      flowFile: 'flows.json',
      credentialSecret: this.opts.credentialSecret,
      storageModule: ownerOnlyStorage(this.opts.userDir),
      httpAdminRoot: '/red',
      httpNodeRoot: false,
      nodesDir: [PALETTE_DIR],
      adminAuth: { type: 'credentials', users: [{ username: this.opts.admin.username, password: this.opts.admin.passwordHash, permissions: '*' }] },
      // Node-RED's own warnings and errors (a node's node.warn/node.error, a failed write caught
      // nowhere, an invalid node) into the gateway's log, with the node that raised them.
      logging: { console: { level: 'off', metrics: false, audit: false }, outpost: { level: 'warn', metrics: false, audit: false, handler: () => nodeRedLogHandler(ctx.log) } },
      externalModules: { autoInstall: false, palette: { allowInstall: false, allowUpload: false }, modules: { allowInstall: false } },
      editorTheme: { tours: false, projects: { enabled: false }, header: { title: 'Outpost · Node-RED' } },
      telemetry: { enabled: false, updateNotification: false },
      outpost: this.opts.host(ctx),
    });
    this.red = red;
    this.watchFlowStarts(red.events);
    const admin = red.httpAdmin;
    // Once stopping, the editor and its API are closed: no deploy begins a flows start.
    this.opts.mount('/red', (req, res) => (this.red ? admin(req, res) : sendError(res, 503, 'node-red is stopping')));
    // RED.start() resolves before the flows saved in userDir are started: running means they are.
    this.expectFlowStart();
    try {
      await red.start();
      await this.flowStartsDone('start');
      restrictTree(this.opts.userDir);
    } catch (err) {
      // The gateway stops only the parts that started: what this start opened is closed here.
      this.flowStarted(true);
      await this.stop().catch(() => undefined);
      throw err;
    }
    ctx.log.info({ userDir: this.opts.userDir }, 'node-red started at /red');
  }

  /** Flows stop before the drivers and the store, so what they send is committed or refused. */
  async stop(): Promise<void> {
    const red = this.red;
    if (!red) return;
    this.red = undefined;
    // A flows start under way (a deploy just made) finishes first: RED.stop() in the middle of one
    // stops the old flows while the new nodes are being created, and those then run for good (an
    // inject's repeat timer), as Node-RED counts its flows stopped and ignores a second stop.
    while (this.flowStarts) await this.flowStartsDone('stop');
    this.unwatchFlowStarts?.();
    await red.stop();
    await endSessionExpiryTimer();
    // Node-RED leaves its upgrade listeners behind; one called after stop would throw.
    const server = this.server;
    if (server) for (const l of server.listeners('upgrade') as Array<(...args: unknown[]) => void>) if (!this.upgradeBefore.has(l)) server.off('upgrade', l);
  }

  status(): Record<string, unknown> {
    return {};
  }

  /**
   * Node-RED starts flows without anyone awaiting it: after RED.start() resolved, and after a deploy
   * was answered (a deploy stops the flows it replaces, answers, then starts the new ones, and a
   * second deploy may come before). So a deploy's stop (`flows:stopping`) announces a start, which
   * ends with `flows:started`, or with a runtime state that names why no flow was started (missing
   * node types or modules).
   */
  private watchFlowStarts(events: EventEmitter): void {
    const expect = (): void => this.expectFlowStart();
    const started = (): void => this.flowStarted();
    const state = (event: { id?: unknown; payload?: { error?: unknown; state?: unknown } } | undefined): void => {
      if (event?.id === 'runtime-state' && (event.payload?.error !== undefined || event.payload?.state === 'safe')) this.flowStarted();
    };
    events.on('flows:stopping', expect);
    events.on('flows:started', started);
    events.on('runtime-event', state);
    this.unwatchFlowStarts = () => {
      events.off('flows:stopping', expect);
      events.off('flows:started', started);
      events.off('runtime-event', state);
      this.unwatchFlowStarts = undefined;
    };
  }

  private expectFlowStart(): void {
    if (!this.flowStarts) {
      let settle!: () => void;
      const done = new Promise<void>((resolve) => (settle = resolve));
      this.flowStarts = { pending: 0, done, settle };
    }
    this.flowStarts.pending++;
  }

  private flowStarted(all = false): void {
    const starts = this.flowStarts;
    if (!starts) return;
    starts.pending = all ? 0 : starts.pending - 1;
    if (starts.pending > 0) return;
    this.flowStarts = undefined;
    starts.settle();
  }

  /** Waits until no flows start is under way; a bounded wait (a start that never ends is reported). */
  private async flowStartsDone(during: 'start' | 'stop'): Promise<void> {
    const starts = this.flowStarts;
    if (!starts) return;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), FLOW_START_WAIT_MS)));
    const timedOut = await Promise.race([starts.done.then(() => false), late]);
    clearTimeout(timer);
    if (!timedOut) return;
    this.log?.warn({ waitedMs: FLOW_START_WAIT_MS, during, pending: starts.pending }, 'node-red: its flows did not finish starting in time');
    this.flowStarted(true);
  }
}
