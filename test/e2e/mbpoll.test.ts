import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { profiles, SimModbusSlave } from '../../sim/modbus-slave.js';

const run = promisify(execFile);
let slave: SimModbusSlave | undefined;
afterEach(async () => {
  await slave?.stop();
});

/** mbpoll (Debian) as an independent Modbus master; a missing binary fails the test. */
async function mbpoll(port: number, opts: string[], write: string[] = []): Promise<Map<number, number>> {
  const args = ['-m', 'tcp', '-a', '1', '-0', '-1', '-p', String(port), ...opts, '127.0.0.1', ...write];
  const { stdout } = await run('mbpoll', args, { timeout: 10_000 }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') throw new Error('mbpoll is not installed (Debian: apt-get install mbpoll); this test needs it as a peer');
    throw err;
  });
  const values = new Map<number, number>();
  for (const m of stdout.matchAll(/^\[(\d+)\]:\s+(-?[\d.]+)/gm)) values.set(Number(m[1]), Number(m[2]));
  return values;
}

describe('the simulated Modbus slave is a real Modbus TCP server', () => {
  it('answers mbpoll: float32 input registers, scaled int16 holding register and a coil match the profile', async () => {
    const s = await SimModbusSlave.start({ points: profiles.energyMeter() });
    slave = s;
    const floats = await mbpoll(s.port, ['-t', '3:float', '-B', '-r', '0', '-c', '2']);
    const voltage = floats.get(0);
    const current = floats.get(2);
    expect(voltage).toBeGreaterThanOrEqual(225);
    expect(voltage).toBeLessThanOrEqual(235);
    expect(current).toBeGreaterThanOrEqual(0);
    expect(current).toBeLessThanOrEqual(16);
    const temp = (await mbpoll(s.port, ['-t', '4', '-r', '0', '-c', '1'])).get(0);
    // int16 with scale 0.1: 20.0..45.0 degC is 200..450 on the wire.
    expect(temp).toBeGreaterThanOrEqual(200);
    expect(temp).toBeLessThanOrEqual(450);
    expect((await mbpoll(s.port, ['-t', '0', '-r', '0', '-c', '1'])).get(0)).toBe(1);
  });

  it('takes a register write from mbpoll and reads it back', async () => {
    const s = await SimModbusSlave.start({ points: profiles.energyMeter() });
    slave = s;
    await mbpoll(s.port, ['-t', '4', '-r', '20'], ['4321']);
    expect((await mbpoll(s.port, ['-t', '4', '-r', '20', '-c', '1'])).get(20)).toBe(4321);
  });
});
