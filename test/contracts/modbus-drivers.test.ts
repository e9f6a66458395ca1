import { modbusRtuTcp, modbusTcp } from '../../drivers/modbus/protocol.js';
import type { ProtocolEntry } from '../../runtime/contracts/index.js';
import { SimModbusServer, type Framing } from '../../sim/modbus-server.js';
import { driverContractSuite, type DriverHarness } from './driver-suite.js';

/** A PLC on a simulated Modbus server: `speed` (read-only) and `setpoint` (writable) holding registers. */
async function plc(entry: ProtocolEntry, framing: Framing): Promise<DriverHarness> {
  const server = new SimModbusServer(framing);
  await server.listen(0);
  const unit = server.unit(1);
  unit.holding[0] = 1450;
  unit.holding[1] = 300;
  return {
    entry,
    device: 'plc-1',
    devices: [
      {
        id: 'plc-1',
        protocol: entry.protocol,
        host: '127.0.0.1',
        port: server.port,
        pollIntervalMs: 100,
        timeoutMs: 200,
        breaker: { failures: 1, openMs: 200, maxOpenMs: 400 },
        points: [
          { name: 'speed', table: 'holding', address: 0, scale: 0.1 },
          { name: 'setpoint', table: 'holding', address: 1, scale: 0.1, writable: true },
        ],
      },
    ],
    reachable: () => server.listen(),
    unreachable: () => server.close(),
    write: { writable: 'setpoint', readOnly: 'speed', value: 42.5 },
    close: () => server.close(),
  };
}

driverContractSuite('modbus-tcp', () => plc(modbusTcp, 'tcp'));
driverContractSuite('modbus-rtu-tcp', () => plc(modbusRtuTcp, 'rtu'));
