import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SerialPort } from 'serialport';
import { afterEach, describe, expect, it } from 'vitest';
import type { ModbusConnection } from '../../drivers/modbus/types.js';
import { SimModbusServer } from '../../sim/modbus-server.js';
import { BusUnderTest, device, reg } from '../helpers/modbus-bus.js';
import { sleep, waitFor } from '../helpers/wait.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** A pseudo-terminal pair made by socat (Debian package): a serial line without hardware. */
async function ptyPair(): Promise<{ gatewaySide: string; deviceSide: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'outpost-pty-'));
  const gatewaySide = join(dir, 'gw');
  const deviceSide = join(dir, 'dev');
  const socat: ChildProcess = spawn('socat', [`pty,raw,echo=0,link=${gatewaySide}`, `pty,raw,echo=0,link=${deviceSide}`], { stdio: 'ignore' });
  const failed = new Promise<never>((_, reject) =>
    socat.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(err.code === 'ENOENT' ? 'socat is not installed (Debian: apt-get install socat); this test needs it' : err.message)),
    ),
  );
  cleanup.push(async () => {
    socat.kill('SIGKILL');
    await sleep(50);
    rmSync(dir, { recursive: true, force: true });
  });
  await Promise.race([failed, waitFor('socat to create the pty pair', () => existsSync(gatewaySide) && existsSync(deviceSide), 5000, 20)]);
  return { gatewaySide, deviceSide };
}

describe('Modbus RTU over a serial line', () => {
  it('polls two unit ids on one line (19200 8E1), and a dead one costs the other at most its timeout', async () => {
    const { gatewaySide, deviceSide } = await ptyPair();
    const line = new SerialPort({ path: deviceSide, baudRate: 19200, parity: 'even', dataBits: 8, stopBits: 1 });
    await new Promise<void>((resolve, reject) => line.once('open', resolve).once('error', reject));
    cleanup.push(() => new Promise<void>((resolve) => (line.isOpen ? line.close(() => resolve()) : resolve())));
    const sim = new SimModbusServer('rtu');
    sim.attach(line);
    const meter = sim.unit(1);
    const plc = sim.unit(7);
    // float32 1234.5 with swapped words (CDAB), a PLC counter.
    const f = Buffer.alloc(4);
    f.writeFloatBE(1234.5);
    meter.input[0] = f.readUInt16BE(2);
    meter.input[1] = f.readUInt16BE(0);
    plc.holding[10] = 77;

    const conn: ModbusConnection = { kind: 'rtu', path: gatewaySide, baudRate: 19200, parity: 'even', dataBits: 8, stopBits: 1 };
    const b = await BusUnderTest.start(conn, [
      device('meter', conn, 1, [reg('energy', 0, { table: 'input', type: 'float32', order: 'CDAB', unit: 'kWh' })], { timeoutMs: 300 }),
      device('plc', conn, 7, [reg('count', 10)], { timeoutMs: 300 }),
    ]);
    cleanup.push(() => b.bus.stop());
    await waitFor('readings from both units', () => b.of('meter').length > 3 && b.of('plc').length > 3, 10_000);
    expect(b.of('meter')[0]).toMatchObject({ value: 1234.5, quality: 'good', unit: 'kWh' });
    expect(b.of('plc')[0]).toMatchObject({ value: 77, quality: 'good' });

    const from = Date.now();
    plc.fault = { mode: 'mute' };
    await sleep(2500);
    const times = b.of('meter').filter((r) => r.at >= from).map((r) => r.at);
    let gap = 0;
    for (let i = 1; i < times.length; i++) gap = Math.max(gap, times[i]! - times[i - 1]!);
    // 100 ms interval, plus the dead unit's 300 ms timeout and, on RTU, 300 ms of quiet line after
    // it (a late answer must not be taken for the next request), plus slack.
    expect(gap).toBeLessThan(100 + 600 + 200);
    expect(b.of('plc').filter((r) => r.at >= from && r.quality === 'stale')).toHaveLength(1);
    expect(['open', 'failing']).toContain(b.deviceStatus('plc').breaker);
    expect(b.deviceStatus('plc').lastError).toBe('no answer within the timeout');
  }, 30_000);
});
