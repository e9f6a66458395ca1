import ModbusSerial from 'modbus-serial';
import type { ModbusRTU as Client } from 'modbus-serial/ModbusRTU.js';
import { afterEach, describe, expect, it } from 'vitest';
import { profiles, SimModbusSlave, type SimPoint } from '../../sim/modbus-slave.js';

// modbus-serial is CommonJS: at run time the default import is the client class itself.
const ModbusRTU = ModbusSerial as unknown as new () => Client;

const slaves: SimModbusSlave[] = [];
const clients: Client[] = [];

/** Closes a client; modbus-serial never calls back for a connection that is already gone. */
async function closeClient(c: Client): Promise<void> {
  if (!c.isOpen) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 1000);
    c.close(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

afterEach(async () => {
  for (const c of clients.splice(0)) await closeClient(c);
  for (const s of slaves.splice(0)) await s.stop();
}, 10_000);

async function startSlave(points: readonly SimPoint[], now: () => number = () => 5_000): Promise<SimModbusSlave> {
  // A random source of 0.5 keeps random walks where they start.
  const s = await SimModbusSlave.start({ points, now, random: () => 0.5 });
  slaves.push(s);
  return s;
}

async function client(port: number, timeoutMs = 2000): Promise<Client> {
  const c = new ModbusRTU();
  clients.push(c);
  c.setTimeout(timeoutMs);
  await c.connectTCP('127.0.0.1', { port, timeout: timeoutMs });
  c.setID(1);
  return c;
}

const words = (...w: number[]): Buffer => {
  const b = Buffer.alloc(w.length * 2);
  w.forEach((x, i) => b.writeUInt16BE(x, i * 2));
  return b;
};
const float32 = (hi: number, lo: number): number => words(hi, lo).readFloatBE(0);
const int32 = (hi: number, lo: number): number => words(hi, lo).readInt32BE(0);
const uint32 = (hi: number, lo: number): number => words(hi, lo).readUInt32BE(0);
const int16 = (w: number): number => words(w).readInt16BE(0);

describe('simulated Modbus slave', { timeout: 10_000 }, () => {
  it('listens on a free port when asked for port 0', async () => {
    const s = await startSlave(profiles.energyMeter());
    expect(s.port).toBeGreaterThan(0);
    expect(s.port).not.toBe(502);
    expect(s.running).toBe(true);
  });

  it("serves the energy meter's signals, big-endian high word first, scaled as the profile declares", async () => {
    const s = await startSlave(profiles.energyMeter());
    const c = await client(s.port);
    const input = (await c.readInputRegisters(0, 8)).data;
    // At t = 5 s: voltage sine (period 20 s) at its peak 230 + 4; power sine (period 30 s) at 1400 + 400 sin(pi/3).
    expect(float32(input[0]!, input[1]!)).toBeCloseTo(234, 4);
    expect(float32(input[2]!, input[3]!)).toBeCloseTo(6, 4);
    expect(int32(input[4]!, input[5]!) * 0.1).toBeCloseTo(1400 + 400 * Math.sin(Math.PI / 3), 1);
    expect(uint32(input[6]!, input[7]!)).toBe(120_000);
    const holding = (await c.readHoldingRegisters(0, 1)).data;
    expect(int16(holding[0]!) * 0.1).toBeCloseTo(31, 6);
    expect((await c.readCoils(0, 1)).data[0]).toBe(true);
  });

  it('serves what valueOf() reports for every point of a profile', async () => {
    const s = await startSlave(profiles.boiler(), () => 8_000);
    const c = await client(s.port);
    const h = (await c.readHoldingRegisters(10, 4)).data;
    expect(h[0]! * 0.01).toBeCloseTo(s.valueOf('pressure') as number, 6);
    expect(int16(h[1]!) * 0.1).toBeCloseTo(s.valueOf('flow-temp') as number, 6);
    expect(uint32(h[2]!, h[3]!)).toBe(s.valueOf('starts'));
    // toggle with a 7 s period: second period at t = 8 s.
    expect((await c.readCoils(3, 1)).data[0]).toBe(true);
    expect(s.valueOf('burner-on')).toBe(true);
    expect(s.valueOf('no-such-point')).toBeUndefined();
  });

  it("encodes negative values in two's complement and serves discrete inputs", async () => {
    const s = await startSlave([
      { name: 'i16', table: 'holding', address: 100, type: 'int16', scale: 0.1, signal: { kind: 'constant', value: -12.5 } },
      { name: 'i32', table: 'holding', address: 101, type: 'int32', signal: { kind: 'constant', value: -70_000 } },
      { name: 'f32', table: 'input', address: 50, type: 'float32', signal: { kind: 'constant', value: -0.25 } },
      { name: 'd0', table: 'discrete', address: 7, type: 'bool', signal: { kind: 'constant', value: 1 } },
      { name: 'd1', table: 'discrete', address: 8, type: 'bool', signal: { kind: 'constant', value: 0 } },
    ]);
    const c = await client(s.port);
    const h = (await c.readHoldingRegisters(100, 3)).data;
    expect(h[0]).toBe(0xff83);
    expect(int16(h[0]!) * 0.1).toBeCloseTo(-12.5, 6);
    expect(int32(h[1]!, h[2]!)).toBe(-70_000);
    const f = (await c.readInputRegisters(50, 2)).data;
    expect(float32(f[0]!, f[1]!)).toBe(-0.25);
    expect((await c.readDiscreteInputs(7, 2)).data.slice(0, 2)).toEqual([true, false]);
    expect(s.valueOf('i16')).toBeCloseTo(-12.5, 6);
    expect(s.valueOf('i32')).toBe(-70_000);
  });

  it('keeps values steady for reads less than 50 ms apart and advances them after', async () => {
    let t = 1_000;
    const s = await startSlave([{ name: 'n', table: 'holding', address: 0, type: 'uint16', signal: { kind: 'counter', start: 10 } }], () => t);
    const c = await client(s.port);
    expect((await c.readHoldingRegisters(0, 1)).data[0]).toBe(10);
    t += 49;
    expect((await c.readHoldingRegisters(0, 1)).data[0]).toBe(10);
    t += 1;
    expect((await c.readHoldingRegisters(0, 1)).data[0]).toBe(11);
    expect(s.requests).toBe(3);
  });

  it('reads 0 from registers and coils that no point drives', async () => {
    const s = await startSlave(profiles.energyMeter());
    const c = await client(s.port);
    expect((await c.readHoldingRegisters(200, 3)).data).toEqual([0, 0, 0]);
    expect((await c.readCoils(40, 1)).data[0]).toBe(false);
  });

  it('goes off the network on stop() and comes back on the same port on start()', async () => {
    const s = await startSlave(profiles.energyMeter());
    const port = s.port;
    const before = await client(port);
    expect((await before.readCoils(0, 1)).data[0]).toBe(true);
    await s.stop();
    expect(s.running).toBe(false);
    await expect(client(port, 500)).rejects.toThrow(/ECONNREFUSED/);
    await s.start();
    expect(s.running).toBe(true);
    expect(s.port).toBe(port);
    const after = await client(port);
    expect((await after.readCoils(0, 1)).data[0]).toBe(true);
  });

  it('drops connected masters on stop()', async () => {
    const s = await startSlave(profiles.energyMeter());
    const c = await client(s.port, 500);
    await s.stop();
    for (let i = 0; i < 100 && c.isOpen; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(c.isOpen).toBe(false);
    await expect(c.readCoils(0, 1)).rejects.toThrow(/Port Not Open/);
  });

  it("never answers in mode 'mute', so the master times out; answers again in mode 'answer'", async () => {
    const s = await startSlave(profiles.energyMeter());
    const c = await client(s.port, 300);
    s.mode = 'mute';
    const started = Date.now();
    await expect(c.readInputRegisters(0, 2)).rejects.toThrow(/Timed out/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    // Received, never answered.
    expect(s.requests).toBe(1);
    s.mode = 'answer';
    const again = await client(s.port, 2000);
    const voltage = (await again.readInputRegisters(0, 2)).data;
    expect(float32(voltage[0]!, voltage[1]!)).toBeCloseTo(234, 4);
    expect(s.requests).toBe(2);
  });

  it('serves the three-phase meter as float32 with swapped words (CDAB)', async () => {
    const s = await startSlave(profiles.threePhaseMeter());
    const c = await client(s.port);
    const w = (await c.readInputRegisters(0, 2)).data;
    // At t = 5 s, L1 voltage sine (period 20 s) at its peak 230 + 3; low word first on the wire.
    expect(float32(w[1]!, w[0]!)).toBeCloseTo(233, 4);
    expect(s.valueOf('voltage-l1')).toBeCloseTo(233, 4);
  });

  it('keeps what a master wrote to a writable PLC point', async () => {
    const s = await startSlave(profiles.plc());
    const c = await client(s.port);
    await c.writeRegister(100, 480);
    await c.writeCoil(0, false);
    expect(s.valueOf('speed-setpoint')).toBeCloseTo(48, 6);
    expect((await c.readHoldingRegisters(100, 1)).data[0]).toBe(480);
    expect((await c.readCoils(0, 1)).data[0]).toBe(false);
  });
});
