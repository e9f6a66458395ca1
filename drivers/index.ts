import type { ProtocolEntry } from '../runtime/contracts/index.js';
import { modbusRtu, modbusRtuTcp, modbusTcp } from './modbus/protocol.js';
import { mqttChildren } from './mqtt/protocol.js';

/**
 * The protocols the gateway speaks, by the `protocol` name of a device entry. A new protocol is
 * its own folder (schema, factory, driver) and one line here.
 */
export const builtinProtocols: readonly ProtocolEntry[] = [modbusTcp, modbusRtuTcp, modbusRtu, mqttChildren];
