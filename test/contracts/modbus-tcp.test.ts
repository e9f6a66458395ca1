import { driverContract } from './driver-suite.js';
import { modbusImplementation } from './modbus-peer.js';

driverContract('modbus-tcp against sim/modbus-server.ts (MBAP framing)', modbusImplementation('tcp'));
