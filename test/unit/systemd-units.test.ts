import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));
const units = ['outpost.service', 'outpost-health.service', 'outpost-health.timer'].map((u) => `${root}systemd/${u}`);

describe('the systemd units shipped in the package', () => {
  it('pass systemd-analyze verify, run the gateway hardened as its own user, and restart it', () => {
    const r = spawnSync('systemd-analyze', ['verify', '--man=no', ...units], { encoding: 'utf8' });
    expect(r.error, 'systemd-analyze (Debian package systemd) is needed').toBeUndefined();
    expect(r.stderr.trim()).toBe('');
    expect(r.status).toBe(0);
    const unit = readFileSync(units[0]!, 'utf8');
    for (const line of ['Type=simple', 'User=outpost', 'Restart=always', 'StateDirectory=outpost', 'ProtectSystem=strict', 'NoNewPrivileges=yes', 'ExecStart=/usr/bin/env outpost start --config /etc/outpost/site.yaml', 'ExecReload=/bin/kill -HUP $MAINPID']) {
      expect(unit.split('\n')).toContain(line);
    }
    expect(readFileSync(units[1]!, 'utf8')).toContain('outpost healthcheck --config /etc/outpost/site.yaml');
  });

  it('are in the packed package', () => {
    const packed = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' })) as Array<{ files: Array<{ path: string }> }>;
    const files = packed[0]!.files.map((f) => f.path);
    expect(files).toEqual(expect.arrayContaining(['systemd/outpost.service', 'systemd/outpost-health.service', 'systemd/outpost-health.timer']));
  });
});
