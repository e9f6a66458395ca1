/** Driver-side view of a Modbus device; the runtime's validated config satisfies it. */
export type Table = 'holding' | 'input' | 'coil' | 'discrete';
export type PointType = 'int16' | 'uint16' | 'int32' | 'uint32' | 'int64' | 'uint64' | 'float32' | 'float64' | 'bool' | 'string';
/**
 * Order of the value's bytes A (most significant) … D in the registers: ABCD big-endian (the
 * Modbus convention), CDAB word-swapped, BADC byte-swapped, DCBA little-endian. For 64-bit values
 * the same rule applies to all four words; 16-bit values only honour the byte swap.
 */
export type ByteOrder = 'ABCD' | 'CDAB' | 'BADC' | 'DCBA';

export interface Deadband {
  readonly absolute?: number | undefined;
  /** Percent of the last reported value's magnitude. */
  readonly percent?: number | undefined;
}

export interface ModbusPoint {
  readonly name: string;
  readonly table: Table;
  readonly address: number;
  readonly type: PointType;
  readonly order: ByteOrder;
  /** Engineering value = raw × scale + offset. */
  readonly scale: number;
  readonly offset: number;
  readonly unit?: string | undefined;
  /** Type bool in a holding or input register: which bit (0 = least significant). */
  readonly bit?: number | undefined;
  /** Type string: registers (two characters each). */
  readonly length?: number | undefined;
  /** Poll interval of this point; its device's when absent. */
  readonly intervalMs?: number | undefined;
  /** Report by exception: a value within the deadband of the last reported one is not reported. */
  readonly deadband?: Deadband | undefined;
  /** With a deadband: report anyway when nothing was reported for this long. */
  readonly maxSilenceMs?: number | undefined;
  readonly writable: boolean;
}

export type ModbusConnection =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  /** RTU framing over TCP, as serial-to-Ethernet gateways in transparent mode speak it. */
  | { readonly kind: 'rtu-tcp'; readonly host: string; readonly port: number }
  | {
      readonly kind: 'rtu';
      readonly path: string;
      readonly baudRate: number;
      readonly parity: 'none' | 'even' | 'odd';
      readonly dataBits: 7 | 8;
      readonly stopBits: 1 | 2;
    };

export interface ModbusDevice {
  readonly id: string;
  readonly connection: ModbusConnection;
  readonly unitId: number;
  readonly pollIntervalMs: number;
  readonly timeoutMs: number;
  /** Extra attempts after a failed request that was answered wrongly (not after a timeout). */
  readonly retries: number;
  readonly maxGap: number;
  /** Consecutive failed polls that open the breaker; how long it stays open at first. */
  readonly breaker: { readonly failures: number; readonly openMs: number; readonly maxOpenMs: number };
  readonly points: readonly ModbusPoint[];
}
