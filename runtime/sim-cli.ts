import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { SimChildDevice } from '../sim/child-device.js';
import { profiles, SimModbusSlave } from '../sim/modbus-slave.js';
import { pointEntries, pumpPoints } from '../sim/site.js';
import { deriveDeviceKey } from './contracts/index.js';

const USAGE = `usage: outpost sim [--modbus PROFILE[@PORT]]... [--children N --broker URL --group-secret-file FILE] [--host HOST]
  --modbus PROFILE[@PORT]  a simulated Modbus TCP device: meter, plc or boiler (port 0 or none: a free one); repeatable
  --children N             N simulated MQTT child devices (pump-1 … pump-N) publishing to --broker
  --broker URL             the gateway's broker (mqtt://HOST:PORT)
  --group-secret-file F    the enrollment group secret their keys derive from (identities.groups[].secretFile)
  --interval-ms MS         how often each child publishes (default 1000)
Prints the device entries to paste under devices: in a site config, then runs until Ctrl-C.
`;

const PROFILES = { meter: profiles.energyMeter, plc: profiles.plc, boiler: profiles.boiler } as const;

/**
 * `outpost sim`: the simulated devices of the demo on chosen ports, so a site config can be tried
 * before the plant is wired: Modbus TCP slaves (an energy meter, a PLC, a boiler controller) and
 * MQTT children that authenticate with keys of an enrollment group.
 */
export async function simCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      modbus: { type: 'string', multiple: true, default: [] },
      children: { type: 'string', default: '0' },
      broker: { type: 'string' },
      'group-secret-file': { type: 'string' },
      'interval-ms': { type: 'string', default: '1000' },
      host: { type: 'string', default: '127.0.0.1' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const children = Number(values.children);
  const intervalMs = Number(values['interval-ms']);
  if (values.help || (values.modbus.length === 0 && children === 0)) {
    process.stdout.write(USAGE);
    return values.help ? 0 : 2;
  }
  if (!Number.isInteger(children) || children < 0 || children > 10_000) throw new Error(`--children: expected 0 to 10000, not "${values.children}"`);
  if (!Number.isFinite(intervalMs) || intervalMs < 10) throw new Error(`--interval-ms: expected at least 10, not "${values['interval-ms']}"`);
  if (children > 0 && (!values.broker || !values['group-secret-file'])) throw new Error('--children needs --broker URL and --group-secret-file FILE (the devices authenticate)');
  const slaves: SimModbusSlave[] = [];
  const entries: Record<string, unknown>[] = [];
  const counts = new Map<string, number>();
  for (const spec of values.modbus) {
    const [name = '', port = '0'] = spec.split('@');
    const profile = PROFILES[name as keyof typeof PROFILES];
    if (!profile) throw new Error(`--modbus ${spec}: the profiles are ${Object.keys(PROFILES).join(', ')}`);
    const slave = await SimModbusSlave.start({ host: values.host, port: Number(port), points: profile() });
    slaves.push(slave);
    const n = (counts.get(name) ?? 0) + 1;
    counts.set(name, n);
    entries.push({ id: `${name}-${n}`, protocol: 'modbus-tcp', host: slave.host, port: slave.port, points: pointEntries(slave.points) });
  }
  const devices: SimChildDevice[] = [];
  if (children > 0) {
    const secret = readFileSync(values['group-secret-file']!, 'utf8').trim();
    for (let i = 1; i <= children; i++) {
      const id = `pump-${i}`;
      const d = new SimChildDevice({ url: values.broker!, deviceId: id, intervalMs, points: pumpPoints, password: deriveDeviceKey(secret, id) });
      d.start();
      devices.push(d);
      entries.push({ id, protocol: 'mqtt' });
    }
  }
  process.stdout.write(`# outpost sim: ${slaves.length} Modbus device(s), ${devices.length} MQTT child device(s). Under devices: in your site config:\n${stringify(entries)}`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await Promise.all(devices.map((d) => d.stop()));
  await Promise.all(slaves.map((s) => s.stop()));
  return 0;
}
