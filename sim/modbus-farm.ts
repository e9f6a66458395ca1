/**
 * A farm of simulated Modbus TCP slaves in a process of its own, for benchmarks: the slaves'
 * work does not share the event loop (or the core) of what is measured. Prints one JSON line
 * `{"ports":[...]}` once every slave listens; stops on SIGTERM or when stdin closes.
 *
 *   node dist/sim/modbus-farm.js --slaves 50
 *
 * Every slave answers unit 1; register i of each table holds i, coils and discrete inputs
 * alternate, so any address map can be polled.
 */
import { parseArgs } from 'node:util';
import { SimModbusServer } from './modbus-server.js';

const { values } = parseArgs({ options: { slaves: { type: 'string', default: '10' } } });
const count = Number(values.slaves);
if (!Number.isInteger(count) || count < 1 || count > 1000) {
  process.stderr.write(`--slaves: expected 1..1000, got ${values.slaves}\n`);
  process.exit(2);
}
const servers: SimModbusServer[] = [];
for (let i = 0; i < count; i++) {
  const s = new SimModbusServer('tcp');
  const u = s.unit(1);
  for (let a = 0; a < 65536; a++) {
    u.holding[a] = a;
    u.input[a] = a;
    u.coils[a] = a & 1;
    u.discrete[a] = (a >> 1) & 1;
  }
  await s.listen(0);
  servers.push(s);
}
process.stdout.write(`${JSON.stringify({ ports: servers.map((s) => s.port) })}\n`);

const stop = async (): Promise<void> => {
  for (const s of servers) await s.close();
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
// Requests received by all slaves so far, on stderr: lets a benchmark check its own counts.
process.on('SIGUSR2', () => process.stderr.write(`requests ${servers.reduce((n, s) => n + (s.units.get(1)?.requests ?? 0), 0)}\n`));
process.stdin.on('close', () => void stop());
process.stdin.resume();
