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
