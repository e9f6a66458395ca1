import { driverContract } from './driver-suite.js';
import { modbusImplementation } from './modbus-peer.js';

driverContract('modbus-rtu-tcp against sim/modbus-server.ts (RTU frames over TCP)', modbusImplementation('rtu'));
