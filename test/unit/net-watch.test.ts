import type { NetworkInterfaceInfo } from 'node:os';
import { describe, expect, it } from 'vitest';
import { addressFingerprint, NetWatch } from '../../cloud-bridge/net-watch.js';
import { ManualClock } from '../helpers/fakes.js';

const iface = (address: string, internal = false): NetworkInterfaceInfo =>
  ({ address, netmask: '255.255.255.0', family: 'IPv4', mac: '00:00:00:00:00:00', internal, cidr: `${address}/24` });

describe('net watch', () => {
  it('calls back when the host gains or changes an external address, not when nothing changed', async () => {
    const clock = new ManualClock();
    let table: NodeJS.Dict<NetworkInterfaceInfo[]> = { lo: [iface('127.0.0.1', true)] };
    const changes: string[] = [];
    const w = new NetWatch(clock, 2000, (a) => changes.push(a), () => table);
    w.start();
    await clock.advance(6000);
    expect(changes).toEqual([]);
    table = { ...table, wwan0: [iface('10.64.1.7')] };
    await clock.advance(2000);
    expect(changes).toEqual(['wwan0 10.64.1.7']);
    table = { ...table, wwan0: [iface('10.64.9.9')] };
    await clock.advance(2000);
    await clock.advance(2000);
    expect(changes).toEqual(['wwan0 10.64.1.7', 'wwan0 10.64.9.9']);
    w.stop();
  });

  it('ignores loopback and other internal interfaces', () => {
    expect(addressFingerprint(() => ({ lo: [iface('127.0.0.1', true)], eth0: [iface('192.168.1.2')] }))).toBe('eth0 192.168.1.2');
  });

  it('holds no timer once stopped, and none with interval 0', async () => {
    const clock = new ManualClock();
    const w = new NetWatch(clock, 1000, () => undefined, () => ({}));
    w.start();
    expect(clock.pending).toBe(1);
    w.stop();
    expect(clock.pending).toBe(0);
    await clock.advance(5000);
    expect(clock.pending).toBe(0);
    const off = new NetWatch(clock, 0, () => undefined, () => ({}));
    off.start();
    expect(clock.pending).toBe(0);
  });
});
