import { z } from 'zod';
import { durationMsSchema, idSchema } from '../../runtime/contracts/index.js';

/**
 * The site config's Modbus device entries (docs/config.md): protocols modbus-tcp, modbus-rtu-tcp
 * and modbus-rtu, their points and poll settings. Validated once into typed objects with defaults.
 */
const bitTable = (t: string): boolean => t === 'coil' || t === 'discrete';
const registerWidth: Record<string, number> = { int32: 2, uint32: 2, float32: 2, int64: 4, uint64: 4, float64: 4 };

export const pointSchema = z
  .strictObject({
    name: idSchema,
    table: z.enum(['holding', 'input', 'coil', 'discrete']),
    /** Zero-based protocol address (register 40001 is holding address 0). */
    address: z.number().int().min(0).max(65535),
    type: z.enum(['int16', 'uint16', 'int32', 'uint32', 'int64', 'uint64', 'float32', 'float64', 'bool', 'string']).default('uint16'),
    /** Byte order of multi-register values: ABCD (big-endian), CDAB (word swap), BADC (byte swap), DCBA. */
    order: z.enum(['ABCD', 'CDAB', 'BADC', 'DCBA']).default('ABCD'),
    /** Engineering value = raw × scale + offset. */
    scale: z.number().finite().refine((v) => v !== 0, 'scale must not be 0').default(1),
    offset: z.number().finite().default(0),
    unit: z.string().min(1).max(32).optional(),
    /** Type bool in a holding or input register: bit 0 (least significant) to 15. */
    bit: z.number().int().min(0).max(15).optional(),
    /** Type string: length in registers (two characters each). */
    length: z.number().int().min(1).max(125).optional(),
    /** Poll interval of this point; default: the device's pollIntervalMs. */
    intervalMs: durationMsSchema.min(10).optional(),
    /** Report by exception: a value that moved less than this from the last reported one is not reported. */
    deadband: z
      .strictObject({ absolute: z.number().finite().positive().optional(), percent: z.number().finite().positive().max(100).optional() })
      .refine((d) => d.absolute !== undefined || d.percent !== undefined, 'give absolute, percent or both')
      .optional(),
    /** With a deadband or for unchanged values: report anyway after this long without a report. */
    maxSilenceMs: durationMsSchema.optional(),
    /** May be written through the API and CLI (holding registers and coils only). */
    writable: z.boolean().default(false),
    /** The engineering range a write is clamped to (numeric writable points), whoever writes. */
    range: z.strictObject({ min: z.number().finite(), max: z.number().finite() }).refine((r) => r.min <= r.max, { message: 'min must not be greater than max', path: ['min'] }).optional(),
  })
  .superRefine((p, ctx) => {
    if (bitTable(p.table) !== (p.type === 'bool' && p.bit === undefined)) {
      if (bitTable(p.table)) ctx.addIssue({ code: 'custom', path: ['type'], message: `${p.table} points must have type bool` });
      else if (p.type === 'bool') ctx.addIssue({ code: 'custom', path: ['bit'], message: 'type bool in a register needs bit (0-15)' });
    }
    if (p.bit !== undefined && p.type !== 'bool') ctx.addIssue({ code: 'custom', path: ['bit'], message: 'bit is only for type bool' });
    if (p.type === 'string' && p.length === undefined) ctx.addIssue({ code: 'custom', path: ['length'], message: 'type string needs length (registers)' });
    if (p.length !== undefined && p.type !== 'string') ctx.addIssue({ code: 'custom', path: ['length'], message: 'length is only for type string' });
    const width = p.type === 'string' ? (p.length ?? 1) : (registerWidth[p.type] ?? 1);
    if (p.address <= 65535 && p.address + width > 65536) ctx.addIssue({ code: 'custom', path: ['address'], message: `${p.type} at ${p.address} runs past address 65535` });
    if (p.writable && !(p.table === 'holding' || p.table === 'coil')) {
      ctx.addIssue({ code: 'custom', path: ['writable'], message: `${p.table} points are read-only in Modbus` });
    }
    if (p.writable && p.type === 'string' && (p.length ?? 0) > 123) {
      ctx.addIssue({ code: 'custom', path: ['length'], message: 'a writable string is at most 123 registers (one write multiple registers request)' });
    }
    if (p.range !== undefined && (p.type === 'bool' || p.type === 'string')) ctx.addIssue({ code: 'custom', path: ['range'], message: 'range is for numeric points' });
    if (p.writable && p.table === 'holding' && p.type === 'bool') {
      ctx.addIssue({ code: 'custom', path: ['writable'], message: 'a bit of a register cannot be written on its own' });
    }
  });

const modbusCommon = {
  id: idSchema,
  /** Unit id (slave address); behind a serial-to-Ethernet gateway, the serial device's address. */
  unitId: z.number().int().min(0).max(255).default(1),
  pollIntervalMs: durationMsSchema.min(10).default(1000),
  /** Per request; a device that does not answer in time holds the bus for at most this long. */
  timeoutMs: durationMsSchema.max(60_000).default(1000),
  /** Extra attempts after a corrupt or busy answer (a timeout is never retried in the same poll). */
  retries: z.number().int().min(0).max(5).default(1),
  /** Points whose addresses are at most this far apart share one request. */
  maxGap: z.number().int().min(0).max(100).default(10),
  /** After `failures` polls in a row without an answer the device is left alone for `openMs` (doubling to `maxOpenMs`) before one probe. */
  breaker: z
    .strictObject({ failures: z.number().int().min(1).max(100).default(2), openMs: durationMsSchema.default(5000), maxOpenMs: durationMsSchema.default(60_000) })
    .default({ failures: 2, openMs: 5000, maxOpenMs: 60_000 }),
  points: z.array(pointSchema).min(1),
};

function uniquePointNames(dev: { points: readonly { name: string }[] }, ctx: z.RefinementCtx): void {
  const seen = new Set<string>();
  dev.points.forEach((p, i) => {
    if (seen.has(p.name)) ctx.addIssue({ code: 'custom', path: ['points', i, 'name'], message: `duplicate point name "${p.name}"` });
    seen.add(p.name);
  });
}

/** modbus-tcp: MBAP framing; modbus-rtu-tcp: RTU frames over TCP (serial-to-Ethernet gateways in transparent mode). */
const tcpDeviceSchema = <P extends 'modbus-tcp' | 'modbus-rtu-tcp'>(protocol: P) =>
  z
    .strictObject({
      ...modbusCommon,
      protocol: z.literal(protocol),
      host: z.string().min(1),
      port: z.number().int().min(1).max(65535).default(502),
    })
    .superRefine(uniquePointNames);

export const modbusTcpDeviceSchema = tcpDeviceSchema('modbus-tcp');
export const modbusRtuTcpDeviceSchema = tcpDeviceSchema('modbus-rtu-tcp');

export const modbusRtuDeviceSchema = z
  .strictObject({
    ...modbusCommon,
    protocol: z.literal('modbus-rtu'),
    /** Serial device, e.g. /dev/ttyUSB0. Devices on the same path share the bus. */
    path: z.string().min(1),
    baudRate: z.number().int().min(300).max(921_600).default(9600),
    parity: z.enum(['none', 'even', 'odd']).default('none'),
    dataBits: z.union([z.literal(7), z.literal(8)]).default(8),
    stopBits: z.union([z.literal(1), z.literal(2)]).default(1),
  })
  .superRefine(uniquePointNames);

export type ModbusTcpDeviceConfig = z.output<typeof modbusTcpDeviceSchema> | z.output<typeof modbusRtuTcpDeviceSchema>;
export type ModbusRtuDeviceConfig = z.output<typeof modbusRtuDeviceSchema>;
export type ModbusDeviceConfig = ModbusTcpDeviceConfig | ModbusRtuDeviceConfig;
export type PointConfig = z.output<typeof pointSchema>;
