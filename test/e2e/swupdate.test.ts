import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SwuSigner } from '../../sim/ota/swu-image.js';
import { groupTargetToken } from '../../sim/ota/ddi-device.js';
import { GROUP_SECRET, manifest, otaSite, rollout, type Site } from '../helpers/ota-site.js';
import { waitFor } from '../helpers/wait.js';

const cleanup: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** Debian's swupdate is a peer of this test: in CI it must be there (.ci/run installs it). */
function haveSwupdate(): boolean {
  try {
    execFileSync('swupdate', ['-h'], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

interface Agent {
  proc: ChildProcess;
  tmp: string;
  log: () => string;
  stop: () => Promise<void>;
}

/** swupdate with its suricatta hawkBit client against the gateway's update server, with the device's own target token (`-k`). */
function startSwupdate(s: Site, swu: SwuSigner, device: string, extra = ''): Agent {
  const tmp = mkdtempSync(join(tmpdir(), 'outpost-swupdate-tmp-'));
  const port = new URL(s.server).port;
  const proc = spawn('swupdate', ['-v', '-k', swu.caPem, '-H', 'board:1.0', '-u', `-t site-a -u http://127.0.0.1:${port} -i ${device} -k ${groupTargetToken(GROUP_SECRET, device)}${extra}`], {
    env: { ...process.env, TMPDIR: tmp },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
  proc.stderr?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  // SWU_LOG=FILE keeps swupdate's whole output for debugging.
  if (process.env.SWU_LOG) for (const s of [proc.stdout, proc.stderr]) s?.on('data', (d: Buffer) => appendFileSync(process.env.SWU_LOG!, d));
  cleanup.push(
    () =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null) return resolve();
        proc.once('exit', () => resolve());
        proc.kill('SIGTERM');
        setTimeout(() => proc.kill('SIGKILL'), 5000).unref();
      }),
  );
  return {
    proc,
    tmp,
    log: () => out,
    stop: async () => {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      await exited;
    },
  };
}

const events = (s: Site, device: string): Array<Record<string, unknown>> => s.cloud.ledger.otaEvents.filter((e) => e.device === device).map((e) => e.event);

describe('interoperability: Debian swupdate (suricatta hawkBit client) against the gateway', () => {
  it('is installed (CI installs it; this test must not pass by skipping)', () => {
    expect(haveSwupdate()).toBe(true);
  });

  it('polls, downloads and installs a signed .swu, and its success reaches the cloud', { timeout: 120_000 }, async () => {
    const s = await otaSite(cleanup);
    const dir = mkdtempSync(join(tmpdir(), 'outpost-swu-'));
    const swu = SwuSigner.create(join(dir, 'pki'));
    const installPath = join(dir, 'installed', 'firmware.bin');
    mkdirSync(join(dir, 'out'));
    const content = Buffer.from(`sensor firmware 2.0.0 ${'x'.repeat(50_000)}\n`);
    const image = swu.build(join(dir, 'out'), 'sensor-fw-2.0.0', { version: '2.0.0', hardware: '1.0', installPath, content });
    await s.publish(manifest(s, '2.0.0', image, { phases: [{ share: 100 }], failureThreshold: 0, maxRetries: 0 }));
    await waitFor('release cached', () => s.gateway.status().ota!.releases.some((r) => r.state === 'ready'), 15_000);
    const agent = startSwupdate(s, swu, 'sensor-swu');
    await waitFor('swupdate installed the image', () => existsSync(installPath) && readFileSync(installPath).equals(content), 30_000, 100, agent.log);
    // SWUpdate reports success in a second step: it keeps the state "pending testing" until the
    // new system confirms it. Here the device "reboots": swupdate stops and starts again with
    // `-c 2` (update successful), as a device's first boot after an update does.
    await waitFor(
      'all chunks installed feedback',
      () => events(s, 'sensor-swu').some((e) => JSON.stringify(e.details ?? []).includes('All Chunks Installed')),
      20_000,
      100,
      () => JSON.stringify(events(s, 'sensor-swu')) + agent.log(),
    );
    await agent.stop();
    const rebooted = startSwupdate(s, swu, 'sensor-swu', ' -c 2');
    await waitFor('success at the cloud', () => events(s, 'sensor-swu').some((e) => e.event === 'closed' && e.result === 'success'), 20_000, 100, () => rebooted.log().slice(-4000));
    await waitFor('rollout done', () => rollout(s.gateway, 'sensor-fw-2.0.0')?.state === 'done', 10_000);
  });

  it('a corrupted image yields failure feedback that halts the rollout', { timeout: 120_000 }, async () => {
    const s = await otaSite(cleanup);
    const dir = mkdtempSync(join(tmpdir(), 'outpost-swu-'));
    const swu = SwuSigner.create(join(dir, 'pki'));
    const installPath = join(dir, 'installed', 'firmware.bin');
    mkdirSync(join(dir, 'out'));
    const image = swu.build(join(dir, 'out'), 'sensor-fw-2.0.0', { version: '2.0.0', hardware: '1.0', installPath, content: Buffer.alloc(20_000, 7), corrupt: true });
    await s.publish(manifest(s, '2.0.0', image, { phases: [{ share: 100 }], failureThreshold: 0, maxRetries: 0 }));
    await waitFor('release cached', () => s.gateway.status().ota!.releases.some((r) => r.state === 'ready'), 15_000);
    const agent = startSwupdate(s, swu, 'sensor-swu');
    await waitFor('failure at the cloud', () => events(s, 'sensor-swu').some((e) => e.event === 'closed' && e.result === 'failure'), 30_000, 100, () => JSON.stringify(events(s, 'sensor-swu')) + agent.log());
    await waitFor('rollout halted', () => rollout(s.gateway, 'sensor-fw-2.0.0')?.state === 'halted', 10_000);
    expect(existsSync(installPath)).toBe(false);
  });
});
