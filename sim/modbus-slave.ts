import ModbusSerial from 'modbus-serial';
import type { IServiceVector, ServerTCP as ServerTcpType } from 'modbus-serial/ServerTCP.js';
import type { Server } from 'node:net';
import { createSignal, type Signal, type SignalSpec } from './signals.js';

// modbus-serial is CommonJS; its server class hangs off the default export at run time.
const ServerTCP = (ModbusSerial as unknown as { ServerTCP: new (vector: IServiceVector, opts: object) => ServerTcpType }).ServerTCP;

export type SimTable = 'holding' | 'input' | 'coil' | 'discrete';
export type SimType = 'int16' | 'uint16' | 'int32' | 'uint32' | 'float32' | 'bool';

/** One simulated point: where it lives in the register map, how it is encoded, what drives it. */
export interface SimPoint {
  readonly name: string;
  readonly table: SimTable;
  readonly address: number;
  readonly type: SimType;
  /** Engineering value = raw * scale, as the gateway's config declares it. */
  readonly scale?: number;
  readonly unit?: string;
  readonly signal: SignalSpec;
}

export interface SimModbusSlaveOptions {
  readonly host?: string;
  /** 0 (the default) picks a free port. */
  readonly port?: number;
  readonly points: readonly SimPoint[];
  readonly now?: () => number;
  readonly random?: () => number;
}

/** What the slave does with requests: answer, or hold them without answering (a hung device). */
export type SlaveMode = 'answer' | 'mute';

/** Values are refreshed at most this often, so that back-to-back reads of one poll agree. */
const REFRESH_MS = 50;

/**
 * A Modbus TCP slave built on modbus-serial's `ServerTCP`, whose registers are driven by signal
 * generators. It is a real Modbus server (mbpoll reads it); `stop()`/`start()` take it off and back
 * on the network at the same port, `mode = 'mute'` makes it accept requests and never answer.
 */
export class SimModbusSlave {
  mode: SlaveMode = 'answer';
  private server: ServerTcpType | undefined;
  private readonly words = { holding: new Map<number, number>(), input: new Map<number, number>() };
  private readonly bits = { coil: new Map<number, boolean>(), discrete: new Map<number, boolean>() };
  private readonly signals: Array<{ point: SimPoint; signal: Signal }>;
  private readonly now: () => number;
  private refreshedAt = -Infinity;
  private boundPort = 0;
  /** Requests answered since start. */
  requests = 0;

  private constructor(private readonly opts: SimModbusSlaveOptions) {
    this.now = opts.now ?? Date.now;
    this.signals = opts.points.map((point) => ({ point, signal: createSignal(point.signal, opts.random) }));
  }

  static async start(opts: SimModbusSlaveOptions): Promise<SimModbusSlave> {
    const slave = new SimModbusSlave(opts);
    await slave.listen(opts.port ?? 0);
    return slave;
  }

  get host(): string {
    return this.opts.host ?? '127.0.0.1';
  }

  get port(): number {
    return this.boundPort;
  }

  get points(): readonly SimPoint[] {
    return this.opts.points;
  }

  get running(): boolean {
    return this.server !== undefined;
  }

  /** Back on the network at the port it had. */
  async start(): Promise<void> {
    if (!this.server) await this.listen(this.boundPort);
  }

  /** Off the network: the port is closed and every connection dropped. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** The current engineering value of a point, as the last refresh computed it. */
  valueOf(name: string): number | boolean | undefined {
    this.refresh();
    const p = this.opts.points.find((x) => x.name === name);
    if (!p) return undefined;
    if (p.table === 'coil' || p.table === 'discrete') return this.bits[p.table].get(p.address);
    const w = this.words[p.table];
    return decode(p, w.get(p.address) ?? 0, w.get(p.address + 1) ?? 0);
  }

  private async listen(port: number): Promise<void> {
    const vector: IServiceVector = {
      getHoldingRegister: (addr: number) => this.word('holding', addr),
      getInputRegister: (addr: number) => this.word('input', addr),
      // The callback form: modbus-serial accepts no promise for multi-register reads.
      getMultipleHoldingRegisters: (addr: number, len: number, _unit: number, cb: (err: Error | null, v: number[]) => void) =>
        this.wordRange('holding', addr, len).then((v) => cb(null, v), (err: Error) => cb(err, [])),
      getMultipleInputRegisters: (addr: number, len: number, _unit: number, cb: (err: Error | null, v: number[]) => void) =>
        this.wordRange('input', addr, len).then((v) => cb(null, v), (err: Error) => cb(err, [])),
      getCoil: (addr: number) => this.bit('coil', addr),
      getDiscreteInput: (addr: number) => this.bit('discrete', addr),
      setRegister: (addr: number, value: number) => {
        this.words.holding.set(addr, value & 0xffff);
      },
      setCoil: (addr: number, value: boolean) => {
        this.bits.coil.set(addr, value);
      },
    };
    // modbus-serial treats port 0 as "default 502"; the string "0" reaches net.listen as 0.
    const server = new ServerTCP(vector, { host: this.host, port: port === 0 ? '0' : port, unitID: 255 });
    const events = server as unknown as NodeJS.EventEmitter;
    await new Promise<void>((resolve, reject) => {
      events.once('initialized', () => resolve());
      events.once('serverError', (err: Error) => reject(err));
    });
    events.on('socketError', () => undefined);
    // The bound port is only known to the underlying net.Server.
    const net = (server as unknown as { _server: Server })._server;
    const addr = net.address();
    this.boundPort = typeof addr === 'object' && addr ? addr.port : port;
    this.server = server;
  }

  private answer<T>(value: () => T): Promise<T> {
    if (this.mode === 'mute') return new Promise<T>(() => undefined);
    this.requests++;
    this.refresh();
    return Promise.resolve(value());
  }

  private word(table: 'holding' | 'input', addr: number): Promise<number> {
    return this.answer(() => this.words[table].get(addr) ?? 0);
  }

  private wordRange(table: 'holding' | 'input', addr: number, len: number): Promise<number[]> {
    return this.answer(() => {
      const out = new Array<number>(len);
      const w = this.words[table];
      for (let i = 0; i < len; i++) out[i] = w.get(addr + i) ?? 0;
      return out;
    });
  }

  private bit(table: 'coil' | 'discrete', addr: number): Promise<boolean> {
    return this.answer(() => this.bits[table].get(addr) ?? false);
  }

  private refresh(): void {
    const now = this.now();
    if (now - this.refreshedAt < REFRESH_MS) return;
    this.refreshedAt = now;
    for (const { point, signal } of this.signals) {
      const v = signal.value(now);
      if (point.table === 'coil' || point.table === 'discrete') this.bits[point.table].set(point.address, v !== 0);
      else {
        const [hi, lo] = encode(point, v);
        this.words[point.table].set(point.address, hi);
        if (lo !== undefined) this.words[point.table].set(point.address + 1, lo);
      }
    }
  }
}

const view = new DataView(new ArrayBuffer(4));

/** Engineering value -> register words, big-endian, high word first (the Modbus convention). */
export function encode(p: Pick<SimPoint, 'type' | 'scale'>, value: number): [number, number?] {
  const raw = value / (p.scale ?? 1);
  switch (p.type) {
    case 'int16':
      return [Math.max(-0x8000, Math.min(0x7fff, Math.round(raw))) & 0xffff];
    case 'uint16':
      return [Math.max(0, Math.min(0xffff, Math.round(raw)))];
    case 'bool':
      return [raw !== 0 ? 1 : 0];
    case 'int32':
      view.setInt32(0, Math.max(-0x80000000, Math.min(0x7fffffff, Math.round(raw))));
      break;
    case 'uint32':
      view.setUint32(0, Math.max(0, Math.min(0xffffffff, Math.round(raw))));
      break;
    case 'float32':
      view.setFloat32(0, raw);
      break;
  }
  return [view.getUint16(0), view.getUint16(2)];
}

function decode(p: SimPoint, hi: number, lo: number): number {
  let raw: number;
  switch (p.type) {
    case 'int16':
      raw = hi >= 0x8000 ? hi - 0x10000 : hi;
      break;
    case 'uint16':
    case 'bool':
      raw = hi;
      break;
    default:
      view.setUint16(0, hi);
      view.setUint16(2, lo);
      raw = p.type === 'int32' ? view.getInt32(0) : p.type === 'uint32' ? view.getUint32(0) : view.getFloat32(0);
  }
  return raw * (p.scale ?? 1);
}

/** Device profiles used by the demo, the tests and the benchmarks. */
export const profiles = {
  /** A single-phase energy meter: float32 voltage and current, scaled int32 power, uint32 energy. */
  energyMeter: (): SimPoint[] => [
    { name: 'voltage', table: 'input', address: 0, type: 'float32', unit: 'V', signal: { kind: 'sine', amplitude: 4, periodMs: 20_000, offset: 230 } },
    { name: 'current', table: 'input', address: 2, type: 'float32', unit: 'A', signal: { kind: 'walk', start: 6, step: 0.2, min: 0, max: 16 } },
    { name: 'power', table: 'input', address: 4, type: 'int32', scale: 0.1, unit: 'W', signal: { kind: 'sine', amplitude: 400, periodMs: 30_000, offset: 1400 } },
    { name: 'energy', table: 'input', address: 6, type: 'uint32', unit: 'Wh', signal: { kind: 'counter', start: 120_000, step: 1 } },
    { name: 'temperature', table: 'holding', address: 0, type: 'int16', scale: 0.1, unit: 'degC', signal: { kind: 'walk', start: 31, step: 0.3, min: 20, max: 45 } },
    { name: 'breaker-closed', table: 'coil', address: 0, type: 'bool', signal: { kind: 'constant', value: 1 } },
  ],
  /** A boiler controller: pressure, flow temperature, burner state. */
  boiler: (): SimPoint[] => [
    { name: 'pressure', table: 'holding', address: 10, type: 'uint16', scale: 0.01, unit: 'bar', signal: { kind: 'sine', amplitude: 0.3, periodMs: 15_000, offset: 1.8 } },
    { name: 'flow-temp', table: 'holding', address: 11, type: 'int16', scale: 0.1, unit: 'degC', signal: { kind: 'walk', start: 65, step: 0.5, min: 40, max: 85 } },
    { name: 'starts', table: 'holding', address: 12, type: 'uint32', signal: { kind: 'counter', start: 3_000, step: 1 } },
    { name: 'burner-on', table: 'coil', address: 3, type: 'bool', signal: { kind: 'toggle', periodMs: 7_000 } },
  ],
};
