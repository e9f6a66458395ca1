import {
  Backoff,
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
import { DecodeError } from './codec.js';
import { deviceState, type DeviceState, type Group } from './device-state.js';
import { classify, ModbusFault, type FaultKind } from './faults.js';
import type { ReadRequest } from './planner.js';
import { connectionKey, ModbusTransport } from './transport.js';
import type { ModbusConnection, ModbusDevice, ModbusPoint } from './types.js';
import { WriteQueue, writablePoint, writeVerified, type WriteJob } from './writes.js';

// The Modbus driver's public names, wherever they live now.
export { classify, EXCEPTION_NAMES, ModbusFault, type FaultKind } from './faults.js';
export { connectionKey } from './transport.js';
export { MAX_PENDING_WRITES } from './writes.js';

/**
 * One Modbus connection (a TCP endpoint or a serial line) and every device on it. Requests go one
 * at a time, in order of due time; writes go before the next poll. Per device: timeout, retries,
 * and a circuit breaker, so that a dead device costs the others at most one timeout per poll until
 * its breaker opens, and then one timeout per probe. The connection is reopened forever, with
 * capped, jittered backoff. A timed-out request's late answer is never taken for another: on TCP
 * it carries a transaction id no longer awaited; on RTU the bus stays quiet for one more timeout
 * first, so the late answer arrives while its own request is still the current one.
 *
 * This file is the poll loop and what it reports; transport.ts makes the requests, writes.ts
 * queues and verifies writes, device-state.ts plans each device's polls.
 */
export class ModbusBus implements Driver {
  readonly name: string;
  private readonly states: DeviceState[];
  private readonly groups: Group[];
  private readonly writes: WriteQueue<DeviceState>;
  private ctx: DriverContext | undefined;
  private io: ModbusTransport<DeviceState> | undefined;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
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
    this.states = devices.map(deviceState);
    this.groups = this.states.flatMap((d) => d.groups);
    this.writes = new WriteQueue(this.name, () => this.wake?.());
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
    const connectTimeoutMs = Math.max(...this.states.map((d) => d.device.timeoutMs));
    this.io = new ModbusTransport<DeviceState>(this.connection, this.name, connectTimeoutMs, ctx.clock, ctx.log, {
      sent: (d) => {
        d.requests++;
        d.mRequests!.inc();
      },
      failed: (d, fault) => this.noteError(d, fault),
    });
    const now = ctx.clock.now();
    for (const g of this.groups) g.due = now;
    this.loop = this.run();
    await Promise.resolve();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer && this.ctx) this.ctx.clock.clearTimeout(this.timer);
    this.wake?.();
    this.io?.halt();
    await this.loop;
    this.writes.failAll(() => new Error('gateway is stopping; write not made'));
    await this.io?.disconnect();
  }

  status(): Record<string, unknown> {
    const now = this.ctx?.clock.now() ?? 0;
    return {
      connection: connectionKey(this.connection),
      connected: this.io?.connected ?? false,
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
    const point = writablePoint(deviceId, state.points, pointName, value);
    if (point instanceof WriteRefused) return Promise.reject(point);
    if (this.stopped) return Promise.reject(new Error('gateway is stopping; write not made'));
    return this.writes.add(state, point, value);
  }

  private async run(): Promise<void> {
    const ctx = this.ctx!;
    const io = this.io!;
    while (!this.stopped) {
      if (!io.connected) {
        await io.disconnect();
        try {
          await io.connect();
          this.backoff.reset();
          this.lastConnectError = undefined;
        } catch (err) {
          const message = classify(err).message;
          if (this.lastConnectError !== message) ctx.log.warn({ bus: this.name, err: message }, 'modbus connection failed');
          this.lastConnectError = message;
          for (const d of this.states) await this.markUnreachable(d, d.groups.flatMap((g) => g.requests), message, 'connection');
          this.writes.failAll((w) => new Error(`${w.target.device.id}: ${message}`));
          await this.sleep(this.backoff.next());
          continue;
        }
      }
      const job = this.writes.next();
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
    const io = this.io!;
    const d = g.device;
    const readings = new ReadingBatchBuilder(d.table);
    d.polls++;
    const requestsBefore = d.requests;
    const requests = g.requests;
    for (let i = 0; i < requests.length; i++) {
      const req = requests[i]!;
      if (this.stopped || !io.connected) break;
      const ts = ctx.clock.now();
      let words: number[];
      try {
        words = await io.read(d, req);
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
        if (fault.kind === 'connection' || (fault.kind === 'timeout' && silent)) await io.disconnect();
        break;
      }
      d.failures = 0;
      d.openMs = d.device.breaker.openMs;
      const st = d.requestState.get(req)!;
      if (st.byException && st.allGood && ts < st.nextForced && st.words !== undefined && sameWords(st.words, words)) continue;
      const { values, errors } = st.decoder.decode(words);
      if (errors === 0 && st.reportsAll) {
        // Every point decoded and none has a deadband: each reading is reported whatever came
        // before, so the request's values go on as one run, without a decision per point.
        // (nextForced is only read for requests whose points all have a deadband.)
        const good = values as Value[];
        d.report.reportedGood(st.run, good, ts);
        readings.addRun(st.index, good, 'good', ts);
        st.allGood = true;
        continue;
      }
      let allGood = true;
      let nextForced = Infinity;
      const points = req.points;
      for (let j = 0; j < points.length; j++) {
        const p = points[j]!;
        const i = st.index[j]!;
        const v = values[j]!;
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
    // A poll that reports nothing (a steady plant) costs no further turn of the event loop.
    if (readings.length > 0) await this.submit(d, readings);
  }

  /** Makes one queued write and reports the value read back as a reading of the point. */
  private async doWrite(job: WriteJob<DeviceState>): Promise<void> {
    const { target: d, point: p, value } = job;
    const ctx = this.ctx!;
    const io = this.io!;
    try {
      const readBack = await writeVerified(io, d, p, value);
      ctx.log.info({ device: d.device.id, point: p.name, value }, 'modbus point written');
      const readings = new ReadingBatchBuilder(d.table);
      this.push(readings, d, p, d.index.get(p)!, readBack, 'good', ctx.clock.now(), true);
      await this.submit(d, readings);
      job.resolve({ device: d.device.id, point: p.name, value, readBack });
    } catch (err) {
      if (err instanceof ModbusFault && err.kind === 'connection') await io.disconnect();
      job.reject(new Error(`${d.device.id}.${p.name}: ${errorMessage(err)}`, { cause: err }));
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
      this.ctx!.log.error({ bus: this.name, err: errorMessage(err) }, 'readings not stored');
    }
  }

  /** Waits until the next poll is due; a queued write or stop() ends the wait early. */
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
