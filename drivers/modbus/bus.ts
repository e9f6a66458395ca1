import ModbusSerial from 'modbus-serial';
import { Socket } from 'node:net';
import type { ModbusRTU as Client } from 'modbus-serial/ModbusRTU.js';
import {
  Backoff,
  PointTable,
  ReadingBatchBuilder,
  errorMessage,
  type Counter,
  type Driver,
  type DriverContext,
  type Quality,
  type TimerHandle,
  type Value,
  type WriteResult,
  type WriteValue,
  WriteRefused,
} from '../../runtime/contracts/index.js';
import { decodePoint, DecodeError, encodePoint } from './codec.js';
import { planReads, type ReadRequest } from './planner.js';
import { ReportFilter } from './report-filter.js';
import type { ModbusConnection, ModbusDevice, ModbusPoint } from './types.js';

// modbus-serial is CommonJS whose typings describe an ES default export; at run time the default
// import is the client class itself.
const ModbusRTU = ModbusSerial as unknown as new () => Client;

/** Modbus exception codes by number, as the specification names them. */
export const EXCEPTION_NAMES: Readonly<Record<number, string>> = {
  1: 'illegal function',
  2: 'illegal data address',
  3: 'illegal data value',
  4: 'server device failure',
  5: 'acknowledge',
  6: 'server device busy',
  8: 'memory parity error',
  10: 'gateway path unavailable',
  11: 'gateway target device failed to respond',
};

/** What went wrong with one request. */
export type FaultKind = 'timeout' | 'exception' | 'corrupt' | 'connection' | 'unreachable';

export class ModbusFault extends Error {
  constructor(
    readonly kind: FaultKind,
    message: string,
    readonly code?: number,
  ) {
    super(message);
  }
}

/** Classifies what modbus-serial rejects with (Error objects and plain objects alike). */
export function classify(err: unknown): ModbusFault {
  if (err instanceof ModbusFault) return err;
  const e = (err ?? {}) as { name?: unknown; message?: unknown; errno?: unknown; code?: unknown; modbusCode?: unknown };
  const message = typeof e.message === 'string' ? e.message : String(err);
  if (typeof e.modbusCode === 'number') {
    const name = EXCEPTION_NAMES[e.modbusCode] ?? 'unknown exception';
    // 10 and 11: the gateway in front of the device answered, the device behind it did not.
    const kind: FaultKind = e.modbusCode === 10 || e.modbusCode === 11 ? 'unreachable' : 'exception';
    return new ModbusFault(kind, `exception ${e.modbusCode} (${name})`, e.modbusCode);
  }
  if (e.name === 'TransactionTimedOutError' || e.errno === 'ETIMEDOUT') return new ModbusFault('timeout', 'no answer within the timeout');
  if (
    e.name === 'PortNotOpenError' ||
    /port not open|ECONNRESET|EPIPE|ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|socket|closed/i.test(
      `${message} ${typeof e.errno === 'string' ? e.errno : ''} ${typeof e.code === 'string' ? e.code : ''}`,
    )
  ) {
    return new ModbusFault('connection', `connection lost: ${message}`);
  }
  return new ModbusFault('corrupt', `invalid answer: ${message}`);
}

/** The key under which devices share one connection: a serial line, or one TCP endpoint. */
export function connectionKey(c: ModbusConnection): string {
  return c.kind === 'rtu' ? `rtu:${c.path}` : `${c.kind}:${c.host}:${c.port}`;
}

/** Points of one device polled at one interval, planned into requests. */
interface Group {
  readonly device: DeviceState;
  readonly intervalMs: number;
  readonly requests: readonly ReadRequest[];
  /** Points its requests cover: what one poll reports at most. */
  readonly points: number;
  due: number;
  /** Requests the last completed poll of this group issued (retries included). */
  lastRequests: number;
}

/**
 * What the last poll of one request left, for the steady-plant shortcut: when every point of the
 * request reports by exception, all were good last time, no heartbeat is due and the registers
 * are word for word what they were, nothing can be reported and the points are not decoded again.
 */
interface RequestState {
  /** Every point has a deadband: unchanged registers report nothing. */
  readonly byException: boolean;
  /** Index in the device's point table of each of the request's points. */
  readonly index: readonly number[];
  words: number[] | undefined;
  allGood: boolean;
  /** The earliest maxSilenceMs heartbeat due among the points. */
  nextForced: number;
}

interface DeviceState {
  readonly device: ModbusDevice;
  readonly requestState: Map<ReadRequest, RequestState>;
  mRequests?: { inc(by?: number): void };
  mReadings?: { inc(by?: number): void };
  readonly groups: Group[];
  readonly points: Map<string, ModbusPoint>;
  /** The device's points in a fixed order: readings are batched against it. */
  readonly table: PointTable;
  readonly index: Map<ModbusPoint, number>;
  /** Report by exception, per point index. */
  readonly report: ReportFilter;
  /** Polls in a row that got no answer. */
  failures: number;
  /** The breaker is open until then (0: closed). */
  openUntil: number;
  openMs: number;
  polls: number;
  requests: number;
  errors: number;
  lastError: string | undefined;
}

/** Writes waiting for one bus at most; more are refused, not queued. */
export const MAX_PENDING_WRITES = 32;

interface WriteJob {
  readonly state: DeviceState;
  readonly point: ModbusPoint;
  readonly value: WriteValue;
  readonly resolve: (r: WriteResult) => void;
  readonly reject: (e: Error) => void;
}

/**
 * One Modbus connection (a TCP endpoint or a serial line) and every device on it. Requests go one
 * at a time, in order of due time; writes go before the next poll. Per device: timeout, retries,
 * and a circuit breaker, so that a dead device costs the others at most one timeout per poll until
 * its breaker opens, and then one timeout per probe. The connection is reopened forever, with
 * capped, jittered backoff. A timed-out request's late answer is never taken for another: on TCP
 * it carries a transaction id no longer awaited; on RTU the bus stays quiet for one more timeout
 * first, so the late answer arrives while its own request is still the current one.
 */
export class ModbusBus implements Driver {
  readonly name: string;
  private readonly states: DeviceState[];
  private readonly groups: Group[] = [];
  private readonly writes: WriteJob[] = [];
  private ctx: DriverContext | undefined;
  private client: Client | undefined;
  /** Our TCP socket under the client, destroyed when a dead connection will not close. */
  private socket: Socket | undefined;
  private connected = false;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private wakePause: (() => void) | undefined;
  private timer: TimerHandle | undefined;
  private readonly backoff = new Backoff(500, 30_000);
  private lastConnectError: string | undefined;
  private mRequests!: Counter;
  private mErrors!: Counter;
  private mReadings!: Counter;

  constructor(
    private readonly connection: ModbusConnection,
    devices: readonly ModbusDevice[],
  ) {
    this.name = `modbus:${connectionKey(connection)}`;
    this.states = devices.map((device) => {
      const state: DeviceState = {
        device,
        groups: [],
        points: new Map(device.points.map((p) => [p.name, p])),
        table: new PointTable(device.id, device.points),
        index: new Map(device.points.map((p, i) => [p, i])),
        report: new ReportFilter(),
        requestState: new Map(),
        failures: 0,
        openUntil: 0,
        openMs: device.breaker.openMs,
        polls: 0,
        requests: 0,
        errors: 0,
        lastError: undefined,
      };
      const byInterval = new Map<number, ModbusPoint[]>();
      for (const p of device.points) {
        const interval = p.intervalMs ?? device.pollIntervalMs;
        const list = byInterval.get(interval) ?? [];
        list.push(p);
        byInterval.set(interval, list);
      }
      for (const [intervalMs, points] of [...byInterval].sort((a, b) => a[0] - b[0])) {
        const g: Group = { device: state, intervalMs, requests: planReads(points, device.maxGap), points: points.length, due: 0, lastRequests: 0 };
        for (const req of g.requests) {
          const byException = req.points.every((p) => p.deadband !== undefined);
          const index = req.points.map((p) => state.index.get(p)!);
          state.requestState.set(req, { byException, index, words: undefined, allGood: false, nextForced: 0 });
        }
        state.groups.push(g);
        this.groups.push(g);
      }
      return state;
    });
  }

  /** Requests one pass over every poll group issues. */
  get requestsPerCycle(): number {
    return this.groups.reduce((n, g) => n + g.requests.length, 0);
  }

  hasDevice(id: string): boolean {
    return this.states.some((d) => d.device.id === id);
  }

  /** The devices on this bus (the write capability routes by them). */
  get devices(): readonly string[] {
    return this.states.map((d) => d.device.id);
  }

  async start(ctx: DriverContext): Promise<void> {
    this.ctx = ctx;
    this.mRequests = ctx.metrics.counter('outpost_modbus_requests_total', 'Modbus requests issued', ['device']);
    this.mErrors = ctx.metrics.counter('outpost_modbus_errors_total', 'Modbus requests that failed, by kind', ['device', 'kind']);
    this.mReadings = ctx.metrics.counter('outpost_modbus_readings_total', 'Readings reported by Modbus devices', ['device']);
    for (const d of this.states) {
      d.mRequests = this.mRequests.bind({ device: d.device.id });
      d.mReadings = this.mReadings.bind({ device: d.device.id });
    }
    const now = ctx.clock.now();
    for (const g of this.groups) g.due = now;
    this.loop = this.run();
    await Promise.resolve();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer && this.ctx) this.ctx.clock.clearTimeout(this.timer);
    this.wake?.();
    this.wakePause?.();
    await this.loop;
    for (const w of this.writes.splice(0)) w.reject(new Error('gateway is stopping; write not made'));
    await this.disconnect();
  }

  status(): Record<string, unknown> {
    const now = this.ctx?.clock.now() ?? 0;
    return {
      connection: connectionKey(this.connection),
      connected: this.connected,
      lastConnectError: this.lastConnectError,
      devices: this.states.map((d) => ({
        device: d.device.id,
        unitId: d.device.unitId,
        requestsPerCycle: d.groups.reduce((n, g) => n + g.requests.length, 0),
        requestsLastCycle: d.groups.reduce((n, g) => n + g.lastRequests, 0),
        polls: d.polls,
        requests: d.requests,
        errors: d.errors,
        breaker: d.openUntil > now ? 'open' : d.failures > 0 ? 'failing' : 'closed',
        lastError: d.lastError,
      })),
    };
  }

  /**
   * Writes an engineering value to a writable point (scaled, typed, in its byte order), then reads
   * it back; rejects with a reason when the value does not fit, the device refuses, or the value
   * read back differs.
   */
  write(deviceId: string, pointName: string, value: WriteValue): Promise<WriteResult> {
    const state = this.states.find((d) => d.device.id === deviceId);
    if (!state) return Promise.reject(new WriteRefused('unknown-device', `no Modbus device "${deviceId}" on ${this.name}`));
    const point = state.points.get(pointName);
    if (!point) return Promise.reject(new WriteRefused('unknown-point', `device "${deviceId}" has no point "${pointName}"`));
    if (!point.writable) return Promise.reject(new WriteRefused('not-writable', `point "${pointName}" of "${deviceId}" is not writable (set writable: true in the config)`));
    try {
      encodePoint(value, point);
    } catch (err) {
      return Promise.reject(new WriteRefused('invalid-value', errorMessage(err)));
    }
    if (this.stopped) return Promise.reject(new Error('gateway is stopping; write not made'));
    if (this.writes.length >= MAX_PENDING_WRITES) {
      return Promise.reject(new WriteRefused('busy', `${MAX_PENDING_WRITES} writes already wait for ${this.name}; try again later`));
    }
    return new Promise((resolve, reject) => {
      this.writes.push({ state, point, value, resolve, reject });
      this.wake?.();
    });
  }

  private async run(): Promise<void> {
    const ctx = this.ctx!;
    while (!this.stopped) {
      if (!this.connected) {
        if (this.client) await this.disconnect();
        try {
          await this.connect();
          this.backoff.reset();
          this.lastConnectError = undefined;
        } catch (err) {
          const message = classify(err).message;
          if (this.lastConnectError !== message) ctx.log.warn({ bus: this.name, err: message }, 'modbus connection failed');
          this.lastConnectError = message;
          for (const d of this.states) await this.markUnreachable(d, d.groups.flatMap((g) => g.requests), message, 'connection');
          for (const w of this.writes.splice(0)) w.reject(new Error(`${w.state.device.id}: ${message}`));
          await this.sleep(this.backoff.next());
          continue;
        }
      }
      const job = this.writes.shift();
      if (job) {
        await this.doWrite(job);
        continue;
      }
      const now = ctx.clock.now();
      let next: Group | undefined;
      for (const g of this.groups) if (!next || g.due < next.due) next = g;
      if (!next) return;
      if (next.due > now) {
        await this.sleep(next.due - now);
        continue;
      }
      // Next due time: one interval on, or now when the bus fell behind (no burst of catch-up polls).
      next.due = Math.max(next.due + next.intervalMs, now);
      const d = next.device;
      if (d.openUntil > now) continue;
      await this.pollGroup(next);
    }
  }

  private async pollGroup(g: Group): Promise<void> {
    const ctx = this.ctx!;
    const d = g.device;
    const readings = new ReadingBatchBuilder(d.table, g.points);
    d.polls++;
    const requestsBefore = d.requests;
    for (const [i, req] of g.requests.entries()) {
      if (this.stopped || !this.connected) break;
      const ts = ctx.clock.now();
      let words: number[];
      try {
        words = await this.request(d, () => this.read(req));
      } catch (err) {
        const fault = classify(err);
        if (fault.kind === 'exception') {
          // The device answered: this request's points are bad, the others are still polled.
          this.noteError(d, fault);
          d.requestState.get(req)!.allGood = false;
          const { index } = d.requestState.get(req)!;
          req.points.forEach((p, j) => this.push(readings, d, p, index[j]!, null, 'bad', ts));
          continue;
        }
        // No usable answer: this request and the rest of the group go stale; the device waits.
        await this.markUnreachable(d, g.requests.slice(i), fault.message, fault.kind);
        // Breaker open: the device's other groups are not polled meanwhile, so they go stale too.
        if (this.deviceFailed(d)) await this.markUnreachable(d, d.groups.flatMap((x) => x.requests), fault.message, fault.kind);
        // No device on a TCP connection answers: the connection itself may be dead without a reset
        // (a firewall or NAT forgot it). A fresh one costs little and heals that.
        const silent = this.connection.kind !== 'rtu' && this.states.every((x) => x.failures > 0);
        if (fault.kind === 'connection' || (fault.kind === 'timeout' && silent)) await this.disconnect();
        break;
      }
      d.failures = 0;
      d.openMs = d.device.breaker.openMs;
      const st = d.requestState.get(req)!;
      if (st.byException && st.allGood && ts < st.nextForced && st.words !== undefined && sameWords(st.words, words)) continue;
      let allGood = true;
      let nextForced = Infinity;
      const points = req.points;
      for (let j = 0; j < points.length; j++) {
        const p = points[j]!;
        const i = st.index[j]!;
        const v = decodePoint(words, p.address - req.address, p);
        if (v instanceof DecodeError) {
          allGood = false;
          this.noteError(d, new ModbusFault('corrupt', v.message));
          this.push(readings, d, p, i, null, 'bad', ts);
        } else this.push(readings, d, p, i, v, 'good', ts);
        if (p.maxSilenceMs !== undefined) nextForced = Math.min(nextForced, (d.report.lastAt(i) ?? ts) + p.maxSilenceMs);
      }
      if (st.byException) st.words = words;
      st.allGood = allGood;
      st.nextForced = nextForced;
    }
    g.lastRequests = d.requests - requestsBefore;
    await this.submit(d, readings);
  }

  /**
   * One request with the device's retries: a corrupt or busy answer is tried again; a timeout is
   * not (it would hold the bus once more for a device that is probably gone).
   */
  private async request<T>(d: DeviceState, op: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const client = this.client;
      if (!client) throw new ModbusFault('connection', 'connection lost: not connected');
      client.setID(d.device.unitId);
      client.setTimeout(d.device.timeoutMs);
      d.requests++;
      d.mRequests!.inc();
      try {
        return await op();
      } catch (err) {
        const fault = classify(err);
        this.noteError(d, fault);
        if (fault.kind === 'timeout' && this.connection.kind !== 'tcp') {
          // RTU has no transaction id: let a late answer arrive while its request is current.
          await this.pause(d.device.timeoutMs);
        }
        const again = (fault.kind === 'corrupt' || fault.code === 6 || fault.code === 5) && attempt < d.device.retries;
        if (!again) throw fault;
        if (fault.kind === 'corrupt' && this.connection.kind !== 'rtu') {
          // A stream with a bad frame in it may be out of step: start a fresh one.
          await this.disconnect();
          await this.connect();
        }
      }
    }
  }

  /** One read; an answer whose byte count does not match the request is refused as corrupt. */
  private async read(req: ReadRequest): Promise<number[]> {
    const client = this.client!;
    const words = (r: { data: number[]; buffer: Buffer }): number[] => {
      if (r.data.length !== req.length || r.buffer.length !== req.length * 2) {
        throw new ModbusFault('corrupt', `invalid answer: ${r.buffer.length} bytes for ${req.length} registers`);
      }
      return r.data;
    };
    const bits = (r: { data: boolean[]; buffer: Buffer }): number[] => {
      if (r.buffer.length !== Math.ceil(req.length / 8)) {
        throw new ModbusFault('corrupt', `invalid answer: ${r.buffer.length} bytes for ${req.length} bits`);
      }
      return r.data.slice(0, req.length).map((b) => (b ? 1 : 0));
    };
    switch (req.table) {
      case 'holding':
        return words(await client.readHoldingRegisters(req.address, req.length));
      case 'input':
        return words(await client.readInputRegisters(req.address, req.length));
      case 'coil':
        return bits(await client.readCoils(req.address, req.length));
      case 'discrete':
        return bits(await client.readDiscreteInputs(req.address, req.length));
    }
  }

  private async doWrite(job: WriteJob): Promise<void> {
    const { state: d, point: p, value } = job;
    const ctx = this.ctx!;
    try {
      const words = encodePoint(value, p);
      if (p.table === 'coil') await this.request(d, () => this.client!.writeCoil(p.address, words[0] === 1));
      else if (words.length === 1) await this.request(d, () => this.client!.writeRegister(p.address, words[0]!));
      else await this.request(d, () => this.client!.writeRegisters(p.address, words));
      const back = await this.request(d, () => this.read({ table: p.table, address: p.address, length: words.length, points: [p] }));
      const readBack = decodePoint(back, 0, p);
      if (readBack instanceof DecodeError) throw new Error(`read-back failed: ${readBack.message}`);
      // What the device should hold, as decoding shows it: a coil written as 1/0 reads back as a
      // boolean, a string loses trailing padding.
      const expected = p.table === 'coil' ? value === true || value === 1 : typeof value === 'string' ? value.replace(/[\0 ]+$/, '') : value;
      const same =
        typeof readBack === 'number' && typeof expected === 'number'
          ? Math.abs(readBack - expected) <= Math.abs(p.scale) * 1e-6 + Math.abs(expected) * 1e-6
          : readBack === expected;
      if (!same) throw new Error(`read-back mismatch: wrote ${JSON.stringify(value)}, device holds ${JSON.stringify(readBack)}`);
      ctx.log.info({ device: d.device.id, point: p.name, value }, 'modbus point written');
      const readings = new ReadingBatchBuilder(d.table);
      this.push(readings, d, p, d.index.get(p)!, readBack, 'good', ctx.clock.now(), true);
      await this.submit(d, readings);
      job.resolve({ device: d.device.id, point: p.name, value, readBack });
    } catch (err) {
      if (err instanceof ModbusFault && err.kind === 'connection') await this.disconnect();
      job.reject(new Error(`${d.device.id}.${p.name}: ${err instanceof Error ? err.message : String(err)}`));
    }
  }

  /** Counts the failure; the breaker opens after `failures` polls in a row without an answer. True when it opened. */
  private deviceFailed(d: DeviceState): boolean {
    const now = this.ctx!.clock.now();
    d.failures++;
    if (d.failures < d.device.breaker.failures) return false;
    d.openUntil = now + d.openMs;
    this.ctx!.log.warn({ device: d.device.id, openMs: d.openMs, err: d.lastError }, 'modbus device not answering; left alone for a while');
    d.openMs = Math.min(d.openMs * 2, d.device.breaker.maxOpenMs);
    return true;
  }

  private noteError(d: DeviceState, fault: ModbusFault): void {
    d.errors++;
    if (d.lastError !== fault.message) this.ctx!.log.warn({ device: d.device.id, err: fault.message, kind: fault.kind }, 'modbus request failed');
    d.lastError = fault.message;
    this.mErrors.inc({ device: d.device.id, kind: fault.kind });
  }

  /** The device did not answer: its points keep their last value with quality `stale`. */
  private async markUnreachable(d: DeviceState, requests: readonly ReadRequest[], message: string, kind: FaultKind): Promise<void> {
    if (kind === 'connection') d.lastError = message;
    const ts = this.ctx!.clock.now();
    const readings = new ReadingBatchBuilder(d.table);
    for (const req of requests) {
      const st = d.requestState.get(req)!;
      st.allGood = false;
      req.points.forEach((p, j) => this.push(readings, d, p, st.index[j]!, d.report.lastGood(st.index[j]!), 'stale', ts));
    }
    await this.submit(d, readings);
  }

  /** Adds the reading of point `p` (index `i` in the device's table) when report by exception lets it through. */
  private push(out: ReadingBatchBuilder, d: DeviceState, p: ModbusPoint, i: number, value: Value, quality: Quality, ts: number, force = false): void {
    if (!d.report.shouldReport(i, p, value, quality, ts) && !force) return;
    out.add(i, value, quality, ts);
  }

  /** Numbers what `readings` holds (one run of sequence numbers) and hands it to the sink as one batch. */
  private async submit(d: DeviceState, readings: ReadingBatchBuilder): Promise<void> {
    if (readings.length === 0) return;
    const batch = readings.build(this.ctx!.sequence);
    d.mReadings!.inc(batch.length);
    try {
      await this.ctx!.sink.submit(batch);
    } catch (err) {
      // The store refused them (e.g. disk full); counted there. Keep polling.
      this.ctx!.log.error({ bus: this.name, err: (err as Error).message }, 'readings not stored');
    }
  }

  private async connect(): Promise<void> {
    const client = new ModbusRTU();
    // modbus-serial re-emits serial port errors (an unplugged USB adapter) on the client: without
    // a listener they would crash the gateway. The bus drops the connection and opens a new one.
    (client as unknown as NodeJS.EventEmitter).on('error', (err: unknown) => {
      if (this.client !== client) return;
      this.ctx?.log.warn({ bus: this.name, err: classify(err).message }, 'modbus port error');
      this.connected = false;
    });
    const c = this.connection;
    const timeout = Math.max(...this.states.map((d) => d.device.timeoutMs));
    client.setTimeout(timeout);
    if (c.kind === 'rtu') {
      await client.connectRTUBuffered(c.path, { baudRate: c.baudRate, parity: c.parity, dataBits: c.dataBits, stopBits: c.stopBits });
    } else {
      // Our own socket: a bounded connect, and TCP_NODELAY for both framings (a request is one
      // small segment that must leave at once).
      const socket = await openSocket(c.host, c.port, timeout);
      this.socket = socket;
      if (c.kind === 'tcp') await client.linkTCP(socket, { port: c.port });
      // modbus-serial's "telnet" port is RTU framing (CRC, no MBAP) over TCP.
      else await client.linkTelnet(socket, { port: c.port });
    }
    this.client = client;
    this.connected = true;
  }

  private async disconnect(): Promise<void> {
    const client = this.client;
    const socket = this.socket;
    this.client = undefined;
    this.socket = undefined;
    this.connected = false;
    if (!client) return;
    // modbus-serial's close() never calls back when the socket is already gone (the slave dropped
    // it): waiting for it would freeze the poll loop for good. Give it a moment, then move on.
    const clock = this.ctx!.clock;
    await new Promise<void>((resolve) => {
      const timer = clock.setTimeout(() => {
        // No goodbye from a dead connection: free the socket now rather than when the kernel gives up.
        socket?.destroy();
        resolve();
      }, 250);
      try {
        client.close(() => {
          clock.clearTimeout(timer);
          resolve();
        });
      } catch {
        clock.clearTimeout(timer);
        resolve();
      }
    });
  }

  /** A wait that a write does not cut short; stop() does. */
  private async pause(ms: number): Promise<void> {
    if (this.stopped) return;
    const clock = this.ctx!.clock;
    await new Promise<void>((resolve) => {
      const timer = clock.setTimeout(done, ms);
      function done(): void {
        clock.clearTimeout(timer);
        resolve();
      }
      this.wakePause = done;
    });
    this.wakePause = undefined;
  }

  private async sleep(ms: number): Promise<void> {
    if (this.stopped) return;
    const clock = this.ctx!.clock;
    await new Promise<void>((resolve) => {
      this.wake = resolve;
      this.timer = clock.setTimeout(resolve, ms);
    });
    if (this.timer) clock.clearTimeout(this.timer);
    this.wake = undefined;
  }
}

function sameWords(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function openSocket(host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = new Socket();
    socket.setNoDelay(true);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ModbusFault('connection', `connection lost: no TCP connection to ${host}:${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once('error', (err) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    });
    socket.connect(port, host, () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
  });
}

/** Config devices → one bus per connection they share. */
export function modbusBuses(devices: readonly ModbusDevice[]): ModbusBus[] {
  const byKey = new Map<string, { connection: ModbusConnection; devices: ModbusDevice[] }>();
  for (const d of devices) {
    const key = connectionKey(d.connection);
    const entry = byKey.get(key) ?? { connection: d.connection, devices: [] };
    entry.devices.push(d);
    byKey.set(key, entry);
  }
  return [...byKey.values()].map((e) => new ModbusBus(e.connection, e.devices));
}
