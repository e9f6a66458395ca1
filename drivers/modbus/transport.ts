import { Socket } from 'node:net';
import type { ModbusRTU } from 'modbus-serial/ModbusRTU.js';
import type { Clock, Logger } from '../../runtime/contracts/index.js';
import { classify, ModbusFault } from './faults.js';
import type { ReadRequest } from './planner.js';
import type { ModbusConnection, ModbusDevice } from './types.js';

/** modbus-serial's client: what a request is made with. */
export type ModbusClient = ModbusRTU;

// modbus-serial is CommonJS whose typings describe an ES default export; at run time the default
// import is the client class itself.
/**
 * modbus-serial (with serialport, ~10 MiB of RSS) is loaded on the first connection, so a gateway
 * without Modbus devices never loads it.
 */
let clientClass: Promise<new () => ModbusClient> | undefined;
const modbusClient = (): Promise<new () => ModbusClient> =>
  (clientClass ??= import('modbus-serial').then((m) => m.default as unknown as new () => ModbusClient));

/** The key under which devices share one connection: a serial line, or one TCP endpoint. */
export function connectionKey(c: ModbusConnection): string {
  return c.kind === 'rtu' ? `rtu:${c.path}` : `${c.kind}:${c.host}:${c.port}`;
}

/** What the transport tells its owner about the requests it makes for a device. */
export interface RequestAccounting<D> {
  /** A request to the device is sent (each retry too). */
  sent(d: D): void;
  /** A request to the device failed, for the reason `fault` gives. */
  failed(d: D, fault: ModbusFault): void;
}

/**
 * One Modbus connection (a TCP endpoint with MBAP or RTU framing, or a serial line) and the
 * requests made on it, one at a time: the device's unit id and timeout, its retries, and the quiet
 * time RTU needs after a timeout. The owner decides when to connect and when to give up on a
 * connection; `D` is whatever the owner keeps per device.
 */
export class ModbusTransport<D extends { readonly device: ModbusDevice }> {
  private client: ModbusClient | undefined;
  /** Our TCP socket under the client, destroyed when a dead connection will not close. */
  private socket: Socket | undefined;
  private isConnected = false;
  private halted = false;
  private wakePause: (() => void) | undefined;

  constructor(
    private readonly connection: ModbusConnection,
    /** For log lines: the bus this connection serves. */
    private readonly name: string,
    /** For the connect itself: the longest timeout of the devices on the connection. */
    private readonly connectTimeoutMs: number,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly accounting: RequestAccounting<D>,
  ) {}

  /** False until connected, and again once the connection failed or the port reported an error. */
  get connected(): boolean {
    return this.isConnected;
  }

  /** Ends a quiet time in progress and every later one: the owner is stopping. */
  halt(): void {
    this.halted = true;
    this.wakePause?.();
  }

  async connect(): Promise<void> {
    const ModbusRTUClient = await modbusClient();
    const client = new ModbusRTUClient();
    // modbus-serial re-emits serial port errors (an unplugged USB adapter) on the client: without
    // a listener they would crash the gateway. The bus drops the connection and opens a new one.
    (client as unknown as NodeJS.EventEmitter).on('error', (err: unknown) => {
      if (this.client !== client) return;
      this.log.warn({ bus: this.name, err: classify(err).message }, 'modbus port error');
      this.isConnected = false;
    });
    const c = this.connection;
    const timeout = this.connectTimeoutMs;
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
    this.isConnected = true;
  }

  async disconnect(): Promise<void> {
    const client = this.client;
    const socket = this.socket;
    this.client = undefined;
    this.socket = undefined;
    this.isConnected = false;
    if (!client) return;
    // modbus-serial's close() never calls back when the socket is already gone (the slave dropped
    // it): waiting for it would freeze the poll loop for good. Give it a moment, then move on.
    const clock = this.clock;
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

  /** Reads the registers or bits of `req` from `d`, with the device's retries. */
  read(d: D, req: ReadRequest): Promise<number[]> {
    return this.request(d, (client) => readTable(client, req));
  }

  /**
   * One request with the device's retries: a corrupt or busy answer is tried again; a timeout is
   * not (it would hold the bus once more for a device that is probably gone).
   */
  async request<T>(d: D, op: (client: ModbusClient) => Promise<T>): Promise<T> {
    const device = d.device;
    for (let attempt = 0; ; attempt++) {
      const client = this.client;
      if (!client) throw new ModbusFault('connection', 'connection lost: not connected');
      client.setID(device.unitId);
      client.setTimeout(device.timeoutMs);
      this.accounting.sent(d);
      try {
        const result = await op(client);
        forgetTransactions(client);
        return result;
      } catch (err) {
        forgetTransactions(client);
        const fault = classify(err);
        this.accounting.failed(d, fault);
        if (fault.kind === 'timeout' && this.connection.kind !== 'tcp') {
          // RTU has no transaction id: let a late answer arrive while its request is current.
          await this.pause(device.timeoutMs);
        }
        const again = (fault.kind === 'corrupt' || fault.code === 6 || fault.code === 5) && attempt < device.retries;
        if (!again) throw fault;
        if (fault.kind === 'corrupt' && this.connection.kind !== 'rtu') {
          // A stream with a bad frame in it may be out of step: start a fresh one.
          await this.disconnect();
          await this.connect();
        }
      }
    }
  }

  /** A wait that a write does not cut short; halt() does. */
  private async pause(ms: number): Promise<void> {
    if (this.halted) return;
    const clock = this.clock;
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
}

/**
 * modbus-serial keeps each transaction (its callback, and through it the answer's data) until its
 * id comes round again, 256 per TCP connection: at 10,000 points/s over 50 connections that was
 * about 25 MiB held for nothing. A connection here has one request in flight at a time, so once it
 * has settled no transaction is needed; a late answer then finds none and is dropped, as modbus-
 * serial drops an answer to a transaction that timed out.
 */
function forgetTransactions(client: ModbusClient): void {
  (client as unknown as { _transactions: Record<number, unknown> })._transactions = {};
}

/** One read; an answer whose byte count does not match the request is refused as corrupt. */
async function readTable(client: ModbusClient, req: ReadRequest): Promise<number[]> {
  switch (req.table) {
    case 'holding':
      return words(req, await client.readHoldingRegisters(req.address, req.length));
    case 'input':
      return words(req, await client.readInputRegisters(req.address, req.length));
    case 'coil':
      return bits(req, await client.readCoils(req.address, req.length));
    case 'discrete':
      return bits(req, await client.readDiscreteInputs(req.address, req.length));
  }
}

function words(req: ReadRequest, r: { data: number[]; buffer: Buffer }): number[] {
  if (r.data.length !== req.length || r.buffer.length !== req.length * 2) {
    throw new ModbusFault('corrupt', `invalid answer: ${r.buffer.length} bytes for ${req.length} registers`);
  }
  return r.data;
}

function bits(req: ReadRequest, r: { data: boolean[]; buffer: Buffer }): number[] {
  if (r.buffer.length !== Math.ceil(req.length / 8)) {
    throw new ModbusFault('corrupt', `invalid answer: ${r.buffer.length} bytes for ${req.length} bits`);
  }
  return r.data.slice(0, req.length).map((b) => (b ? 1 : 0));
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
