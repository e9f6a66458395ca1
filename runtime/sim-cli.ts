import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { SimChildDevice } from '../sim/child-device.js';
import { profiles, SimModbusSlave } from '../sim/modbus-slave.js';
import { pointEntries, pumpPoints } from '../sim/site.js';
import { deriveDeviceKey } from './contracts/index.js';
import { plainTable } from './plain-table.js';

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
  if (args[0] === 'fleet') return fleetCommand(args.slice(1));
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

const FLEET_USAGE = `usage: outpost sim fleet --cloud URL[,URL...] [--gateways N] [--children M] [--interval-ms MS] [--duration-s S] [--dir DIR] [--json]
  N gateways (outpost start, each its own process and store) with M simulated children each, syncing
  to the cloud broker(s) (a list: the gateways fail over between them), and a consumer on the first
  one that reports per gateway: acknowledged, delivered, missing, duplicates, delivery lag p50/p99/max.
  Defaults: 5 gateways, 200 children, a reading per child per 1000 ms, 30 s. Exit 1 when a reading is missing.
`;

/** `outpost sim fleet`: the fleet simulation (sim/fleet.ts) with a live line and a table per gateway. */
async function fleetCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      cloud: { type: 'string' },
      consumer: { type: 'string' },
      gateways: { type: 'string', default: '5' },
      children: { type: 'string', default: '200' },
      'interval-ms': { type: 'string', default: '1000' },
      'duration-s': { type: 'string', default: '30' },
      dir: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help || !values.cloud) {
    process.stdout.write(FLEET_USAGE);
    return values.help ? 0 : 2;
  }
  const int = (name: string, text: string, min: number, max: number): number => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name}: expected ${min} to ${max}, not "${text}"`);
    return n;
  };
  const cloudUrls = values.cloud.split(',').map((u) => u.trim()).filter((u) => u !== '');
  for (const u of cloudUrls) if (!/^(mqtt|mqtts|tcp|ssl):\/\/\S+$/.test(u)) throw new Error(`--cloud: "${u}" is not an mqtt:// URL`);
  const { runFleet } = await import('../sim/fleet.js');
  const dir = values.dir ?? mkdtempSync(join(tmpdir(), 'outpost-fleet-'));
  const tty = process.stderr.isTTY;
  const report = await runFleet({
    gateways: int('gateways', values.gateways, 1, 100),
    children: int('children', values.children, 1, 10_000),
    intervalMs: int('interval-ms', values['interval-ms'], 10, 3_600_000),
    durationMs: int('duration-s', values['duration-s'], 1, 86_400) * 1000,
    cloudUrls,
    ...(values.consumer ? { consumerUrl: values.consumer } : {}),
    cli: fileURLToPath(new URL('./cli.js', import.meta.url)),
    dir,
    onProgress: (p) => {
      const line = `${p.phase} ${Math.round(p.elapsedMs / 1000)} s: ${p.connected} children publishing, ${p.acked} readings acknowledged, ${p.delivered} delivered`;
      process.stderr.write(tty ? `\r\x1b[K${line}` : `${line}\n`);
    },
  });
  if (tty) process.stderr.write('\n');
  if (!values.dir) rmSync(dir, { recursive: true, force: true });
  if (values.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else {
    process.stdout.write(
      `${plainTable(
        ['GATEWAY', 'CHILDREN', 'ACKED', 'DELIVERED', 'MISSING', 'DUPLICATES', 'LAG P50', 'LAG P99', 'LAG MAX'],
        report.gateways.map((g) => [g.gateway, String(g.children), String(g.acked), String(g.delivered), String(g.missing), String(g.duplicates), `${g.lagMs.p50} ms`, `${g.lagMs.p99} ms`, `${g.lagMs.max} ms`]),
      )}\n${report.totals.delivered} of ${report.totals.acked} acknowledged readings delivered (${report.totals.missing} missing, ${report.totals.duplicates} duplicates), ${report.totals.readingsPerS} readings/s over ${Math.round(report.durationMs / 1000)} s\n`,
    );
  }
  return report.totals.missing === 0 ? 0 : 1;
}
