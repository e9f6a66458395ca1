import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../runtime/config/load.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { profiles, SimModbusSlave } from '../../sim/modbus-slave.js';
import { pointEntries } from '../../sim/site.js';
import { gatewayApi, json, TEST_API_TOKENS, TEST_TOKENS, type GatewayApi } from '../helpers/api.js';

const run = promisify(execFile);
const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function plcAndGateway(): Promise<{ plc: SimModbusSlave; api: GatewayApi; dir: string }> {
  const plc = await SimModbusSlave.start({ points: profiles.plc() });
  cleanup.push(() => plc.stop());
  const dir = mkdtempSync(join(tmpdir(), 'outpost-write-'));
  cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
  const config = parseConfig({
    gateway: { id: 'write-gw' },
    broker: { host: '127.0.0.1', port: 0 },
    http: { host: '127.0.0.1', port: 0, tokens: TEST_API_TOKENS },
    devices: [
      {
        id: 'plc-1',
        protocol: 'modbus-tcp',
        host: plc.host,
        port: plc.port,
        timeoutMs: 300,
        points: [...pointEntries(plc.points), { name: 'counter', table: 'input', address: 0, type: 'uint16' }],
      },
    ],
    cloud: { url: 'mqtt://127.0.0.1:9' },
    storage: { path: join(dir, 'o.db') },
  });
  const gateway = await Gateway.start(config, { log: createLogger({ level: 'silent' }) });
  cleanup.push(() => gateway.stop());
  return { plc, api: gatewayApi(gateway.ports.http, dir, TEST_TOKENS.operate), dir };
}

async function write(api: GatewayApi, device: string, point: string, value: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await api.fetch(`${api.base}/api/v1/devices/${device}/points/${point}/write`, json({ value }));
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

function expectRefused(r: { status: number; body: Record<string, unknown> }, status: number, error: RegExp): void {
  expect(r.status).toBe(status);
  expect(String(r.body.error)).toMatch(error);
}

describe('Modbus writes through the local API and the CLI', () => {
  it('writes a scaled holding register and a coil, verified by reading back', async () => {
    const { plc, api } = await plcAndGateway();
    expect(await write(api, 'plc-1', 'speed-setpoint', 48.5)).toEqual({
      status: 200,
      body: { device: 'plc-1', point: 'speed-setpoint', value: 48.5, readBack: 48.5 },
    });
    expect(plc.valueOf('speed-setpoint')).toBeCloseTo(48.5, 6);
    expect(plc.unit.holding[100]).toBe(485);
    expect((await write(api, 'plc-1', 'run', false)).body.readBack).toBe(false);
    expect(plc.unit.coils[0]).toBe(0);
  });

  it('refuses what must not be written, naming why, and reports a device that does not answer', async () => {
    const { plc, api } = await plcAndGateway();
    expectRefused(await write(api, 'plc-1', 'speed', 40), 400, /not writable/);
    expectRefused(await write(api, 'plc-1', 'nope', 1), 404, /no point "nope"/);
    expect(await write(api, 'plc-9', 'run', true)).toMatchObject({ status: 404 });
    expectRefused(await write(api, 'plc-1', 'speed-setpoint', 7000), 400, /out of range for uint16/);
    expectRefused(await write(api, 'plc-1', 'speed-setpoint', 'fast'), 400, /expects a finite number/);
    expectRefused(await write(api, 'plc-1', 'speed-setpoint', { a: 1 }), 400, /^value:/);
    plc.mode = 'mute';
    expectRefused(await write(api, 'plc-1', 'speed-setpoint', 41), 502, /no answer within the timeout/);
    plc.fault = { mode: 'exception', exceptionCode: 4 };
    expectRefused(await write(api, 'plc-1', 'speed-setpoint', 41), 502, /exception 4 \(server device failure\)/);
  });

  it('`outpost write` sends the value and prints the verified result', async () => {
    const { plc, api, dir } = await plcAndGateway();
    // As an operator runs it: the token in the environment, the gateway's certificate pinned.
    const conn = ['--url', api.base, '--ca', join(dir, 'http.crt')];
    const env = { ...process.env, OUTPOST_TOKEN: TEST_TOKENS.operate };
    const { stdout } = await run(process.execPath, ['dist/runtime/cli.js', 'write', 'plc-1', 'speed-setpoint', '42.5', ...conn], { timeout: 20_000, env });
    expect(JSON.parse(stdout)).toMatchObject({ readBack: 42.5 });
    expect(plc.unit.holding[100]).toBe(425);
    const bad = await run(process.execPath, ['dist/runtime/cli.js', 'write', 'plc-1', 'speed', '1', ...conn], { env }).catch((e: { code: number; stderr: string }) => e);
    expect('code' in bad && bad.code).toBe(1);
    expect(bad.stderr).toMatch(/write refused \(HTTP 400\): .*not writable/);
  });
});
