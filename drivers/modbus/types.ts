/** Driver-side view of a Modbus device; the runtime's validated config satisfies it. */
export type Table = 'holding' | 'input' | 'coil' | 'discrete';
export type PointType = 'int16' | 'uint16' | 'int32' | 'uint32' | 'float32' | 'bool';

export interface ModbusPoint {
  readonly name: string;
  readonly table: Table;
  readonly address: number;
  readonly type: PointType;
  readonly scale: number;
  readonly unit?: string | undefined;
}

export interface ModbusDevice {
  readonly id: string;
  readonly host: string;
  readonly port: number;
  readonly unitId: number;
  readonly pollIntervalMs: number;
  readonly timeoutMs: number;
  readonly maxGap: number;
  readonly points: readonly ModbusPoint[];
}
