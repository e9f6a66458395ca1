import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../runtime/config/load.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { profiles, SimModbusSlave } from '../../sim/modbus-slave.js';
import { pointEntries } from '../../sim/site.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { deviceCredentials, TEST_GROUP_SECRET } from '../helpers/broker-access.js';
import { gatewayApi, json, TEST_API_TOKENS, TEST_TOKENS } from '../helpers/api.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function siteYaml(port: number, dir: string, rules: string, streams = '[{ name: telemetry }]'): string {
  return `
gateway: { id: reload-gw }
broker: { host: 127.0.0.1, port: 0, grants: [{ identities: [watcher], subscribe: ['#'] }] }
identities: { groups: [{ name: test, secret: ${TEST_GROUP_SECRET} }] }
http: { host: 127.0.0.1, port: 0, tokens: ${JSON.stringify(TEST_API_TOKENS)} }
devices:
  - id: meter-1
    protocol: modbus-tcp
    host: 127.0.0.1
    port: ${port}
    pollIntervalMs: 50
    points: ${JSON.stringify(pointEntries(profiles.energyMeter()))}
streams: ${streams}
cloud: { url: "mqtt://127.0.0.1:9" }
storage: { path: ${JSON.stringify(join(dir, 'o.db'))} }
rules:
${rules}
`;
}

async function total(gateway: Gateway, name: string): Promise<number> {
  return gateway.metrics.total(name);
}

describe('rules hot reload', () => {
  it('switches rules without a restart and without dropping a reading; refuses a bad file and keeps the running rules', async () => {
    const meter = await SimModbusSlave.start({ points: profiles.energyMeter() });
    cleanup.push(() => meter.stop());
    const dir = mkdtempSync(join(tmpdir(), 'outpost-reload-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const file = join(dir, 'site.yaml');
    const ruleA = `  - { id: a, type: filter, route: mqtt, mqtt: { topic: "a/{device}/{point}" } }`;
    const ruleB = `  - { id: b, type: filter, where: 'point = "temperature"', route: mqtt, mqtt: { topic: "b/{device}/{point}" } }`;
    writeFileSync(file, siteYaml(meter.port, dir, ruleA), { mode: 0o600 });
    const gateway = await Gateway.start(await loadConfig(file), { log: createLogger({ level: 'silent' }), configFile: file });
    cleanup.push(() => gateway.stop());
    const client = gatewayApi(gateway.ports.http, dir, TEST_TOKENS.operate);
    const reload = (): Promise<Response> => client.fetch(`${client.base}/api/v1/rules/reload`, json({}));
    const local = await mqtt.connectAsync(`mqtt://127.0.0.1:${gateway.ports.broker}`, { ...deviceCredentials('watcher'), reconnectPeriod: 0 });
    cleanup.push(() => local.endAsync(true));
    const topics: string[] = [];
    local.on('message', (topic) => topics.push(topic));
    await local.subscribeAsync('#');
    await waitFor('rule a publishing', () => topics.some((t) => t.startsWith('a/')));

    writeFileSync(file, siteYaml(meter.port, dir, ruleB));
    const res = await reload();
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ rules: 1, applied: ['b'], kept: [], removed: ['a'] });
    const switchedAt = topics.length;
    await waitFor('rule b publishing', () => topics.slice(switchedAt).some((t) => t.startsWith('b/')));
    await sleep(300);
    // Rule a's last publications may still be on their way when the reload answers (more of them on a
    // loaded machine); from rule b's first publication on, only rule b publishes.
    const firstB = topics.findIndex((t, i) => i >= switchedAt && t.startsWith('b/'));
    const after = topics.slice(firstB);
    expect(after.length).toBeGreaterThan(1);
    expect(after.every((t) => t === 'b/meter-1/temperature')).toBe(true);

    // An invalid file: refused with its problems, rule b keeps running.
    writeFileSync(file, siteYaml(meter.port, dir, `  - { id: c, type: filter, where: "value > > 1" }`));
    const bad = await reload();
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { problems: string[] }).problems).toEqual(['rules[0].where: The symbol ">" cannot be used as a unary operator (at character 9)']);
    // Streams changed: not applied while running.
    writeFileSync(file, siteYaml(meter.port, dir, ruleA, '[{ name: telemetry }, { name: other }]'));
    const refused = await reload();
    expect(refused.status).toBe(409);
    expect(((await refused.json()) as { error: string }).error).toMatch(/streams changed: restart/);
    const mark = topics.length;
    await sleep(300);
    expect(topics.slice(mark).length).toBeGreaterThan(0);
    expect(topics.slice(mark).every((t) => t === 'b/meter-1/temperature')).toBe(true);
    expect(gateway.config.rules.map((r) => r.id)).toEqual(['b']);

    // Nothing dropped across the reloads: every reading the driver reported was taken by ingest.
    await gateway.stop();
    expect(await total(gateway, 'outpost_readings_total')).toBe(await total(gateway, 'outpost_modbus_readings_total'));
  });

  it('keeps the open windows of rules that did not change', async () => {
    const meter = await SimModbusSlave.start({ points: profiles.energyMeter() });
    cleanup.push(() => meter.stop());
    const dir = mkdtempSync(join(tmpdir(), 'outpost-reload-'));
    cleanup.push(() => Promise.resolve(rmSync(dir, { recursive: true, force: true })));
    const file = join(dir, 'site.yaml');
    const win = `  - { id: w, type: window, kind: count, count: 40000, match: { point: power }, aggregates: [count] }`;
    writeFileSync(file, siteYaml(meter.port, dir, win), { mode: 0o600 });
    const gateway = await Gateway.start(await loadConfig(file), { log: createLogger({ level: 'silent' }), configFile: file });
    cleanup.push(() => gateway.stop());
    await sleep(500);
    writeFileSync(file, siteYaml(meter.port, dir, `${win}\n  - { id: x, type: filter, match: { point: energy } }`));
    const client = gatewayApi(gateway.ports.http, dir, TEST_TOKENS.operate);
    const res = await client.fetch(`${client.base}/api/v1/rules/reload`, json({}));
    expect(await res.json()).toEqual({ rules: 2, applied: ['x'], kept: ['w'], removed: [] });
    await sleep(300);
    await gateway.stop();
    // The count window w has seen every power reading since the start, across the reload.
    const db = (await import('better-sqlite3')).default(join(dir, 'o.db'), { readonly: true });
    const row = db.prepare("SELECT state FROM rule_state WHERE key LIKE 'w%'").get() as { state: string };
    db.close();
    const open = (JSON.parse(row.state) as { open: Array<{ n: number }> }).open[0]!;
    const polls = await total(gateway, 'outpost_modbus_readings_total');
    // Six points per poll, the meter's power is one of them (reported every poll: it moves).
    expect(open.n).toBeGreaterThan(10);
    expect(open.n).toBeCloseTo(polls / 6, -1);
  });
});
