import { execFile, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, GatewayProcess } from '../helpers/gateway-process.js';
import { waitFor } from '../helpers/wait.js';
import { gatewayApi, TEST_API_TOKENS, TEST_TOKENS } from '../helpers/api.js';

const exec = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'outpost-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function outpost(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return outpostWith({}, ...args);
}

async function outpostWith(env: NodeJS.ProcessEnv, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [CLI, ...args], { timeout: 20_000, env: { ...process.env, OUTPOST_TOKEN: TEST_TOKENS.read, ...env } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

const invalid = `gateway: { id: gw }
devices:
  - { id: m1, protocol: modbus-tcp, host: 127.0.0.1, points: [{ name: a, table: holding, address: 1 }] }
  - id: m2
    protocol: modbus-tcp
    host: 127.0.0.1
    points:
      - { name: a, table: holding, address: 1 }
      - { name: b, table: holding, address: 2 }
      - { name: c, table: holding, address: 3 }
      - { name: d, table: holding, address: "4x" }
      - { name: e, table: coil, address: 2.5, type: bool }
cloud: { url: "http://cloud.example.com" }
storage: {}
`;

describe('outpost CLI', () => {
  it('validate names every error by its path and exits 1', async () => {
    const file = join(dir, 'invalid.yaml');
    writeFileSync(file, invalid);
    const r = await outpost('validate', file);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('devices[1].points[3].address: expected number, got "4x"');
    expect(r.stderr).toContain('devices[1].points[4].address: expected integer, got 2.5');
    expect(r.stderr).toContain('cloud.url: expected an mqtt://');
    expect(r.stderr).toContain('storage.path: expected string, got nothing');
  });

  it('validate names the line of a YAML syntax error', async () => {
    const file = join(dir, 'broken.yaml');
    writeFileSync(file, 'gateway:\n  id: gw\n devices: [\n');
    const r = await outpost('validate', file);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/line \d+/);
  });

  it('validate accepts the documented example config (owner-only, as a config holding secrets must be)', async () => {
    const file = join(dir, 'example.yaml');
    copyFileSync('examples/site.yaml', file);
    chmodSync(file, 0o600);
    const r = await outpost('validate', file);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('valid');
  });

  it('start refuses an invalid config with the same errors', async () => {
    const file = join(dir, 'invalid2.yaml');
    writeFileSync(file, invalid);
    const r = await outpost('start', '--config', file);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('devices[1].points[3].address: expected number, got "4x"');
  });

  it('start runs until SIGTERM, then stops gracefully with exit code 0', async () => {
    const file = join(dir, 'ok.yaml');
    writeFileSync(
      file,
      `gateway: { id: gw }\nbroker: { port: 0 }\nhttp: { port: 0, tokens: ${JSON.stringify(TEST_API_TOKENS)} }\ncloud: { url: "mqtt://127.0.0.1:9" }\nstorage: { path: ${JSON.stringify(join(dir, 'gw.db'))} }\n`,
    );
    const gw = await GatewayProcess.start(file);
    // A failed assertion must not leave the gateway process running.
    let stopped = false;
    try {
      const api = gatewayApi(gw.httpPort, dir, TEST_TOKENS.read);
      const res = await api.fetch(`${api.base}/api/v1/status`);
      expect(res.status).toBe(200);
      expect(((await res.json()) as { gateway: string }).gateway).toBe('gw');
      // The certificate pinned from the state directory that --config names; the token from the environment.
      const status = await outpost('status', '--config', file, '--url', api.base, '--json');
      expect(status.code).toBe(0);
      expect(status.stdout).toContain('"gateway": "gw"');
      // People get the status as text: the gateway, the link, and a table of the outbox's streams.
      const shown = await outpost('status', '--config', file, '--url', api.base);
      expect(shown.code).toBe(0);
      expect(shown.stdout).toMatch(/^gateway {3}gw, up \d+ s, boot \d+$/m);
      expect(shown.stdout).toMatch(/^link {6}\w+/m);
      expect(shown.stdout).toMatch(/^STREAM +PRIORITY +DEPTH +BYTES +PRODUCED +DELIVERED +EXPIRED +DROPPED +DEAD-LETTERED$/m);
      expect(shown.stdout).toMatch(/^telemetry +5 +\d+/m);
      const outbox = await outpost('outbox', '--config', file, '--url', api.base, '--json');
      expect((JSON.parse(outbox.stdout) as { streams: Array<{ stream: string }> }).streams.map((s) => s.stream)).toContain('telemetry');
      expect((await outpost('status', 'extra', '--config', file, '--url', api.base)).code).toBe(2);
      // The health check the systemd timer runs: no token needed; a gateway that does not answer is 1.
      const healthy = await outpostWith({ OUTPOST_TOKEN: '' }, 'healthcheck', '--config', file, '--url', api.base);
      expect([healthy.code, healthy.stdout.trim()]).toEqual([0, `ok: ${api.base}`]);
      const dead = await outpost('healthcheck', '--config', file, '--url', 'https://127.0.0.1:9', '--timeout-ms', '500');
      expect(dead.code).toBe(1);
      expect(dead.stderr).toMatch(/^unhealthy: no answer from https:\/\/127\.0\.0\.1:9\/healthz/);
      // The same from the environment alone: OUTPOST_URL gives the address (the config asked for
      // port 0), OUTPOST_CONFIG the certificate to pin.
      const fromEnv = await outpostWith({ OUTPOST_CONFIG: file, OUTPOST_URL: api.base }, 'status', '--json');
      expect(fromEnv.stderr).toBe('');
      expect(fromEnv.code).toBe(0);
      expect(fromEnv.stdout).toContain('"gateway": "gw"');
      stopped = true;
      expect(await gw.terminate()).toBe(0);
    } finally {
      if (!stopped) await gw.kill9();
    }
  });

  it('hash-password makes the editor\'s bcrypt hash from any directory, the password on stdin', async () => {
    const r = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      const child = spawn(process.execPath, [CLI, 'hash-password'], { cwd: tmpdir() });
      let stdout = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.on('close', (code) => resolve({ code, stdout }));
      child.stdin.end('correct horse battery\n');
    });
    expect(r.code).toBe(0);
    const hash = r.stdout.trim();
    expect(hash).toMatch(/^\$2[aby]\$10\$[./A-Za-z0-9]{53}$/);
    const bcrypt = (await import('bcryptjs')).default;
    expect(bcrypt.compareSync('correct horse battery', hash)).toBe(true);
  });

  it('an unknown option gets one line naming it and where the usage is, exit 2, never a stack', async () => {
    for (const args of [['status', '--bogus'], ['identity', 'list', '--nope'], ['start', '--config', 'x.yaml', '--extra']]) {
      const r = await outpost(...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n')[0], args.join(' ')).toMatch(/Unknown option '--(bogus|nope|extra)'/);
      expect(r.stderr, args.join(' ')).not.toMatch(/\n\s+at /);
    }
  });
});

describe('outpost demo', () => {
  it('runs gateway + simulated site + simulated cloud with a link outage and reports lost 0', async () => {
    const r = await outpost('demo', '--duration', '8', '--json', '--outage-every', '3', '--outage-for', '2');
    expect(r.stderr).toBe('');
    const summary = JSON.parse(r.stdout.trim()) as Record<string, number>;
    expect(summary.outages).toBeGreaterThanOrEqual(2);
    expect(summary.produced).toBeGreaterThan(200);
    expect(summary.lost).toBe(0);
    expect(summary.delivered).toBe(summary.produced);
    expect(r.code).toBe(0);
  });
  it('explains what it runs and each figure, keeps its log, and ends with what to try next', async () => {
    const r = await outpost('demo', '--duration', '5', '--valves', '2');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Site: .*meter-1.*pump-1/m);
    expect(r.stdout).toMatch(/^Rules: pumps-raw \(every pump reading/m);
    expect(r.stdout).toMatch(/^Each line: in = readings the gateway took/m);
    expect(r.stdout).toMatch(/^OTA: a signed release/m);
    expect(r.stdout).toMatch(/^Next: copy examples\/site.yaml/m);
    const log = /\(log: (\S+)\)/.exec(r.stdout)?.[1];
    expect(log && existsSync(log)).toBe(true);
    rmSync(join(log!, '..'), { recursive: true, force: true });
  });

  it('rules test replays recorded readings through the rules and prints what they emit', async () => {
    const rules = join(dir, 'rules.yaml');
    writeFileSync(
      rules,
      `rules:
  - { id: hot, type: filter, where: "value > 30", stream: alarms }
  - { id: avg, type: window, windowMs: 1000, aggregates: [avg, count] }
`,
    );
    const input = join(dir, 'readings.jsonl');
    writeFileSync(
      input,
      [
        { device: 'm1', point: 't', value: 20, ts: 1000 },
        { device: 'm1', point: 't', value: 40, ts: 1500 },
        'not json',
        { device: 'm1', point: 't', value: 'x', ts: 1600 },
        { device: 'm1', point: 't', value: 50, ts: 2100 },
      ]
        .map((l) => (typeof l === 'string' ? l : JSON.stringify(l)))
        .join('\n'),
    );
    const r = await outpost('rules', 'test', rules, '--input', input);
    expect(r.code).toBe(1);
    const out = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { route: string; stream: string; reading: { point: string; value: unknown; ts: number } });
    expect(out.map((o) => [o.stream, o.reading.point, o.reading.value, o.reading.ts])).toEqual([
      ['alarms', 't', 40, 1500],
      ['telemetry', 't.avg', 30, 2000],
      ['telemetry', 't.count', 2, 2000],
      ['alarms', 't', 50, 2100],
      ['telemetry', 't.avg', 50, 3000],
      ['telemetry', 't.count', 1, 3000],
    ]);
    expect(r.stderr).toMatch(/line 3: Unexpected token/);
    expect(r.stderr).toMatch(/4 readings in, 6 out, 1 lines refused/);
    expect(r.stderr).toMatch(/rule hot: 1 readings dropped by expression errors; last: where: both sides of ">" must be of the same type, not "x" and 30/);
    const bad = join(dir, 'bad-rules.yaml');
    writeFileSync(bad, 'rules:\n  - { id: x, type: filter, where: "value >" }\n');
    const refused = await outpost('rules', 'test', bad, '--input', input);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/rules\[0\]\.where: .*character/);
  });
});

describe('outpost sim', () => {
  it('starts simulated Modbus devices and authenticated MQTT children on chosen ports and prints their device entries; a gateway reads them', async () => {
    const { spawn: spawnChild } = await import('node:child_process');
    const { parse } = await import('yaml');
    const secretFile = join(dir, 'group.key');
    writeFileSync(secretFile, 'outpost-sim-test-group-secret-0001\n', { mode: 0o600 });
    // First the gateway's broker (a port of its own), then the simulator pointed at it.
    const sim = spawnChild(process.execPath, [CLI, 'sim', '--modbus', 'meter', '--modbus', 'plc@0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    sim.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await waitFor('the device entries', () => out.includes('plc-1'), 15_000);
      const entries = parse(out) as Array<{ id: string; protocol: string; port: number }>;
      expect(entries.map((e) => [e.id, e.protocol])).toEqual([
        ['meter-1', 'modbus-tcp'],
        ['plc-1', 'modbus-tcp'],
      ]);
      const file = join(dir, 'sim-site.yaml');
      writeFileSync(
        file,
        `gateway: { id: sim-gw }\nbroker: { port: 0 }\nhttp: { port: 0, tokens: ${JSON.stringify(TEST_API_TOKENS)} }\nidentities: { groups: [{ name: pumps, secretFile: ${JSON.stringify(secretFile)} }] }\ndevices: ${JSON.stringify(entries)}\ncloud: { url: "mqtt://127.0.0.1:9" }\nstorage: { path: ${JSON.stringify(join(dir, 'sim.db'))} }\n`,
        { mode: 0o600 },
      );
      const validate = await outpost('validate', file);
      expect(validate.code).toBe(0);
      const gw = await GatewayProcess.start(file);
      try {
        const api = gatewayApi(gw.httpPort, dir, TEST_TOKENS.read);
        await waitFor('readings from both simulated devices', async () => {
          const s = (await (await api.fetch(`${api.base}/api/v1/status`)).json()) as { readingsIn?: number; drivers?: Array<{ name: string; devices?: Array<{ state?: string }> }> };
          return (s.readingsIn ?? 0) > 10;
        }, 15_000);
        // Children that authenticate with the group's keys.
        const kids = spawnChild(process.execPath, [CLI, 'sim', '--children', '2', '--broker', gw.brokerUrl, '--group-secret-file', secretFile, '--interval-ms', '100'], { stdio: 'ignore' });
        try {
          await waitFor('two children connected', async () => {
            const s = (await (await api.fetch(`${api.base}/api/v1/status`)).json()) as { children?: { connected: number } };
            return s.children?.connected === 2;
          }, 15_000);
        } finally {
          kids.kill('SIGTERM');
        }
      } finally {
        await gw.terminate();
      }
    } finally {
      sim.kill('SIGTERM');
    }
  }, 60_000);
});
