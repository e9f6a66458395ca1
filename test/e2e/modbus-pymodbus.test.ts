import { spawn } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import type { ModbusConnection } from '../../drivers/modbus/types.js';
import { freePort } from '../../sim/free-port.js';
import { BusUnderTest, device, reg } from '../helpers/modbus-bus.js';
import { sleep, waitFor } from '../helpers/wait.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** Debian's python3-pymodbus TCP server (test/fixtures/pymodbus-server.py); a missing package fails the test. */
async function pymodbus(): Promise<number> {
  const port = await freePort();
  const child = spawn('/usr/bin/python3', ['test/fixtures/pymodbus-server.py', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  let ready = false;
  child.stdout.on('data', (d: Buffer) => (ready ||= d.toString().includes('ready')));
  cleanup.push(async () => {
    child.kill('SIGKILL');
    await sleep(50);
  });
  await waitFor('the pymodbus server', () => ready || child.exitCode !== null, 15_000, 50);
  if (child.exitCode !== null) {
    throw new Error(`pymodbus server exited (${child.exitCode}); Debian: apt-get install python3-pymodbus python3-serial python3-serial-asyncio\n${stderr}`);
  }
  await sleep(300);
  return port;
}

describe('interop with an independent Modbus server (pymodbus)', () => {
  it('reads floats, signed and word-swapped integers, input registers, coils and discrete inputs', async () => {
    const port = await pymodbus();
    const conn: ModbusConnection = { kind: 'tcp', host: '127.0.0.1', port };
    const b = await BusUnderTest.start(conn, [
      device('py', conn, 1, [
        reg('f', 0, { type: 'float32' }),
        reg('s', 2, { type: 'int16' }),
        reg('u', 3, { type: 'uint32', order: 'CDAB' }),
        reg('in', 0, { table: 'input' }),
        reg('c5', 5, { table: 'coil', type: 'bool' }),
        reg('c4', 4, { table: 'coil', type: 'bool' }),
        reg('d2', 2, { table: 'discrete', type: 'bool' }),
        reg('sp', 20, { type: 'float32', order: 'DCBA', writable: true, intervalMs: 60_000 }),
      ], { timeoutMs: 1000 }),
    ]);
    cleanup.push(() => b.bus.stop());
    await waitFor('a poll of every point', () => new Set(b.of('py').map((r) => r.point)).size === 8, 10_000);
    const value = (p: string): unknown => b.of('py', p)[0]!.value;
    expect(b.of('py').every((r) => r.quality === 'good')).toBe(true);
    expect(value('f')).toBe(1234.5);
    expect(value('s')).toBe(-42);
    expect(value('u')).toBe(70000);
    expect(value('in')).toBe(321);
    expect(value('c5')).toBe(true);
    expect(value('c4')).toBe(false);
    expect(value('d2')).toBe(true);
    // The planner read holding 0..4 in one request, coils 4..5 in one: 4 requests per poll, and
    // the setpoint (another interval) one more.
    expect(b.bus.requestsPerCycle).toBe(5);
    // A write in little-endian byte order, read back by the gateway and checked by the server's registers.
    expect(await b.bus.write('py', 'sp', -3.25)).toMatchObject({ readBack: -3.25 });
  }, 30_000);
});
