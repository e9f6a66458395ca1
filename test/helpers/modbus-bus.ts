import { ModbusBus } from '../../drivers/modbus/bus.js';
import type { ModbusConnection, ModbusDevice, ModbusPoint } from '../../drivers/modbus/types.js';
import { systemClock, type Envelope } from '../../runtime/contracts/index.js';
import { PromMetrics } from '../../runtime/metrics.js';
import { silentLogger } from './fakes.js';
import { CountingSequence } from '../../runtime/sequence.js';

export const reg = (name: string, address: number, extra: Partial<ModbusPoint> = {}): ModbusPoint => ({
  name,
  table: 'holding',
  address,
  type: 'uint16',
  order: 'ABCD',
  scale: 1,
  offset: 0,
  writable: false,
  ...extra,
});

export function device(id: string, connection: ModbusConnection, unitId: number, points: ModbusPoint[], extra: Partial<ModbusDevice> = {}): ModbusDevice {
  return {
    id,
    connection,
    unitId,
    pollIntervalMs: 100,
    timeoutMs: 200,
    retries: 1,
    maxGap: 10,
    breaker: { failures: 2, openMs: 1000, maxOpenMs: 4000 },
    points,
    ...extra,
  };
}

/** A bus started against a collecting sink: every reading it reports, with arrival time. */
export class BusUnderTest {
  readonly readings: Array<Envelope & { at: number }> = [];
  readonly metrics = new PromMetrics();
  private n = 0;

  constructor(readonly bus: ModbusBus) {}

  static async start(connection: ModbusConnection, devices: ModbusDevice[]): Promise<BusUnderTest> {
    const t = new BusUnderTest(new ModbusBus(connection, devices));
    await t.bus.start({
      sink: {
        submit: (readings) => {
          const at = Date.now();
          for (const r of readings) t.readings.push({ ...r, at });
          return Promise.resolve();
        },
      },
      sequence: new CountingSequence('t:'),
      clock: systemClock,
      log: silentLogger,
      metrics: t.metrics,
    });
    return t;
  }

  of(device: string, point?: string): Array<Envelope & { at: number }> {
    return this.readings.filter((r) => r.device === device && (point === undefined || r.point === point));
  }

  deviceStatus(id: string): Record<string, unknown> {
    const s = this.bus.status() as { devices: Record<string, unknown>[] };
    return s.devices.find((d) => d.device === id)!;
  }
}
