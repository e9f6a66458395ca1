import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../runtime/config/load.js';
import { Gateway } from '../../runtime/gateway.js';
import { createLogger } from '../../runtime/logger.js';
import { StoreInUse } from '../../runtime/store/store-lock.js';
import { CLI, GatewayProcess } from '../helpers/gateway-process.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'outpost-lock-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const config = (db: string): Record<string, unknown> => ({
  gateway: { id: 'lock-gw' },
  broker: { host: '127.0.0.1', port: 0 },
  http: { host: '127.0.0.1', port: 0 },
  cloud: { url: 'mqtt://127.0.0.1:9' },
  storage: { path: db },
});

/** `outpost start` with `cfg`, expected to fail: its exit code and stderr. */
async function startFails(name: string, cfg: Record<string, unknown>): Promise<{ code: number; stderr: string }> {
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(cfg), { mode: 0o600 });
  return run(process.execPath, [CLI, 'start', '--config', file], { timeout: 20_000 }).then(
    () => ({ code: 0, stderr: '' }),
    (err: { code?: number; stderr?: string }) => ({ code: err.code ?? -1, stderr: err.stderr ?? '' }),
  );
}

describe('a gateway that cannot start says why in one line, naming the config field', () => {
  it('a port in use: the field, the address and what to do; no stack, no error from parts it never started', async () => {
    const squatter = createServer();
    await new Promise<void>((r) => squatter.listen(0, '127.0.0.1', () => r()));
    const port = (squatter.address() as { port: number }).port;
    try {
      const r = await startFails('port', { ...config(join(dir, 'port.db')), http: { host: '127.0.0.1', port } });
      expect(r.code).toBe(1);
      expect(r.stderr.trim()).toBe(`outpost lock-gw: not started: http.port 127.0.0.1:${port}: in use by another process: choose another port, or stop that process`);
    } finally {
      squatter.close();
    }
  });

  it('a storage.path that is a directory', async () => {
    const db = join(dir, 'a-directory');
    mkdirSync(db);
    const r = await startFails('dir', config(db));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`not started: storage.path ${db}: cannot open the database`);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('one gateway per store', () => {
  it('refuses a second gateway process on the same storage.path, naming the first one\'s pid; takes over the lock of one killed -9', async () => {
    const file = join(dir, 'site.json');
    writeFileSync(file, JSON.stringify(config(join(dir, 'shared.db'))), { mode: 0o600 });
    const first = await GatewayProcess.start(file);
    try {
      const second = await run(process.execPath, [CLI, 'start', '--config', file], { timeout: 20_000 }).then(
        () => ({ code: 0, stderr: '' }),
        (err: { code?: number; stderr?: string }) => ({ code: err.code ?? -1, stderr: err.stderr ?? '' }),
      );
      expect(second.code).not.toBe(0);
      expect(second.stderr).toContain(`is in use by another Outpost gateway (pid ${first.proc.pid})`);
      expect(second.stderr).toContain('storage.path');
    } finally {
      await first.kill9();
    }
    // The first died without releasing its lock: the next gateway takes it over.
    const third = await GatewayProcess.start(file);
    expect(await third.terminate()).toBe(0);
  }, 60_000);

  it('refuses a second gateway in the same process, and frees the store when the first stops', async () => {
    const cfg = parseConfig(config(join(dir, 'inproc.db')));
    const log = createLogger({ level: 'silent' });
    const a = await Gateway.start(cfg, { log });
    await expect(Gateway.start(cfg, { log })).rejects.toBeInstanceOf(StoreInUse);
    await a.stop();
    const b = await Gateway.start(cfg, { log });
    await b.stop();
  });
});
