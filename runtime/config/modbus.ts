import type { ModbusConnection, ModbusDevice } from '../../drivers/modbus/types.js';
import type { SiteConfig } from './schema.js';

type ModbusConfig = Exclude<SiteConfig['devices'][number], { protocol: 'mqtt' }>;

/** A validated Modbus device entry → the driver's view of it. */
export function toModbusDevice(d: ModbusConfig): ModbusDevice {
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
