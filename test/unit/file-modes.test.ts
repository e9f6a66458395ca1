import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, secretFields } from '../../runtime/config/load.js';
import type { Logger } from '../../runtime/contracts/index.js';
import { databaseFiles, openDatabase } from '../../runtime/store/database.js';
import { CLI } from '../helpers/gateway-process.js';

const exec = promisify(execFile);
const root = mkdtempSync(join(tmpdir(), 'outpost-modes-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const mode = (path: string): number => statSync(path).mode & 0o777;
let n = 0;
const fresh = (): string => join(root, `case-${++n}`);

/** A logger that keeps what is warned. */
function warnings(): { log: Logger; lines: { obj: object; msg: string | undefined }[] } {
  const lines: { obj: object; msg: string | undefined }[] = [];
  const log: Logger = {
    error: () => undefined,
    warn: (obj: object | string, msg?: string) => void lines.push(typeof obj === 'string' ? { obj: {}, msg: obj } : { obj, msg }),
    info: () => undefined,
    debug: () => undefined,
    child: () => log,
  };
  return { log, lines };
}

const withSecrets = `gateway: { id: gw-modes }
cloud: { url: "mqtts://site-7:url-pass@cloud.example:8883", password: cloud-pass, tls: { cert: /etc/outpost/c.pem, key: /etc/outpost/k.pem } }
http: { admin: { username: admin, passwordHash: "$2b$10$abcdefghijklmnopqrstuuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" } }
ota:
  trustedKeys: { rel-1: "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=" }
  server: { groupSecret: group-secret-0123456789abcdef-0123456789, targetTokenHashes: { dev-1: 'aa00000000000000000000000000000000000000000000000000000000000000' } }
storage: { path: /tmp/outpost-modes.db }
`;

describe('the store files', () => {
  it('are created owner-only: a directory Outpost creates 0700, the database and its -wal and -shm 0600', () => {
    const dir = join(fresh(), 'state');
    const path = join(dir, 'outpost.db');
    const db = openDatabase({ path, synchronous: 'normal' });
    try {
      db.exec('CREATE TABLE t (x); INSERT INTO t VALUES (1)');
      expect(mode(dir)).toBe(0o700);
      for (const f of databaseFiles(path)) {
        expect(existsSync(f), f).toBe(true);
        expect(mode(f), f).toBe(0o600);
      }
    } finally {
      db.close();
    }
  });

  it('are made owner-only when an older gateway left them readable, and an existing directory is left as it is', () => {
    const dir = fresh();
    const path = join(dir, 'outpost.db');
    openDatabase({ path, synchronous: 'normal' }).close();
    chmodSync(dir, 0o755);
    chmodSync(path, 0o644);
    writeFileSync(`${path}-wal`, '');
    chmodSync(`${path}-wal`, 0o644);
    const db = openDatabase({ path, synchronous: 'normal' });
    try {
      db.exec('CREATE TABLE t (x); INSERT INTO t VALUES (1)');
      for (const f of databaseFiles(path)) expect(mode(f), f).toBe(0o600);
      expect(mode(dir)).toBe(0o755);
    } finally {
      db.close();
    }
  });
});

describe('a config file that holds secrets', () => {
  it('names its secret fields, not the public keys or the paths of PEM files', () => {
    expect(secretFields({ cloud: { url: 'mqtts://u:p@h', password: 'x', tls: { key: '/k.pem', rejectUnauthorized: false } } })).toEqual(['cloud.url', 'cloud.password']);
    expect(secretFields({ ota: { trustedKeys: { k: 'MCow…' }, server: { groupSecret: 'g', groupSecretFile: '/etc/outpost/ota.key' } }, identities: { groups: [{ name: 'v', secret: 's', secretFile: '/k' }] } })).toEqual([
      'ota.server.groupSecret',
      'identities.groups[0].secret',
    ]);
    expect(secretFields({ cloud: { url: 'mqtt://h:1883', username: 'site-7' }, devices: [{ id: 'a', host: 'h' }] })).toEqual([]);
  });

  it('is warned about once, naming the file and the chmod that fixes it, when group or others may read it', async () => {
    const dir = fresh();
    mkdirSync(dir);
    const file = join(dir, 'site.yaml');
    writeFileSync(file, withSecrets);
    chmodSync(file, 0o640);
    const w = warnings();
    await loadConfig(file, undefined, { log: w.log });
    await loadConfig(file, undefined, { log: w.log });
    expect(w.lines).toHaveLength(1);
    const msg = w.lines[0]!.msg ?? '';
    expect(msg).toContain(file);
    expect(msg).toContain(`chmod 600 ${file}`);
    expect(msg).toContain('cloud.password');
    expect(msg).toContain('ota.server.groupSecret');
    expect(JSON.stringify(w.lines)).not.toMatch(/url-pass|cloud-pass|gw-token-123|target-token-1|\$2b\$/);
  });

  it('is not warned about when it is owner-only, or when it holds no secret', async () => {
    const dir = fresh();
    mkdirSync(dir);
    const owner = join(dir, 'owner.yaml');
    writeFileSync(owner, withSecrets);
    chmodSync(owner, 0o600);
    const plain = join(dir, 'plain.yaml');
    writeFileSync(plain, 'gateway: { id: gw }\ncloud: { url: "mqtt://h" }\nstorage: { path: /tmp/x.db }\n');
    chmodSync(plain, 0o644);
    const w = warnings();
    await loadConfig(owner, undefined, { log: w.log });
    await loadConfig(plain, undefined, { log: w.log });
    expect(w.lines).toEqual([]);
  });

  it('is warned about by outpost validate, which still finds the config valid', async () => {
    const dir = fresh();
    mkdirSync(dir);
    const file = join(dir, 'site.yaml');
    writeFileSync(file, withSecrets);
    chmodSync(file, 0o644);
    const { stdout, stderr } = await exec(process.execPath, [CLI, 'validate', file], { timeout: 20_000, env: { ...process.env, OUTPOST_LOG_LEVEL: 'warn' } });
    expect(stdout).toContain(`${file}: valid`);
    expect(stderr).toContain(`chmod 600 ${file}`);
    expect(stderr).not.toMatch(/url-pass|cloud-pass|gw-token-123|target-token-1/);
  });
});
