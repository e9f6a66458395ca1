import { createServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/** MBAP framing (Modbus TCP) or RTU framing (serial line, or RTU over TCP). */
export type Framing = 'tcp' | 'rtu';

/**
 * What a unit does with a request: answer; never answer (`mute`); answer after `delayMs`
 * (`late`); answer with exception `exceptionCode`; drop the connection (`drop`); answer with a
 * frame whose byte count is wrong or, on RTU, whose CRC is wrong (`corrupt`); answer with another
 * transaction id (`wrong-tid`) or another unit id (`wrong-unit`).
 */
export type FaultMode = 'answer' | 'mute' | 'late' | 'exception' | 'drop' | 'corrupt' | 'wrong-tid' | 'wrong-unit';

export interface UnitFault {
  mode: FaultMode;
  delayMs?: number;
  exceptionCode?: number;
}

/** One Modbus server (slave) address: four tables of 65,536 entries. */
export class ModbusUnit {
  readonly holding = new Uint16Array(65536);
  readonly input = new Uint16Array(65536);
  readonly coils = new Uint8Array(65536);
  readonly discrete = new Uint8Array(65536);
  fault: UnitFault = { mode: 'answer' };
  /** Requests received (answered or not). */
  requests = 0;
  /** Called before a request is served, e.g. to refresh values from signal generators. */
  beforeRequest: (() => void) | undefined;
}

export function crc16(buf: Buffer): number {
  let crc = 0xffff;
  for (const b of buf) {
    crc ^= b;
    for (let i = 0; i < 8; i++) crc = crc & 1 ? (crc >>> 1) ^ 0xa001 : crc >>> 1;
  }
  return crc;
}

const exception = (fc: number, code: number): Buffer => Buffer.from([fc | 0x80, code]);

/** Serves one request PDU for `unit`; returns the response PDU. */
export function servePdu(unit: ModbusUnit, pdu: Buffer): Buffer {
  const fc = pdu[0]!;
  if (pdu.length < 5) return exception(fc, 3);
  const addr = pdu.readUInt16BE(1);
  const qtyOrValue = pdu.readUInt16BE(3);
  switch (fc) {
    case 1:
    case 2: {
      if (qtyOrValue < 1 || qtyOrValue > 2000) return exception(fc, 3);
      if (addr + qtyOrValue > 65536) return exception(fc, 2);
      const table = fc === 1 ? unit.coils : unit.discrete;
      const bytes = Buffer.alloc(Math.ceil(qtyOrValue / 8));
      for (let i = 0; i < qtyOrValue; i++) if (table[addr + i]) bytes[i >> 3]! |= 1 << (i & 7);
      return Buffer.concat([Buffer.from([fc, bytes.length]), bytes]);
    }
    case 3:
    case 4: {
      if (qtyOrValue < 1 || qtyOrValue > 125) return exception(fc, 3);
      if (addr + qtyOrValue > 65536) return exception(fc, 2);
      const table = fc === 3 ? unit.holding : unit.input;
      const out = Buffer.alloc(2 + qtyOrValue * 2);
      out[0] = fc;
      out[1] = qtyOrValue * 2;
      for (let i = 0; i < qtyOrValue; i++) out.writeUInt16BE(table[addr + i]!, 2 + i * 2);
      return out;
    }
    case 5:
      if (qtyOrValue !== 0xff00 && qtyOrValue !== 0) return exception(fc, 3);
      unit.coils[addr] = qtyOrValue === 0xff00 ? 1 : 0;
      return Buffer.from(pdu.subarray(0, 5));
    case 6:
      unit.holding[addr] = qtyOrValue;
      return Buffer.from(pdu.subarray(0, 5));
    case 15:
    case 16: {
      const count = pdu[5];
      const max = fc === 15 ? 1968 : 123;
      if (count === undefined || qtyOrValue < 1 || qtyOrValue > max || pdu.length < 6 + count) return exception(fc, 3);
      if (addr + qtyOrValue > 65536) return exception(fc, 2);
      for (let i = 0; i < qtyOrValue; i++) {
        if (fc === 15) unit.coils[addr + i] = (pdu[6 + (i >> 3)]! >> (i & 7)) & 1;
        else unit.holding[addr + i] = pdu.readUInt16BE(6 + i * 2);
      }
      return Buffer.from(pdu.subarray(0, 5));
    }
    default:
      return exception(fc, 1);
  }
}

/** Length of the RTU request frame at the start of `buf`, or 0 when more bytes are needed. */
function rtuRequestLength(buf: Buffer): number {
  if (buf.length < 2) return 0;
  const fc = buf[1]!;
  if (fc === 15 || fc === 16) return buf.length < 7 ? 0 : 9 + buf[6]!;
  return 8;
}

/**
 * A Modbus server for the simulated site, built on frames rather than a library so that every
 * fault a real plant shows can be injected per unit. One instance serves many unit ids (a PLC, or
 * the devices behind a serial-to-Ethernet gateway) over TCP (MBAP or RTU framing) or over any
 * byte stream (a serial line, e.g. one end of a pseudo-terminal pair).
 */
export class SimModbusServer {
  readonly units = new Map<number, ModbusUnit>();
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private boundPort = 0;
  /** Frames received that no unit here answers to. */
  unknownUnit = 0;

  constructor(
    readonly framing: Framing,
    readonly host = '127.0.0.1',
  ) {}

  unit(id: number): ModbusUnit {
    let u = this.units.get(id);
    if (!u) this.units.set(id, (u = new ModbusUnit()));
    return u;
  }

  get port(): number {
    return this.boundPort;
  }

  get running(): boolean {
    return this.server !== undefined;
  }

  /** Listen on TCP (port 0: a free one; later calls reuse the port it had). */
  async listen(port = this.boundPort): Promise<void> {
    if (this.server) return;
    const server = createServer((socket) => {
      socket.setNoDelay(true);
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => socket.destroy());
      this.attach(socket);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, this.host, () => resolve());
    });
    const addr = server.address();
    this.boundPort = typeof addr === 'object' && addr ? addr.port : port;
    this.server = server;
  }

  /** Off the network: the port is closed and every connection dropped. */
  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Serve requests arriving on `stream` (a TCP socket, or a serial line). */
  attach(stream: Duplex): void {
    let buf = Buffer.alloc(0);
    stream.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        if (this.framing === 'tcp') {
          if (buf.length < 7) return;
          const len = buf.readUInt16BE(4);
          if (buf.length < 6 + len) return;
          const frame = buf.subarray(0, 6 + len);
          buf = buf.subarray(6 + len);
          this.request(stream, frame.readUInt16BE(0), frame[6]!, Buffer.from(frame.subarray(7)));
        } else {
          const n = rtuRequestLength(buf);
          if (n === 0 || buf.length < n) return;
          const frame = buf.subarray(0, n);
          buf = buf.subarray(n);
          // A frame with a bad CRC is ignored, as a device on a serial line does.
          if (crc16(frame.subarray(0, n - 2)) !== frame.readUInt16LE(n - 2)) {
            buf = Buffer.alloc(0);
            continue;
          }
          this.request(stream, 0, frame[0]!, Buffer.from(frame.subarray(1, n - 2)));
        }
      }
    });
  }

  private request(stream: Duplex, tid: number, unitId: number, pdu: Buffer): void {
    const unit = this.units.get(unitId);
    if (!unit) {
      this.unknownUnit++;
      return;
    }
    unit.requests++;
    const fault = unit.fault;
    if (fault.mode === 'mute') return;
    if (fault.mode === 'drop') {
      stream.destroy();
      return;
    }
    unit.beforeRequest?.();
    let response = fault.mode === 'exception' ? exception(pdu[0]!, fault.exceptionCode ?? 4) : servePdu(unit, pdu);
    let answerTid = tid;
    let answerUnit = unitId;
    if (fault.mode === 'wrong-tid') answerTid = (tid + 1) & 0xffff;
    if (fault.mode === 'wrong-unit') answerUnit = (unitId + 1) & 0xff;
    if (fault.mode === 'corrupt' && this.framing === 'tcp' && response.length > 2) {
      // Byte count says one register more than the frame carries.
      response = Buffer.from(response);
      response[1] = response[1]! + 2;
    }
    let frame: Buffer;
    if (this.framing === 'tcp') {
      frame = Buffer.alloc(7 + response.length);
      frame.writeUInt16BE(answerTid, 0);
      frame.writeUInt16BE(0, 2);
      frame.writeUInt16BE(response.length + 1, 4);
      frame[6] = answerUnit;
      response.copy(frame, 7);
    } else {
      frame = Buffer.alloc(3 + response.length);
      frame[0] = answerUnit;
      response.copy(frame, 1);
      let crc = crc16(frame.subarray(0, frame.length - 2));
      if (fault.mode === 'corrupt') crc ^= 0xffff;
      frame.writeUInt16LE(crc, frame.length - 2);
    }
    const send = (): void => {
      if (!stream.destroyed) stream.write(frame);
    };
    if (fault.mode === 'late') setTimeout(send, fault.delayMs ?? 2000).unref();
    else send();
  }
}
