import { ModbusUnit, SimModbusServer, type FaultMode, type Framing, type UnitFault } from './modbus-server.js';
import { createSignal, type Signal, type SignalSpec } from './signals.js';

export type SimTable = 'holding' | 'input' | 'coil' | 'discrete';
export type SimType = 'int16' | 'uint16' | 'int32' | 'uint32' | 'float32' | 'float64' | 'bool';
/** Register order of multi-word values, as the gateway's `order` option names them. */
export type SimOrder = 'ABCD' | 'CDAB' | 'BADC' | 'DCBA';

/** One simulated point: where it lives in the register map, how it is encoded, what drives it. */
export interface SimPoint {
  readonly name: string;
  readonly table: SimTable;
  readonly address: number;
  readonly type: SimType;
  /** Byte order (default ABCD, big-endian high word first). */
  readonly order?: SimOrder;
  /** Engineering value = raw * scale, as the gateway's config declares it. */
  readonly scale?: number;
  readonly unit?: string;
  /** The gateway may write it (a setpoint or a command). */
  readonly writable?: boolean;
  readonly signal: SignalSpec;
}

export interface SimModbusSlaveOptions {
  readonly host?: string;
  /** 0 (the default) picks a free port. */
  readonly port?: number;
  readonly points: readonly SimPoint[];
  /** Unit id it answers to (default 1). */
  readonly unitId?: number;
  /** MBAP (default) or RTU frames over TCP, as a serial-to-Ethernet gateway speaks them. */
  readonly framing?: Framing;
  readonly now?: () => number;
  readonly random?: () => number;
}

/** What the slave does with requests: answer, or hold them without answering (a hung device). */
export type SlaveMode = 'answer' | 'mute';

/** Values are refreshed at most this often, so that back-to-back reads of one poll agree. */
const REFRESH_MS = 50;

/**
 * A simulated Modbus device on its own TCP port, its registers driven by signal generators.
 * It is a real Modbus server (mbpoll reads it); `stop()`/`start()` take it off and back on the
 * network at the same port; `mode = 'mute'` makes it accept requests and never answer, and
 * `fault` injects any of the other faults (late answer, exception, dropped connection, corrupt
 * frame, wrong transaction or unit id). Points written by a client keep the written value.
 */
export class SimModbusSlave {
  readonly server: SimModbusServer;
  readonly unit: ModbusUnit;
  private readonly signals: Array<{ point: SimPoint; signal: Signal }>;
  private readonly now: () => number;
  private refreshedAt = -Infinity;
  /** Raw words as last written by the sim, to tell a client's write from the signal's value. */
  private readonly written = new Map<string, string>();

  private constructor(private readonly opts: SimModbusSlaveOptions) {
    this.now = opts.now ?? Date.now;
    this.signals = opts.points.map((point) => ({ point, signal: createSignal(point.signal, opts.random) }));
    this.server = new SimModbusServer(opts.framing ?? 'tcp', opts.host ?? '127.0.0.1');
    this.unit = this.server.unit(opts.unitId ?? 1);
    this.unit.beforeRequest = () => this.refresh();
  }

  static async start(opts: SimModbusSlaveOptions): Promise<SimModbusSlave> {
    const slave = new SimModbusSlave(opts);
    slave.refresh();
    await slave.server.listen(opts.port ?? 0);
    return slave;
  }

  get host(): string {
    return this.server.host;
  }

  get port(): number {
    return this.server.port;
  }

  get points(): readonly SimPoint[] {
    return this.opts.points;
  }

  get running(): boolean {
    return this.server.running;
  }

  get requests(): number {
    return this.unit.requests;
  }

  get mode(): SlaveMode {
    return this.unit.fault.mode === 'mute' ? 'mute' : 'answer';
  }

  set mode(m: SlaveMode) {
    this.unit.fault = { mode: m };
  }

  get fault(): UnitFault {
    return this.unit.fault;
  }

  /** Inject a fault (see FaultMode); `{ mode: 'answer' }` clears it. */
  set fault(f: UnitFault) {
    this.unit.fault = f;
  }

  /** Back on the network at the port it had. */
  async start(): Promise<void> {
    await this.server.listen();
  }

  /** Off the network: the port is closed and every connection dropped. */
  async stop(): Promise<void> {
    await this.server.close();
  }

  /** The current engineering value of a point, as the last refresh computed it (or a client wrote). */
  valueOf(name: string): number | boolean | undefined {
    this.refresh();
    const p = this.opts.points.find((x) => x.name === name);
    if (!p) return undefined;
    if (p.table === 'coil') return this.unit.coils[p.address] === 1;
    if (p.table === 'discrete') return this.unit.discrete[p.address] === 1;
    return decode(p, this.wordsOf(p));
  }

  private wordsOf(p: SimPoint): number[] {
    const table = p.table === 'holding' ? this.unit.holding : this.unit.input;
    return Array.from(table.subarray(p.address, p.address + wordCount(p.type)));
  }

  private refresh(): void {
    const now = this.now();
    if (now - this.refreshedAt < REFRESH_MS) return;
    this.refreshedAt = now;
    for (const { point, signal } of this.signals) {
      const v = signal.value(now);
      if (point.table === 'coil' || point.table === 'discrete') {
        const table = point.table === 'coil' ? this.unit.coils : this.unit.discrete;
        const key = `${point.name}`;
        // A writable coil a client changed keeps the client's value.
        if (point.writable && this.written.has(key) && this.written.get(key) !== String(table[point.address])) continue;
        table[point.address] = v !== 0 ? 1 : 0;
        if (point.writable) this.written.set(key, String(table[point.address]));
        continue;
      }
      const table = point.table === 'holding' ? this.unit.holding : this.unit.input;
      if (point.writable && this.written.has(point.name) && this.written.get(point.name) !== this.wordsOf(point).join(',')) continue;
      encode(point, v).forEach((w, i) => (table[point.address + i] = w));
      if (point.writable) this.written.set(point.name, this.wordsOf(point).join(','));
    }
  }
}

export type { FaultMode, UnitFault };

const wordCount = (t: SimType): number => (t === 'float64' ? 4 : t === 'int32' || t === 'uint32' || t === 'float32' ? 2 : 1);

/** Big-endian value bytes ↔ register words in `order` (the mapping is its own inverse). */
function reorder(words: readonly number[], order: SimOrder = 'ABCD'): number[] {
  const swapWords = order === 'CDAB' || order === 'DCBA';
  const swapBytes = order === 'BADC' || order === 'DCBA';
  const w = swapWords ? [...words].reverse() : [...words];
  return swapBytes ? w.map((x) => ((x & 0xff) << 8) | (x >> 8)) : w;
}

/** Engineering value -> register words in the point's byte order. */
export function encode(p: Pick<SimPoint, 'type' | 'scale' | 'order'>, value: number): number[] {
  const raw = value / (p.scale ?? 1);
  const b = Buffer.alloc(8);
  switch (p.type) {
    case 'int16':
      return reorder([Math.max(-0x8000, Math.min(0x7fff, Math.round(raw))) & 0xffff], p.order);
    case 'uint16':
      return reorder([Math.max(0, Math.min(0xffff, Math.round(raw)))], p.order);
    case 'bool':
      return [raw !== 0 ? 1 : 0];
    case 'int32':
      b.writeInt32BE(Math.max(-0x80000000, Math.min(0x7fffffff, Math.round(raw))));
      break;
    case 'uint32':
      b.writeUInt32BE(Math.max(0, Math.min(0xffffffff, Math.round(raw))));
      break;
    case 'float32':
      b.writeFloatBE(raw);
      break;
    case 'float64':
      b.writeDoubleBE(raw);
      break;
  }
  const n = wordCount(p.type);
  return reorder(Array.from({ length: n }, (_, i) => b.readUInt16BE(i * 2)), p.order);
}

function decode(p: SimPoint, registers: readonly number[]): number {
  const w = reorder(registers, p.order);
  const b = Buffer.alloc(8);
  w.forEach((x, i) => b.writeUInt16BE(x, i * 2));
  let raw: number;
  switch (p.type) {
    case 'int16':
      raw = b.readInt16BE(0);
      break;
    case 'uint16':
    case 'bool':
      raw = b.readUInt16BE(0);
      break;
    case 'int32':
      raw = b.readInt32BE(0);
      break;
    case 'uint32':
      raw = b.readUInt32BE(0);
      break;
    case 'float32':
      raw = b.readFloatBE(0);
      break;
    case 'float64':
      raw = b.readDoubleBE(0);
      break;
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
  /**
   * A three-phase energy meter in the style of common DIN-rail meters: float32 values with the
   * words swapped (CDAB) in input registers, phase by phase.
   */
  threePhaseMeter: (): SimPoint[] => [
    ...(['l1', 'l2', 'l3'] as const).flatMap((ph, i): SimPoint[] => [
      { name: `voltage-${ph}`, table: 'input', address: i * 2, type: 'float32', order: 'CDAB', unit: 'V', signal: { kind: 'sine', amplitude: 3, periodMs: 20_000 + i * 1000, offset: 230 } },
      { name: `current-${ph}`, table: 'input', address: 6 + i * 2, type: 'float32', order: 'CDAB', unit: 'A', signal: { kind: 'walk', start: 10 + i, step: 0.3, min: 0, max: 63 } },
      { name: `power-${ph}`, table: 'input', address: 12 + i * 2, type: 'float32', order: 'CDAB', unit: 'W', signal: { kind: 'sine', amplitude: 500, periodMs: 30_000, offset: 2300 + i * 100 } },
    ]),
    { name: 'frequency', table: 'input', address: 70, type: 'float32', order: 'CDAB', unit: 'Hz', signal: { kind: 'sine', amplitude: 0.05, periodMs: 10_000, offset: 50 } },
    { name: 'energy-import', table: 'input', address: 72, type: 'float32', order: 'CDAB', unit: 'kWh', signal: { kind: 'counter', start: 15_230, step: 0.01 } },
  ],
  /** A PLC: run command and alarm reset coils, status inputs, speed setpoint and counters in holding registers. */
  plc: (): SimPoint[] => [
    { name: 'run', table: 'coil', address: 0, type: 'bool', writable: true, signal: { kind: 'constant', value: 1 } },
    { name: 'alarm-reset', table: 'coil', address: 1, type: 'bool', writable: true, signal: { kind: 'constant', value: 0 } },
    { name: 'running', table: 'discrete', address: 0, type: 'bool', signal: { kind: 'constant', value: 1 } },
    { name: 'fault', table: 'discrete', address: 1, type: 'bool', signal: { kind: 'toggle', periodMs: 60_000 } },
    { name: 'speed-setpoint', table: 'holding', address: 100, type: 'uint16', scale: 0.1, unit: 'Hz', writable: true, signal: { kind: 'constant', value: 45 } },
    { name: 'speed', table: 'holding', address: 101, type: 'uint16', scale: 0.1, unit: 'Hz', signal: { kind: 'walk', start: 45, step: 0.2, min: 40, max: 50 } },
    { name: 'cycles', table: 'holding', address: 102, type: 'uint32', signal: { kind: 'counter', start: 10_000, step: 1 } },
  ],
  /** A boiler controller: pressure, flow temperature, burner state. */
  boiler: (): SimPoint[] => [
    { name: 'pressure', table: 'holding', address: 10, type: 'uint16', scale: 0.01, unit: 'bar', signal: { kind: 'sine', amplitude: 0.3, periodMs: 15_000, offset: 1.8 } },
    { name: 'flow-temp', table: 'holding', address: 11, type: 'int16', scale: 0.1, unit: 'degC', signal: { kind: 'walk', start: 65, step: 0.5, min: 40, max: 85 } },
    { name: 'starts', table: 'holding', address: 12, type: 'uint32', signal: { kind: 'counter', start: 3_000, step: 1 } },
    { name: 'burner-on', table: 'coil', address: 3, type: 'bool', signal: { kind: 'toggle', periodMs: 7_000 } },
  ],
};
