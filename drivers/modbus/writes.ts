import { errorMessage, WriteRefused, type Value, type WriteResult, type WriteValue } from '../../runtime/contracts/index.js';
import { decodePoint, DecodeError, encodePoint } from './codec.js';
import type { ModbusTransport } from './transport.js';
import type { ModbusDevice, ModbusPoint } from './types.js';

/** Writes waiting for one bus at most; more are refused, not queued. */
export const MAX_PENDING_WRITES = 32;

/** A write waiting for its turn on the bus; `target` is what the bus keeps for the device. */
export interface WriteJob<D> {
  readonly target: D;
  readonly point: ModbusPoint;
  readonly value: WriteValue;
  readonly resolve: (r: WriteResult) => void;
  readonly reject: (e: Error) => void;
}

/**
 * The point of `points` named `pointName` when `value` may be written to it, else why not
 * (unknown-point, not-writable, invalid-value): refusals made before anything is sent.
 */
export function writablePoint(deviceId: string, points: ReadonlyMap<string, ModbusPoint>, pointName: string, value: WriteValue): ModbusPoint | WriteRefused {
  const point = points.get(pointName);
  if (!point) return new WriteRefused('unknown-point', `device "${deviceId}" has no point "${pointName}"`);
  if (!point.writable) return new WriteRefused('not-writable', `point "${pointName}" of "${deviceId}" is not writable (set writable: true in the config)`);
  try {
    encodePoint(value, point);
  } catch (err) {
    return new WriteRefused('invalid-value', errorMessage(err));
  }
  return point;
}

/**
 * The writes waiting for one bus, first come first served. Bounded: beyond MAX_PENDING_WRITES a
 * write is refused with `busy` at once, so that a caller never waits behind a queue it cannot see
 * the end of.
 */
export class WriteQueue<D> {
  private readonly jobs: WriteJob<D>[] = [];

  constructor(
    private readonly busName: string,
    /** Called when a write was queued: the bus's loop takes it before its next poll. */
    private readonly queued: () => void,
  ) {}

  /** Queues a write that writablePoint() allowed; resolves once it is made and verified. */
  add(target: D, point: ModbusPoint, value: WriteValue): Promise<WriteResult> {
    if (this.jobs.length >= MAX_PENDING_WRITES) {
      return Promise.reject(new WriteRefused('busy', `${MAX_PENDING_WRITES} writes already wait for ${this.busName}; try again later`));
    }
    return new Promise((resolve, reject) => {
      this.jobs.push({ target, point, value, resolve, reject });
      this.queued();
    });
  }

  /** The oldest waiting write, taken off the queue. */
  next(): WriteJob<D> | undefined {
    return this.jobs.shift();
  }

  /** Rejects every waiting write, each with the error `why` gives for it. */
  failAll(why: (job: WriteJob<D>) => Error): void {
    for (const job of this.jobs.splice(0)) job.reject(why(job));
  }
}

/**
 * A verified write: sends `value` to point `p` of the device (one coil, one register, or several
 * in one request), reads the point back and compares. Resolves with the value read back; rejects
 * when the device refused, did not answer, or holds another value afterwards.
 */
export async function writeVerified<D extends { readonly device: ModbusDevice }>(io: ModbusTransport<D>, d: D, p: ModbusPoint, value: WriteValue): Promise<Value> {
  const words = encodePoint(value, p);
  if (p.table === 'coil') await io.request(d, (client) => client.writeCoil(p.address, words[0] === 1));
  else if (words.length === 1) await io.request(d, (client) => client.writeRegister(p.address, words[0]!));
  else await io.request(d, (client) => client.writeRegisters(p.address, words));
  const back = await io.read(d, { table: p.table, address: p.address, length: words.length, points: [p] });
  const readBack = decodePoint(back, 0, p);
  if (readBack instanceof DecodeError) throw new Error(`read-back failed: ${readBack.message}`, { cause: readBack });
  // What the device should hold, as decoding shows it: a coil written as 1/0 reads back as a
  // boolean, a string loses trailing padding.
  const expected = p.table === 'coil' ? value === true || value === 1 : typeof value === 'string' ? value.replace(/[\0 ]+$/, '') : value;
  const same =
    typeof readBack === 'number' && typeof expected === 'number'
      ? Math.abs(readBack - expected) <= Math.abs(p.scale) * 1e-6 + Math.abs(expected) * 1e-6
      : readBack === expected;
  if (!same) throw new Error(`read-back mismatch: wrote ${JSON.stringify(value)}, device holds ${JSON.stringify(readBack)}`);
  return readBack;
}
