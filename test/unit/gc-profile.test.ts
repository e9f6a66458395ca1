import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../runtime/config/load.js';
import { gcFlags } from '../../runtime/gc-profile.js';

const site = (gateway: Record<string, unknown>): unknown => ({ gateway, cloud: { url: 'mqtt://127.0.0.1:1883' }, storage: { path: '/var/lib/outpost/outpost.db' } });

describe('gateway.gc', () => {
  it('is compact unless the site asks for low latency, and refuses anything else by name', () => {
    expect(parseConfig(site({ id: 'gw' })).gateway.gc).toBe('compact');
    expect(parseConfig(site({ id: 'gw', gc: 'low-latency' })).gateway.gc).toBe('low-latency');
    expect(() => parseConfig(site({ id: 'gw', gc: 'fast' }))).toThrow(/gateway\.gc: .*"low-latency"/);
  });

  it('each profile sets the same flags, so switching back on a restart undoes the other', () => {
    const names = (p: 'compact' | 'low-latency'): string[] => gcFlags(p).map((f) => f.replace(/^--(no-)?/, '').replace(/=.*/, ''));
    expect(names('low-latency')).toEqual(names('compact'));
    expect(gcFlags('low-latency')).toEqual(['--heap-growing-percent=150', '--no-allocation-site-pretenuring']);
    expect(gcFlags('compact')).toEqual(['--heap-growing-percent=0', '--allocation-site-pretenuring']);
  });
});
