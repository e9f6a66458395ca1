import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { SimChildDevice } from '../../sim/child-device.js';
import { SimCloud } from '../../sim/cloud.js';
import { freePort } from '../../sim/free-port.js';
import { deviceCredentials, testIdentities } from '../helpers/broker-access.js';
import { waitFor } from '../helpers/wait.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
});

/** The gateway processes the supervisor started, in order. */
const pids = (file: string): number[] => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').map(Number) : []);

describe('the packed package, installed and supervised', () => {
  it('installs from npm pack into a clean prefix, runs under a supervisor, comes back after kill -9 and delivers every acknowledged reading', { timeout: 360_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-pack-'));
    cleanup.push(() => Promise.resolve(process.env.OUTPOST_KEEP ? undefined : rmSync(dir, { recursive: true, force: true })));
    // What a user installs: the tarball npm pack makes (dist as built), into a prefix of its own.
    const tgz = execFileSync('npm', ['pack', '--pack-destination', dir, '--ignore-scripts', '--silent'], { cwd: root, encoding: 'utf8' }).trim().split('\n').at(-1)!;
    const prefix = join(dir, 'prefix');
    execFileSync('npm', ['install', '--prefix', prefix, '--omit=dev', '--no-audit', '--no-fund', join(dir, tgz)], { stdio: 'ignore', timeout: 300_000 });
    const bin = join(prefix, 'node_modules', '.bin', 'outpost');
    expect(existsSync(bin)).toBe(true);

    const cloud = await SimCloud.start();
    cleanup.push(() => cloud.stop());
    const [brokerPort, httpPort] = [await freePort(), await freePort()];
    const config = join(dir, 'site.yaml');
    writeFileSync(
      config,
      stringify({
        gateway: { id: 'pkg-gw' },
        broker: { host: '127.0.0.1', port: brokerPort, acceptUnknownDevices: true },
        identities: testIdentities,
        http: { host: '127.0.0.1', port: httpPort, tls: false },
        rules: [{ id: 'all', type: 'filter', match: { device: '*', point: '*' } }],
        cloud: { url: cloud.url, lingerMs: 100, backoff: { initialMs: 100, maxMs: 500 } },
        storage: { path: join(dir, 'state', 'outpost.db') },
      }),
      { mode: 0o600 },
    );
    // A supervisor as a plain script does it (systemd's Restart=always where systemd runs).
    const pidFile = join(dir, 'pids');
    const stopFile = join(dir, 'stop');
    const supervisor = spawn('bash', ['-c', `while [ ! -e "$STOP" ]; do "$BIN" start --config "$CONFIG" >>"$LOGDIR/gw.log" 2>&1 & echo $! >> "$PIDS"; wait $!; sleep 0.3; done`], {
      env: { ...process.env, BIN: bin, CONFIG: config, PIDS: pidFile, STOP: stopFile, OUTPOST_LOG_LEVEL: 'warn', LOGDIR: dir },
      stdio: 'ignore',
    });
    const supervisorExit = new Promise<void>((resolve) => supervisor.once('exit', () => resolve()));
    cleanup.push(async () => {
      writeFileSync(stopFile, '');
      for (const pid of pids(pidFile)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      await supervisorExit;
    });
    const healthy = async (): Promise<boolean> => {
      try {
        return (await fetch(`http://127.0.0.1:${httpPort}/healthz`, { signal: AbortSignal.timeout(1000) })).status === 200;
      } catch {
        return false;
      }
    };
    await waitFor('the installed gateway up', healthy, 30_000, 100);

    const children = [1, 2].map(
      (i) => new SimChildDevice({ url: `mqtt://127.0.0.1:${brokerPort}`, deviceId: `pkg-${i}`, password: deviceCredentials(`pkg-${i}`).password, intervalMs: 20, points: { a: { kind: 'counter' } } }),
    );
    for (const c of children) c.start();
    cleanup.push(() => Promise.all(children.map((c) => c.kill())));
    const acked = (): number => children.reduce((n, c) => n + c.acked.length, 0);
    await waitFor('readings acknowledged', () => acked() > 50, 20_000);

    // Power cut of the gateway process: the supervisor starts it again, the children reconnect.
    const first = pids(pidFile)[0]!;
    process.kill(first, 'SIGKILL');
    await waitFor('a new gateway process', () => pids(pidFile).length >= 2, 20_000);
    await waitFor('the new gateway up', healthy, 30_000, 100);
    const before = acked();
    await waitFor('readings acknowledged by the new process', () => acked() > before + 50, 30_000);
    for (const c of children) await c.stop();
    const all = children.flatMap((c) => c.acked);
    await waitFor('every acknowledged reading in the cloud', () => cloud.ledger.missing(all).length === 0, 30_000, 100, () => `${cloud.ledger.missing(all).length} of ${all.length} missing; the cloud has ${cloud.ledger.unique} (${cloud.ledger.records} records), gateway ${JSON.stringify([...cloud.status])}`);
    expect(pids(pidFile).length).toBe(2);
    console.log(`packaged: ${all.length} readings acknowledged across a kill -9 under the supervisor, 0 missing, ${cloud.ledger.duplicates} duplicates`);
  });
});
