import { execFileSync, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { SimChildDevice } from '../../sim/child-device.js';
import { SimCloud } from '../../sim/cloud.js';
import { freePort } from '../../sim/free-port.js';
import { deviceCredentials, testIdentities } from '../helpers/broker-access.js';
import { waitFor } from '../helpers/wait.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
/**
 * The release before the store's schema changed (runtime v2: config versions): 0.1.0, by its
 * commit on main (a clone carries the history but not always the tag).
 */
const PREVIOUS = 'v0.1.0';
const PREVIOUS_COMMIT = '76c5002229ddeb8d0bd791e1425ab027a1882b53';
const cleanup: Array<() => Promise<unknown>> = [];
/** The gateway processes the supervisor started, in order. */
const pids = (file: string): number[] => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').map(Number) : []);
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f().catch(() => undefined);
});

function run(bin: string, args: string[], env: NodeJS.ProcessEnv): { stop: () => Promise<number | null>; exited: Promise<number | null>; output: () => string } {
  const proc = spawn(bin, args, { env: { ...process.env, OUTPOST_LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return {
    exited,
    output: () => out,
    stop: async () => {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      return exited;
    },
  };
}

describe('the packed package: installed, upgraded, supervised', () => {
  it(`upgrades ${PREVIOUS} in place with readings queued in its store: the new version migrates the store and delivers them; under a supervisor it comes back after kill -9 and delivers every acknowledged reading; the old version then refuses the newer store`, { timeout: 600_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outpost-upgrade-'));
    cleanup.push(() => Promise.resolve(process.env.OUTPOST_KEEP ? undefined : rmSync(dir, { recursive: true, force: true })));
    // The previous release, from its commit: built and packed as it was released.
    const old = join(dir, 'old');
    mkdirSync(old);
    execFileSync('bash', ['-c', `git -C "$ROOT" archive "$REV" | tar -x -C "$OLD"`], { env: { ...process.env, ROOT: root, REV: PREVIOUS_COMMIT, OLD: old } });
    symlinkSync(join(root, 'node_modules'), join(old, 'node_modules'));
    // Its JavaScript as released, emitted without type-checking it against today's dependencies
    // (it used prom-client, since dropped): installing its tarball brings its own dependencies.
    execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json', '--noCheck'], { cwd: old, stdio: 'ignore', timeout: 300_000 });
    // Packed as built above: its prepare script (a build against today's dependencies, which npm
    // runs on pack under the test runner despite --ignore-scripts) is taken out first.
    const oldManifest = JSON.parse(readFileSync(join(old, 'package.json'), 'utf8')) as { scripts?: Record<string, string> };
    delete oldManifest.scripts?.prepare;
    writeFileSync(join(old, 'package.json'), `${JSON.stringify(oldManifest, null, 2)}\n`);
    const pack = (cwd: string): string => join(dir, execFileSync('npm', ['pack', '--pack-destination', dir, '--ignore-scripts', '--silent'], { cwd, encoding: 'utf8' }).trim().split('\n').at(-1)!);
    const oldTgz = pack(old);
    const newTgz = pack(root);
    expect(oldTgz).toMatch(/outpost-0\.1\.0\.tgz$/);
    expect(newTgz).not.toBe(oldTgz);
    const prefix = join(dir, 'prefix');
    const install = (tgz: string): number => {
      const t0 = Date.now();
      execFileSync('npm', ['install', '--prefix', prefix, '--omit=dev', '--no-audit', '--no-fund', tgz], { stdio: 'ignore', timeout: 300_000 });
      return Date.now() - t0;
    };
    const bin = join(prefix, 'node_modules', '.bin', 'outpost');
    const installOldMs = install(oldTgz);

    const cloud = await SimCloud.start();
    cleanup.push(() => cloud.stop());
    await cloud.stop(); // the cloud is away while the old version runs: its readings stay queued in the store
    const [brokerPort, httpPort] = [await freePort(), await freePort()];
    const config = join(dir, 'site.yaml');
    writeFileSync(
      config,
      stringify({
        gateway: { id: 'upgrade-gw' },
        broker: { host: '127.0.0.1', port: brokerPort, acceptUnknownDevices: true },
        identities: testIdentities,
        http: { host: '127.0.0.1', port: httpPort, tls: false },
        rules: [{ id: 'all', type: 'filter', match: { device: '*', point: '*' } }],
        cloud: { url: cloud.url, lingerMs: 100, backoff: { initialMs: 100, maxMs: 500 } },
        storage: { path: join(dir, 'state', 'outpost.db') },
      }),
      { mode: 0o600 },
    );
    const healthy = async (): Promise<boolean> => {
      try {
        return (await fetch(`http://127.0.0.1:${httpPort}/healthz`, { signal: AbortSignal.timeout(1000) })).status === 200;
      } catch {
        return false;
      }
    };

    const v1 = run(bin, ['start', '--config', config], {});
    cleanup.push(() => v1.stop());
    await waitFor('the old version up', healthy, 30_000, 100, () => v1.output());
    const child = new SimChildDevice({ url: `mqtt://127.0.0.1:${brokerPort}`, deviceId: 'up-1', password: deviceCredentials('up-1').password, intervalMs: 20, points: { a: { kind: 'counter' } } });
    child.start();
    cleanup.push(() => child.kill());
    await waitFor('readings acknowledged by the old version', () => child.acked.length >= 100, 20_000);
    await child.stop();
    expect(await v1.stop()).toBe(0);
    const queued = child.acked;

    // The upgrade: the new package installed over the old one, the same config and store.
    // The old install as it was (its own dependencies), kept for the downgrade at the end.
    const oldInstall = join(dir, 'old-install');
    cpSync(prefix, oldInstall, { recursive: true, verbatimSymlinks: true });
    const installNewMs = install(newTgz);
    await cloud.start();
    const v2 = run(bin, ['start', '--config', config], {});
    cleanup.push(() => v2.stop());
    await waitFor('the new version up', healthy, 30_000, 100, () => v2.output());
    await waitFor('every reading queued by the old version delivered by the new one', () => cloud.ledger.missing(queued).length === 0, 30_000, 100, () => `${cloud.ledger.missing(queued).length} of ${queued.length} missing`);
    expect(await v2.stop()).toBe(0);
    // The store as the new version left it: migrated to runtime v2, the config file recorded as version 1.
    const db = new Database(join(dir, 'state', 'outpost.db'), { readonly: true });
    expect(db.prepare("SELECT MAX(version) AS v FROM schema_migrations WHERE component = 'runtime'").get()).toEqual({ v: 2 });
    expect(db.prepare('SELECT version, source, status FROM config_versions').all()).toEqual([{ version: 1, source: 'file', status: 'active' }]);
    db.close();

    // The upgraded install under a supervisor (systemd's Restart=always where systemd runs): a
    // kill -9 of the gateway process, restarted, every acknowledged reading delivered.
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
    await waitFor('the installed gateway up', healthy, 30_000, 100);

    const children = [1, 2].map(
      (i) => new SimChildDevice({ url: `mqtt://127.0.0.1:${brokerPort}`, deviceId: `sup-${i}`, password: deviceCredentials(`sup-${i}`).password, intervalMs: 20, points: { a: { kind: 'counter' } } }),
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
    const superviseLine = `${all.length} readings acknowledged across a kill -9 under the supervisor, ${cloud.ledger.missing(all).length} missing, ${cloud.ledger.duplicates} duplicates`;
    writeFileSync(stopFile, '');
    process.kill(pids(pidFile).at(-1)!, 'SIGTERM');
    await supervisorExit;

    // A downgrade: the old version on the migrated store refuses to start, and says why.
    const back = run(process.execPath, [join(oldInstall, 'node_modules', 'outpost', 'dist', 'runtime', 'cli.js'), 'start', '--config', config], {});
    expect(await back.exited).toBe(1);
    expect(back.output()).toContain('database schema of "runtime" is version 2, newer than this gateway knows (1); refusing to run an older gateway on it');
    console.log(`upgrade ${PREVIOUS} -> ${JSON.parse(execFileSync('node', ['-p', 'JSON.stringify(require("./package.json").version)'], { cwd: root, encoding: 'utf8' })) as string}: ${queued.length} readings queued by the old version, ${cloud.ledger.missing(queued).length} missing after the upgrade; install old ${installOldMs} ms, upgrade ${installNewMs} ms; ${superviseLine}`);
  });
});
