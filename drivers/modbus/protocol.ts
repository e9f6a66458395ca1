import type { ProtocolEntry } from '../../runtime/contracts/index.js';
import { modbusBuses } from './bus.js';
import { modbusRtuDeviceSchema, modbusRtuTcpDeviceSchema, modbusTcpDeviceSchema, type ModbusDeviceConfig, type ModbusRtuDeviceConfig, type ModbusTcpDeviceConfig } from './config.js';
import type { ModbusConnection, ModbusDevice } from './types.js';

/** A validated Modbus device entry → the driver's view of it. */
export function toModbusDevice(d: ModbusDeviceConfig): ModbusDevice {
  const connection: ModbusConnection =
    d.protocol === 'modbus-rtu'
      ? { kind: 'rtu', path: d.path, baudRate: d.baudRate, parity: d.parity, dataBits: d.dataBits, stopBits: d.stopBits }
      : { kind: d.protocol === 'modbus-tcp' ? 'tcp' : 'rtu-tcp', host: d.host, port: d.port };
  return {
    id: d.id,
    connection,
    unitId: d.unitId,
    pollIntervalMs: d.pollIntervalMs,
    timeoutMs: d.timeoutMs,
    retries: d.retries,
    maxGap: d.maxGap,
    breaker: d.breaker,
    points: d.points,
  };
}

const common = {
  capabilities: { write: true },
  points: (d: ModbusDeviceConfig) => d.points.map((p) => ({ name: p.name, writable: p.writable, ...(p.range ? { range: p.range } : {}) })),
  // One bus per connection the devices share (a TCP endpoint, a serial line).
  create: (devices: readonly ModbusDeviceConfig[]) => modbusBuses(devices.map(toModbusDevice)),
} as const;

export const modbusTcp: ProtocolEntry<ModbusTcpDeviceConfig> = { protocol: 'modbus-tcp', schema: modbusTcpDeviceSchema, ...common };

export const modbusRtuTcp: ProtocolEntry<ModbusTcpDeviceConfig> = { protocol: 'modbus-rtu-tcp', schema: modbusRtuTcpDeviceSchema, ...common };

export const modbusRtu: ProtocolEntry<ModbusRtuDeviceConfig> = {
  protocol: 'modbus-rtu',
  schema: modbusRtuDeviceSchema,
  ...common,
  checkDevices(devices, issue) {
    // One serial line, one set of line settings.
    const lines = new Map<string, string>();
    for (const { index, device: d } of devices) {
      const line = `${d.baudRate} ${d.dataBits}${d.parity[0]!.toUpperCase()}${d.stopBits}`;
      const other = lines.get(d.path);
      if (other !== undefined && other !== line) issue(index, ['baudRate'], `${d.path} is already used at ${other}; devices on one serial line share its settings`);
      lines.set(d.path, line);
    }
  },
};
