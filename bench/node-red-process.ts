import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { freePort } from '../sim/free-port.js';
import type { Scope } from './harness.js';

const require = createRequire(import.meta.url);
const RED_JS = require.resolve('node-red/red.js');

/** A running Node-RED of a benchmark: its pid (for CPU figures) and the tail of its stderr. */
export interface NodeRedProcess {
  readonly pid: number | undefined;
  log(): string;
}

/**
 * Node-RED 4.1 (`node-red/red.js`) as its own process, the way a user runs it, with `flows` in a
 * fresh user dir under `dir`: editor and HTTP nodes off, loopback only, warnings only. Stopped by
 * `scope` (SIGTERM, then waited for); its pid is registered for the emergency cleanup. The caller
 * proves the flow is running (a probe through it): Node-RED prints nothing reliable when it is.
 */
export async function startNodeRed(scope: Scope, dir: string, flows: readonly object[]): Promise<NodeRedProcess> {
  const userDir = join(dir, 'node-red');
  mkdirSync(userDir, { recursive: true });
  writeFileSync(join(userDir, 'flows.json'), JSON.stringify(flows));
  const uiPort = await freePort();
  writeFileSync(
    join(userDir, 'settings.cjs'),
    `module.exports = ${JSON.stringify({
      flowFile: 'flows.json',
      uiHost: '127.0.0.1',
      uiPort,
      httpAdminRoot: false,
      httpNodeRoot: false,
      credentialSecret: false,
      logging: { console: { level: 'warn', metrics: false, audit: false } },
      externalModules: { autoInstall: false, palette: { allowInstall: false }, modules: { allowInstall: false } },
      telemetry: { enabled: false, updateNotification: false },
    })};\n`,
  );
  const proc = spawn(process.execPath, [RED_JS, '--userDir', userDir, '--settings', join(userDir, 'settings.cjs'), '--port', String(uiPort)], { stdio: ['ignore', 'ignore', 'pipe'] });
  // Drained for the whole life of the process: a full pipe would stall Node-RED.
  let tail = '';
  proc.stderr?.on('data', (d: Buffer) => {
    tail = (tail + d.toString()).slice(-4096);
  });
  const exited = new Promise<void>((resolve) => (proc.exitCode !== null ? resolve() : proc.once('exit', () => resolve())));
  scope.pid(proc.pid);
  scope.defer(async () => {
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  });
  return { pid: proc.pid, log: () => tail };
}
