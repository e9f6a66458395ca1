import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../runtime/config/load.js';
import { twinTopics } from '../../runtime/contracts/index.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { gatewayApi, TEST_API_TOKENS, TEST_TOKENS } from '../helpers/api.js';
import { deviceCredentials, TEST_GROUP_SECRET } from '../helpers/broker-access.js';
import { CLI } from '../helpers/gateway-process.js';
import { waitFor } from '../helpers/wait.js';

const exec = promisify(execFile);
const cleanup: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The built CLI against the gateway (address, pinned certificate and token from the environment). */
async function outpost(env: NodeJS.ProcessEnv, ...args: string[]): Promise<Run> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [CLI, ...args], { timeout: 20_000, env: { ...process.env, ...env } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** The cells of a plain table's lines (columns are at least two spaces apart). */
function rows(table: string): string[][] {
  return table
    .trimEnd()
    .split('\n')
    .map((l) => l.split(/ {2,}/));
}

/** An MQTT child with a birth and a will; it answers every call unless `answer` is false. */
async function child(port: number, id: string, attributes: Record<string, string>, answer: boolean): Promise<MqttClient> {
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
    ...deviceCredentials(id),
    reconnectPeriod: 0,
    will: { topic: `outpost/v1/dev/${id}/status`, payload: Buffer.from('{"state":"offline"}'), qos: 1, retain: true },
  });
  cleanup.push(() => client.endAsync(true));
  client.on('message', (topic, payload) => {
    if (!answer || !topic.startsWith(`outpost/v1/dev/${id}/cmd/`)) return;
    const call = JSON.parse(payload.toString()) as { id: string; payload?: unknown };
    void client.publishAsync(twinTopics.response(id, call.id), JSON.stringify({ status: 200, payload: { echo: call.payload, method: topic.split('/').at(-1) } }), { qos: 1 });
  });
  await client.subscribeAsync(`outpost/v1/dev/${id}/cmd/#`, { qos: 1 });
  await client.publishAsync(`outpost/v1/dev/${id}/status`, JSON.stringify({ state: 'online', attributes }), { qos: 1, retain: true });
  return client;
}

describe('outpost devices, twin, call and configurations', () => {
  it('show the inventory, twins, explanations and configurations as tables and as the API answers; set desired state; call children; refuse in one line with exit 1 or 2', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-devices-cli-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const file = join(dir, 'site.yaml');
    writeFileSync(
      file,
      `
gateway: { id: cli-gw }
broker: { host: 127.0.0.1, port: 0, acceptUnknownDevices: true }
identities: { groups: [{ name: test, devices: '*', secret: ${TEST_GROUP_SECRET} }] }
http: { host: 127.0.0.1, port: 0, tokens: ${JSON.stringify(TEST_API_TOKENS)} }
devices:
  - { id: pump-1, protocol: mqtt, model: P-3.1, labels: { line: "2" } }
configurations:
  - { id: p31-speed, target: 'model = "P-3.1"', priority: 10, desired: { maxSpeed: 20, mode: auto } }
  - { id: line2, target: 'labels.line = "2"', priority: 5, desired: { maxSpeed: 15 } }
cloud: { url: "mqtt://127.0.0.1:9" }
storage: { path: ${JSON.stringify(join(dir, 'o.db'))} }
`,
      { mode: 0o600 },
    );
    const gateway = await Gateway.start(await loadConfig(file), { log: createLogger({ level: 'silent' }), configFile: file });
    cleanup.push(() => gateway.stop());
    const env = { OUTPOST_URL: `https://127.0.0.1:${gateway.ports.http}`, OUTPOST_CA: join(dir, 'http.crt'), OUTPOST_TOKEN: TEST_TOKENS.operate };
    const run = (...args: string[]): Promise<Run> => outpost(env, ...args);

    const pump1 = await child(gateway.ports.broker, 'pump-1', { firmware: '1.0.0' }, true);
    await child(gateway.ports.broker, 'pump-2', { model: 'P-3.1' }, false);
    const api = gatewayApi(gateway.ports.http, dir, TEST_TOKENS.read);
    await waitFor('both children online with their desired state', async () => {
      const { devices } = (await (await api.fetch(`${api.base}/api/v1/devices`)).json()) as { devices: Array<{ id: string; online: boolean; desiredVersion: number }> };
      return ['pump-1', 'pump-2'].every((id) => devices.some((d) => d.id === id && d.online && d.desiredVersion === 1));
    });

    // The inventory: a plain table (no borders, no colours), and the API's answer with --json.
    const [table, json] = await Promise.all([run('devices'), run('devices', 'list', '--json')]);
    expect(table.code).toBe(0);
    expect(table.stdout).not.toContain('\u001b['); // no colours: stdout is not a terminal
    const list = rows(table.stdout);
    expect(list[0]).toEqual(['ID', 'PROTOCOL', 'MODEL', 'ONLINE', 'LAST SEEN', 'DESIRED/APPLIED', 'CONFIGURATIONS']);
    expect(list.map((r) => r[0])).toEqual(['ID', 'cli-gw', 'pump-1', 'pump-2']);
    const p1 = list.find((r) => r[0] === 'pump-1')!;
    expect(p1.slice(0, 4)).toEqual(['pump-1', 'mqtt', 'P-3.1', 'yes']);
    expect(p1[4]).toMatch(/^\d+ s ago$/);
    expect(p1.slice(5)).toEqual(['v1/v0', 'p31-speed, line2']);
    expect(json.code).toBe(0);
    const devices = (JSON.parse(json.stdout) as { devices: Array<{ id: string; configurations: string[] }> }).devices;
    expect(devices.find((d) => d.id === 'pump-2')!.configurations).toEqual(['p31-speed']);

    // A direct edit (values JSON when they parse, else text), then explain shows it won.
    const set = await run('twin', 'set', 'pump-1', 'maxSpeed=12', 'mode=manual', 'alarm.high=80');
    expect(set.stderr).toBe('');
    expect(set.stdout).toBe('pump-1: desired version 2\n');
    await pump1.publishAsync(twinTopics.reported('pump-1'), JSON.stringify({ version: 2, reported: { maxSpeed: 12, mode: 'manual' } }), { qos: 1 });
    const [explained, explainedJson] = await Promise.all([run('devices', 'explain', 'pump-1'), run('devices', 'explain', 'pump-1', '--json')]);
    expect(explained.code).toBe(0);
    const props = rows(explained.stdout);
    expect(props[0]).toEqual(['PROPERTY', 'VALUE', 'SOURCE', 'OVERRIDES', 'REPORTED', 'IN SYNC']);
    expect(props.slice(1)).toEqual([
      ['alarm.high', '80', 'direct', '-', '-', 'no'],
      ['maxSpeed', '12', 'direct', 'configuration:p31-speed=20, configuration:line2=15', '12', 'yes'],
      ['mode', 'manual', 'direct', 'configuration:p31-speed=auto', 'manual', 'yes'],
    ]);
    const byPath = (JSON.parse(explainedJson.stdout) as { properties: Array<{ path: string; source: string; value: unknown }> }).properties;
    expect(byPath.find((p) => p.path === 'maxSpeed')).toMatchObject({ source: 'direct', value: 12 });

    // --patch, null removing the direct value: the configuration's value is back.
    const unset = await run('twin', 'set', 'pump-1', '--patch', '{"maxSpeed": null}', '--json');
    expect(unset.code).toBe(0);
    expect(JSON.parse(unset.stdout)).toEqual({ version: 3, desired: { alarm: { high: 80 }, maxSpeed: 20, mode: 'manual' } });

    // The twin: sections for people, the whole twin view with --json.
    const [twin, shown, shownJson] = await Promise.all([run('twin', 'get', 'pump-1'), run('devices', 'show', 'pump-1'), run('devices', 'show', 'pump-1', '--json')]);
    expect(twin.code).toBe(0);
    expect(twin.stdout).toBe(
      [
        'DESIRED (version 3, applied 2)',
        'PROPERTY    VALUE',
        'alarm.high  80',
        'maxSpeed    20',
        'mode        manual',
        '',
        'REPORTED',
        'PROPERTY  VALUE',
        'maxSpeed  12',
        'mode      manual',
        '',
        'REJECTED',
        '(none)',
        '',
      ].join('\n'),
    );
    expect(shown.code).toBe(0);
    const identity = Object.fromEntries(rows(shown.stdout.split('\n\n')[0]!).map((r): [string, string | undefined] => [r[0]!, r[1]]));
    expect(identity).toMatchObject({ ID: 'pump-1', PROTOCOL: 'mqtt', SOURCE: 'config', ONLINE: 'yes', ATTRIBUTES: 'firmware=1.0.0, model=P-3.1', LABELS: 'line=2', TAGS: '-', CONFIGURATIONS: 'p31-speed, line2' });
    expect(shown.stdout).toContain(twin.stdout);
    expect(JSON.parse(shownJson.stdout)).toMatchObject({ id: 'pump-1', desired: { version: 3 }, applied: { version: 2 }, reported: { maxSpeed: 12, mode: 'manual' } });

    // Calls: answered by the child; an unknown device and a silent one fail with exit 1, in one line.
    const [called, calledJson] = await Promise.all([run('call', 'pump-1', 'reboot', '--payload', '{"delayS": 1}'), run('call', 'pump-1', 'ping', '--json')]);
    expect(called.stderr).toBe('');
    expect(called.code).toBe(0);
    expect(called.stdout).toMatch(/^status 200 in \d+ ms\n/);
    expect(JSON.parse(called.stdout.slice(called.stdout.indexOf('\n') + 1))).toEqual({ echo: { delayS: 1 }, method: 'reboot' });
    expect(JSON.parse(calledJson.stdout)).toMatchObject({ status: 200, payload: { method: 'ping' } });
    const [unknown, silent] = await Promise.all([run('call', 'nope', 'reboot'), run('call', 'pump-2', 'ping', '--timeout-ms', '300')]);
    expect(unknown).toEqual({ code: 1, stdout: '', stderr: 'no device "nope" in the inventory (outpost devices lists them)\n' });
    expect(silent.code).toBe(1);
    expect(silent.stderr).toMatch(/^no answer from "pump-2" within 300 ms: [^\n]*--timeout-ms[^\n]*\n$/);

    // Configurations: the table says what the API says, counts right-aligned.
    const [confs, confsJson] = await Promise.all([run('configurations'), run('configurations', '--json')]);
    expect(confs.code).toBe(0);
    type Status = { id: string; origin: string; version: number; priority: number; target: string; targeted: number; applied: number; pending: number; failed: number };
    const statuses = (JSON.parse(confsJson.stdout) as { configurations: Status[] }).configurations;
    expect(statuses.find((c) => c.id === 'p31-speed')).toMatchObject({ origin: 'site', version: 1, priority: 10, targeted: 2, pending: 2 });
    expect(rows(confs.stdout)).toEqual([
      ['ID', 'ORIGIN', 'VERSION', 'PRIORITY', 'TARGETED', 'APPLIED', 'PENDING', 'FAILED', 'TARGET'],
      ...statuses.map((c) => [c.id, c.origin, ...[c.version, c.priority, c.targeted, c.applied, c.pending, c.failed].map(String), c.target]),
    ]);
    expect(statuses.map((c) => c.id)).toEqual(['p31-speed', 'line2']);

    // A usage error: exit 2, one line that says what to give (test/unit/devices-cli.test.ts has the others).
    const badPair = await run('twin', 'set', 'pump-1', 'maxSpeed');
    expect(badPair.code).toBe(2);
    expect(badPair.stderr).toMatch(/^"maxSpeed": expected PATH=VALUE, [^\n]*\n$/);
  }, 60_000);
});
