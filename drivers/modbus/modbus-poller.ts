import ModbusSerial from 'modbus-serial';
import type { ModbusRTU as Client } from 'modbus-serial/ModbusRTU.js';
import {
  Backoff,
  makeEnvelope,
  type Counter,
  type Driver,
  type DriverContext,
  type Envelope,
  type TimerHandle,
} from '../../runtime/contracts/index.js';
import { decodeRegisters } from './codec.js';
import { planReads, type ReadRequest } from './planner.js';
import type { ModbusDevice } from './types.js';

// modbus-serial is CommonJS whose typings describe an ES default export; at run time the default
// import is the client class itself.
const ModbusRTU = ModbusSerial as unknown as new () => Client;

/**
 * Polls one Modbus TCP device: one loop per connection, never overlapping, never giving up.
 * A failed read marks its points `bad` (once per transition, so a long outage does not flood the
 * outbox), closes the connection (a late answer must never be taken for the next request's) and
 * reconnects with capped, jittered backoff.
 */
export class ModbusPoller implements Driver {
  readonly name: string;
  private readonly requests: ReadRequest[];
  private ctx: DriverContext | undefined;
  private client: Client | undefined;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private timer: TimerHandle | undefined;
  private readonly backoff = new Backoff(500, 30_000);
  /** Last quality reported per point, to report `bad` on the transition only. */
  private readonly lastQuality = new Map<string, Envelope['quality']>();
  private connected = false;
  private polls = 0;
  private failures = 0;
  private lastError: string | undefined;
  private mReads!: Counter;
  private mErrors!: Counter;

  constructor(private readonly device: ModbusDevice) {
    this.name = `modbus:${device.id}`;
    this.requests = planReads(device.points, device.maxGap);
  }

  async start(ctx: DriverContext): Promise<void> {
    this.ctx = ctx;
    this.mReads = ctx.metrics.counter('outpost_modbus_requests_total', 'Modbus read requests issued', ['device']);
    this.mErrors = ctx.metrics.counter('outpost_modbus_errors_total', 'Modbus read requests that failed', ['device', 'kind']);
    this.loop = this.run();
    await Promise.resolve();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer && this.ctx) this.ctx.clock.clearTimeout(this.timer);
    this.wake?.();
    await this.loop;
    await this.disconnect();
  }

  status(): Record<string, unknown> {
    return {
      device: this.device.id,
      connected: this.connected,
      requestsPerPoll: this.requests.length,
      polls: this.polls,
      failures: this.failures,
      lastError: this.lastError,
    };
  }

  private async run(): Promise<void> {
    const ctx = this.ctx!;
    while (!this.stopped) {
      const started = ctx.clock.now();
      if (!this.connected) {
        try {
          await this.connect();
          this.backoff.reset();
        } catch (err) {
          await this.fail(this.requests, err, 'connect');
          await this.sleep(this.backoff.next());
          continue;
        }
      }
      const ok = await this.pollOnce();
      if (!ok) {
        await this.sleep(this.backoff.next());
        continue;
      }
      const elapsed = ctx.clock.now() - started;
      await this.sleep(Math.max(0, this.device.pollIntervalMs - elapsed));
    }
  }

  /** One pass over every planned request; false when the connection had to be dropped. */
  private async pollOnce(): Promise<boolean> {
    const ctx = this.ctx!;
    const readings: Envelope[] = [];
    let ok = true;
    for (const [i, req] of this.requests.entries()) {
      if (this.stopped) break;
      const ts = ctx.clock.now();
      try {
        this.mReads.inc({ device: this.device.id });
        const words = await this.read(req);
        for (const p of req.points) {
          const offset = p.address - req.address;
          const value = decodeRegisters(words, offset, p);
          readings.push(this.reading(p.name, value, value === null ? 'bad' : 'good', ts));
        }
      } catch (err) {
        ok = false;
        // The connection is dropped, so this request and the ones not yet made get no value.
        await this.fail(this.requests.slice(i), err, 'read');
        break;
      }
    }
    this.polls++;
    if (readings.length > 0) await this.submit(readings);
    if (!ok) await this.disconnect();
    return ok;
  }

  private async read(req: ReadRequest): Promise<number[]> {
    const client = this.client!;
    switch (req.table) {
      case 'holding':
        return (await client.readHoldingRegisters(req.address, req.length)).data;
      case 'input':
        return (await client.readInputRegisters(req.address, req.length)).data;
      case 'coil':
        return (await client.readCoils(req.address, req.length)).data.slice(0, req.length).map((b) => (b ? 1 : 0));
      case 'discrete':
        return (await client.readDiscreteInputs(req.address, req.length)).data.slice(0, req.length).map((b) => (b ? 1 : 0));
    }
  }

  private reading(point: string, value: number | null, quality: Envelope['quality'], ts: number): Envelope {
    this.lastQuality.set(point, quality);
    const p = this.device.points.find((x) => x.name === point);
    const typed = p?.type === 'bool' && value !== null ? value !== 0 : value;
    const { seq, id } = this.ctx!.sequence.next();
    return makeEnvelope({ id, device: this.device.id, point, value: typed, quality, ts, seq });
  }

  /** Report `bad` for points that were not already bad. */
  private async fail(requests: readonly ReadRequest[], err: unknown, kind: string): Promise<void> {
    const ctx = this.ctx!;
    this.failures++;
    const message = errorMessage(err);
    if (this.lastError !== message) ctx.log.warn({ device: this.device.id, err: message, kind }, 'modbus device not answering');
    this.lastError = message;
    this.mErrors.inc({ device: this.device.id, kind });
    const ts = ctx.clock.now();
    const readings: Envelope[] = [];
    for (const req of kind === 'connect' ? this.requests : requests) {
      for (const p of req.points) {
        if (this.lastQuality.get(p.name) === 'bad') continue;
        readings.push(this.reading(p.name, null, 'bad', ts));
      }
    }
    if (readings.length > 0) await this.submit(readings);
  }

  private async submit(readings: Envelope[]): Promise<void> {
    try {
      await this.ctx!.sink.submit(readings);
    } catch (err) {
      // The store refused them (e.g. disk full); counted there. Keep polling.
      this.ctx!.log.error({ device: this.device.id, err: (err as Error).message }, 'readings not stored');
    }
  }

  private async connect(): Promise<void> {
    const client = new ModbusRTU();
    client.setTimeout(this.device.timeoutMs);
    await client.connectTCP(this.device.host, { port: this.device.port, timeout: this.device.timeoutMs });
    client.setID(this.device.unitId);
    this.client = client;
    this.connected = true;
  }

  private async disconnect(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.connected = false;
    if (!client) return;
    // modbus-serial's close() never calls back when the socket is already gone (the slave dropped
    // it): waiting for it would freeze the poll loop for good. Give it a moment, then move on.
    const clock = this.ctx!.clock;
    await new Promise<void>((resolve) => {
      const timer = clock.setTimeout(resolve, 250);
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

  private async sleep(ms: number): Promise<void> {
    if (this.stopped) return;
    const clock = this.ctx!.clock;
    await new Promise<void>((resolve) => {
      this.wake = resolve;
      this.timer = clock.setTimeout(resolve, ms);
    });
    this.wake = undefined;
  }
}

/** modbus-serial rejects with Error objects and with plain `{ name, message }` objects alike. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (err !== null && typeof err === 'object') {
    const { name, message, errno } = err as { name?: unknown; message?: unknown; errno?: unknown };
    const text = [name, message ?? errno].filter((x) => typeof x === 'string' && x !== '').join(': ');
    if (text !== '') return text;
  }
  return String(err);
}
