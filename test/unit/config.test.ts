import { readFile } from 'node:fs/promises';
import { configProblems as problems } from '../helpers/fakes.js';
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../../runtime/config/load.js';

const minimal = `
gateway: { id: gw1 }
cloud: { url: "mqtt://127.0.0.1:1883" }
storage: { path: /tmp/x.db }
`;


describe('site config', () => {
  it('fills defaults for a minimal file', () => {
    const cfg = parseConfigText(minimal);
    expect(cfg.broker.port).toBe(1883);
    expect(cfg.cloud.topicPrefix).toBe('outpost');
    expect(cfg.storage.synchronous).toBe('normal');
    expect(cfg.devices).toEqual([]);
  });

  it('encodes the uplink in columns with brotli by default; JSON keeps zlib; a wrong choice is named', () => {
    const cloud = (extra: string): string => minimal.replace('cloud: { url: "mqtt://127.0.0.1:1883" }', `cloud: { url: "mqtt://127.0.0.1:1883"${extra} }`);
    expect(parseConfigText(minimal).cloud).toMatchObject({ encoding: 'columnar', compression: 'brotli' });
    expect(parseConfigText(cloud(', encoding: json')).cloud).toMatchObject({ encoding: 'json', compression: 'deflate' });
    expect(parseConfigText(cloud(', compression: deflate')).cloud).toMatchObject({ encoding: 'columnar', compression: 'deflate' });
    expect(parseConfigText(cloud(', encoding: json, compression: none')).cloud).toMatchObject({ encoding: 'json', compression: 'none' });
    const found = problems(cloud(', encoding: protobuf, compression: zstd'));
    expect(found.some((p) => p.startsWith('cloud.encoding: '))).toBe(true);
    expect(found.some((p) => p.startsWith('cloud.compression: '))).toBe(true);
  });

  it('accepts the shipped example', async () => {
    const text = await readFile(new URL('../../examples/site.yaml', import.meta.url), 'utf8');
    const cfg = parseConfigText(text);
    expect(cfg.devices.map((d) => [d.id, d.protocol])).toEqual([
      ['meter-1', 'modbus-tcp'],
      ['meter-2', 'modbus-rtu-tcp'],
      ['plc-1', 'modbus-rtu'],
      ['pump-3', 'mqtt'],
    ]);
    expect(cfg.rules.map((r) => r.id)).toEqual(['breaker-alarm', 'pump-raw', 'temperature-plausible', 'power-1min', 'current-p95', 'meter-hot', 'follow-speed', 'pump-panel']);
    expect(cfg.streams.map((s) => [s.name, s.priority])).toEqual([
      ['alarms', 0],
      ['twins', 1],
      ['telemetry', 5],
      ['bulk', 9],
    ]);
    expect(cfg.rules.find((r) => r.id === 'breaker-alarm')?.stream).toBe('alarms');
  });

  it('names every error by its path', () => {
    const found = problems(`
gateway: { id: gw1 }
devices:
  - { id: m1, protocol: modbus-tcp, host: h, points: [{ name: a, table: holding, address: 1 }] }
  - id: m2
    protocol: modbus-tcp
    host: h
    points:
      - { name: a, table: holding, address: 1 }
      - { name: b, table: holding, address: 2 }
      - { name: c, table: holding, address: 3 }
      - { name: d, table: holding, address: "4x" }
cloud: { url: "http://nope" }
storage: { path: /tmp/x.db, quotaBytes: 10 }
`);
    expect(found).toContain('devices[1].points[3].address: expected number, got "4x"');
    expect(found.some((p) => p.startsWith('cloud.url: '))).toBe(true);
    expect(found.some((p) => p.startsWith('storage.quotaBytes: '))).toBe(true);
    expect(found).toHaveLength(3);
  });

  it('refuses unknown fields, duplicate ids and bool points on registers', () => {
    const found = problems(`
gateway: { id: gw1, colour: blue }
devices:
  - { id: m1, protocol: modbus-tcp, host: h, points: [{ name: a, table: holding, address: 1, type: bool }] }
  - { id: m1, protocol: mqtt }
cloud: { url: "mqtt://h" }
storage: { path: /tmp/x.db }
`);
    expect(found).toContain('gateway: unknown field "colour"');
    expect(found).toContain('devices[0].points[0].bit: type bool in a register needs bit (0-15)');
  });

  it('reports duplicate device ids once the file is otherwise valid', () => {
    const found = problems(`${minimal}devices:\n  - { id: m1, protocol: mqtt }\n  - { id: m1, protocol: mqtt }\n`);
    expect(found).toEqual(['devices[1].id: duplicate device id "m1"']);
  });

  it('reports YAML syntax errors with a line', () => {
    const found = problems('gateway: { id: gw1\ncloud: [');
    expect(found[0]).toMatch(/^line \d+: /);
  });
  it('refuses a rule expression that does not compile, naming the rule field and the position', () => {
    const found = problems(`${minimal}
rules:
  - { id: a, type: filter, where: "value > > 3" }
  - { id: b, type: filter, set: { value: "$eval(value)" } }
  - { id: c, type: filter, where: "temperature > 3" }
  - { id: d, type: filter, match: { topic: "a/#/b" } }
  - { id: e, type: filter, where: "value > 3", deadband: { absolute: 1 }, rateLimit: { perMs: 1000 } }
`);
    expect(found).toEqual([
      'rules[0].where: The symbol ">" cannot be used as a unary operator (at character 9)',
      expect.stringMatching(/^rules\[1\]\.set\.value: unknown function \$eval; rule expressions may call \$abs/) as unknown,
      expect.stringMatching(/^rules\[2\]\.where: unknown field "temperature"; a reading has value, device, point, quality, ts, unit \(at character \d+\)$/) as unknown,
      'rules[3].match.topic: "#" may only be the last level',
    ]);
  });
});
