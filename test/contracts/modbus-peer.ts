import { modbusRtuTcp, modbusTcp } from '../../drivers/modbus/protocol.js';
import { SimModbusServer, type Framing } from '../../sim/modbus-server.js';
import { noBroker, type DriverImplementation } from './driver-suite.js';

/**
 * A Modbus device behind sim/modbus-server.ts, as the driver contract runs it: MBAP framing
 * (modbus-tcp) or RTU frames over TCP (modbus-rtu-tcp). Unreachable from the start: nothing
 * listens on its port; while running: the slave stops answering.
 */
export function modbusImplementation(framing: Framing): DriverImplementation {
  const protocol = framing === 'tcp' ? modbusTcp : modbusRtuTcp;
  const address = { temp: 0, setpoint: 10 } as const;
  return {
    neverReached: 'reported',
    write: { point: 'setpoint', value: 1234, readBack: 1234, readOnlyPoint: 'temp' },
    async setup({ reachable }) {
      const server = new SimModbusServer(framing);
      const unit = server.unit(1);
      unit.holding[address.temp] = 215;
      await server.listen(0);
      // The port stays known: reachable() listens on it again.
      if (!reachable) await server.close();
      return {
        protocol,
        env: { localBroker: noBroker, acceptUnknownDevices: false, otherDevices: new Set<string>() },
        device: 'plc-1',
        devices: [
          {
            id: 'plc-1',
            protocol: protocol.protocol,
            host: '127.0.0.1',
            port: server.port,
            pollIntervalMs: 100,
            timeoutMs: 200,
            breaker: { failures: 2, openMs: 300, maxOpenMs: 600 },
            points: [
              { name: 'temp', table: 'holding', address: address.temp, scale: 0.1, unit: 'degC' },
              { name: 'setpoint', table: 'holding', address: address.setpoint, writable: true },
            ],
          },
        ],
        reachable: async () => {
          unit.fault = { mode: 'answer' };
          await server.listen();
        },
        unreachable: () => {
          unit.fault = { mode: 'mute' };
          return Promise.resolve();
        },
        held: (point) => unit.holding[point === 'temp' ? address.temp : address.setpoint]!,
        close: () => server.close(),
      };
    },
  };
}
