import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configProblems as problemsOf } from '../helpers/fakes.js';
import { describe, expect, it } from 'vitest';
import { ConfigError, formatIssues, formatPath, loadConfig, parseConfigText } from '../../runtime/config/load.js';
import { configSchema } from '../../runtime/config/schema.js';

const base = {
  gateway: { id: 'gw1' },
  cloud: { url: 'mqtt://127.0.0.1:1883' },
  storage: { path: '/tmp/x.db' },
};

/** The problems formatIssues reports for `raw` against the site config schema. */
function issuesOf(raw: unknown): string[] {
  const r = configSchema.safeParse(raw);
  if (r.success) return [];
  return formatIssues(raw, r.error.issues);
}


const modbus = (points: unknown[]): Record<string, unknown> => ({ id: 'm1', protocol: 'modbus-tcp', host: 'h', points });

describe('formatPath', () => {
  it('writes keys with dots and indices in brackets', () => {
    expect(formatPath(['devices', 1, 'points', 3, 'address'])).toBe('devices[1].points[3].address');
    expect(formatPath(['cloud', 'backoff', 'maxMs'])).toBe('cloud.backoff.maxMs');
    expect(formatPath([2, 'x'])).toBe('[2].x');
  });

  it('names the root when the path is empty', () => {
    expect(formatPath([])).toBe('(root)');
  });
});

describe('formatIssues', () => {
  it('names a nested field, the type expected and the value found', () => {
    const points = [
      { name: 'a', table: 'holding', address: 1 },
      { name: 'b', table: 'holding', address: 2 },
      { name: 'c', table: 'holding', address: 3 },
      { name: 'd', table: 'holding', address: '4x' },
    ];
    const raw = { ...base, devices: [modbus(points.slice(0, 1)), { ...modbus(points), id: 'm2' }] };
    expect(issuesOf(raw)).toEqual(['devices[1].points[3].address: expected number, got "4x"']);
  });

  it('describes what was found when it is not a string', () => {
    expect(issuesOf({ ...base, gateway: { id: 7 } })).toEqual(['gateway.id: expected string, got 7']);
    expect(issuesOf({ ...base, gateway: { id: null } })).toEqual(['gateway.id: expected string, got null']);
    expect(issuesOf({ ...base, gateway: { id: ['a'] } })).toEqual(['gateway.id: expected string, got an array']);
    expect(issuesOf({ ...base, gateway: 'gw1' })).toEqual(['gateway: expected object, got "gw1"']);
    expect(issuesOf({ ...base, storage: { path: true } })).toEqual(['storage.path: expected string, got true']);
  });

  it('says "integer" where a whole number is required and a fraction was given', () => {
    expect(issuesOf({ ...base, devices: [modbus([{ name: 'a', table: 'holding', address: 1.5 }])] })).toEqual([
      'devices[0].points[0].address: expected integer, got 1.5',
    ]);
  });

  it('says "nothing" for a required field that is missing', () => {
    expect(issuesOf({ gateway: { id: 'gw1' }, cloud: base.cloud })).toEqual(['storage: expected object, got nothing']);
  });

  it('names an unknown key where it was found, however deep', () => {
    expect(issuesOf({ ...base, devices: [modbus([{ name: 'a', table: 'holding', address: 1, adress: 2 }])] })).toEqual([
      'devices[0].points[0]: unknown field "adress"',
    ]);
    expect(issuesOf({ ...base, cloud: { ...base.cloud, backoff: { initialMs: 10, maximumMs: 20 } } })).toEqual([
      'cloud.backoff: unknown field "maximumMs"',
    ]);
  });

  it('lists several unknown keys of one object in one problem', () => {
    expect(issuesOf({ ...base, colour: 'blue', size: 3 })).toEqual(['(root): unknown fields "colour", "size"']);
  });

  it("passes the schema's own message through for other problems", () => {
    expect(issuesOf({ ...base, devices: [modbus([{ name: 'has space', table: 'holding', address: 1 }])] })).toEqual([
      'devices[0].points[0].name: only letters, digits, "_", "." and "-" are allowed',
    ]);
  });

  it('reports every problem, each with its own path', () => {
    const found = issuesOf({
      ...base,
      gateway: { id: 'g w' },
      devices: [modbus([{ name: 'a', table: 'holding', address: 70000 }, { name: 'b', table: 'wrong', address: 1 }])],
    });
    expect(found).toHaveLength(3);
    expect(found.map((p) => p.slice(0, p.indexOf(':')))).toEqual(['gateway.id', 'devices[0].points[0].address', 'devices[0].points[1].table']);
  });
});

describe('parseConfigText', () => {
  it('names the line of a YAML syntax error', () => {
    const nested = problemsOf(['gateway:', '  id: gw1', 'cloud:', '  url: mqtt: //h', 'storage: { path: /tmp/x.db }'].join('\n'));
    expect(nested).toHaveLength(1);
    expect(nested[0]).toMatch(/^line 4: Nested mappings are not allowed/);
    const indented = problemsOf(['gateway: { id: gw1 }', 'cloud: { url: "mqtt://h" }', 'storage:', '  path: /tmp/x.db', ' synchronous: full'].join('\n'));
    expect(indented).toHaveLength(1);
    expect(indented[0]).toMatch(/^line 5: /);
  });

  it('names the line of a duplicate key', () => {
    const found = problemsOf(['gateway: { id: gw1 }', 'cloud: { url: "mqtt://h" }', 'storage: { path: /tmp/x.db }', 'gateway: { id: gw2 }'].join('\n'));
    expect(found).toHaveLength(1);
    expect(found[0]).toMatch(/^line 4: .*unique/i);
  });

  it('puts the file name and every problem in the error message', () => {
    let error: unknown;
    try {
      parseConfigText('gateway: { id: gw1 }\n', 'site.yaml');
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const e = error as ConfigError;
    expect(e.name).toBe('ConfigError');
    expect(e.file).toBe('site.yaml');
    expect(e.problems).toEqual(['cloud: expected object, got nothing', 'storage: expected object, got nothing']);
    expect(e.message).toBe('site.yaml: invalid config\n  cloud: expected object, got nothing\n  storage: expected object, got nothing');
  });

  it('refuses an empty document as a whole', () => {
    expect(problemsOf('')).toEqual(['(root): expected object, got null']);
  });
});

describe('loadConfig', () => {
  it('reads and validates a file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-config-'));
    try {
      const file = join(dir, 'site.yaml');
      writeFileSync(file, 'gateway: { id: gw9 }\ncloud: { url: "mqtt://h" }\nstorage: { path: /tmp/x.db }\n');
      expect((await loadConfig(file)).gateway.id).toBe('gw9');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('names the file it cannot read', async () => {
    const file = join(tmpdir(), 'outpost-no-such-dir', 'site.yaml');
    await expect(loadConfig(file)).rejects.toThrow(ConfigError);
    await expect(loadConfig(file)).rejects.toThrow(/outpost-no-such-dir\/site\.yaml: invalid config\n {2}cannot read file: ENOENT/);
  });
});
