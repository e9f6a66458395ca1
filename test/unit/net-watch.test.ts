import type { NetworkInterfaceInfo } from 'node:os';
import { describe, expect, it } from 'vitest';
import { addressFingerprint, NetWatch } from '../../cloud-bridge/net-watch.js';
import { ManualClock } from '../helpers/fakes.js';

type Table = NodeJS.Dict<NetworkInterfaceInfo[]>;

const info = (address: string, internal = false): NetworkInterfaceInfo => ({
  address,
  netmask: '255.255.255.0',
  family: 'IPv4',
  mac: '02:00:00:00:00:01',
  internal,
  cidr: `${address}/24`,
});

/** A host's interface table the test rewrites, as a modem or a cable would. */
function host(initial: Table): { table: Table; source: () => Table; reads: number } {
  const h = {
    table: initial,
    reads: 0,
    source: (): Table => {
      h.reads++;
      return h.table;
    },
  };
  return h;
}

const lo = [info('127.0.0.1', true)];

describe('net watch', () => {
  it('calls back once when an external address appears, with the new addresses', async () => {
    const clock = new ManualClock();
    const h = host({ lo });
    const changes: string[] = [];
    const watch = new NetWatch(clock, 1000, (a) => changes.push(a), h.source);
    watch.start();
    await clock.advance(3000);
    expect(changes).toEqual([]);
    h.table = { lo, wwan0: [info('10.64.0.7')] };
    await clock.advance(1000);
    expect(changes).toEqual(['wwan0 10.64.0.7']);
    await clock.advance(5000);
    expect(changes).toHaveLength(1);
    watch.stop();
  });

  it('notices an address that changes or goes away', async () => {
    const clock = new ManualClock();
    const h = host({ lo, wwan0: [info('10.64.0.7')] });
    const changes: string[] = [];
    const watch = new NetWatch(clock, 500, (a) => changes.push(a), h.source);
    watch.start();
    h.table = { lo, wwan0: [info('10.64.0.9')] };
    await clock.advance(500);
    h.table = { lo };
    await clock.advance(500);
    expect(changes).toEqual(['wwan0 10.64.0.9', '']);
    watch.stop();
  });

  it('does not call back while the table is unchanged, however often it is read', async () => {
    const clock = new ManualClock();
    // A new table object each time, listed in another order: the same addresses all the same.
    let flip = false;
    const source = (): Table => {
      flip = !flip;
      return flip ? { eth0: [info('192.168.1.5')], wwan0: [info('10.64.0.7')] } : { wwan0: [info('10.64.0.7')], eth0: [info('192.168.1.5')] };
    };
    const changes: string[] = [];
    const watch = new NetWatch(clock, 100, (a) => changes.push(a), source);
    watch.start();
    await clock.advance(10_000);
    expect(changes).toEqual([]);
    watch.stop();
  });

  it('ignores internal interfaces', async () => {
    const clock = new ManualClock();
    const h = host({ lo, eth0: [info('192.168.1.5')] });
    const changes: string[] = [];
    const watch = new NetWatch(clock, 100, (a) => changes.push(a), h.source);
    watch.start();
    h.table = { lo: [info('127.0.0.2', true)], eth0: [info('192.168.1.5')] };
    await clock.advance(1000);
    expect(changes).toEqual([]);
    watch.stop();
    expect(addressFingerprint(() => ({ lo, eth0: [info('192.168.1.5')] }))).toBe('eth0 192.168.1.5');
  });

  it('stop ends the timer: no timer left, the table is not read again', async () => {
    const clock = new ManualClock();
    const h = host({ lo });
    const changes: string[] = [];
    const watch = new NetWatch(clock, 100, (a) => changes.push(a), h.source);
    watch.start();
    await clock.advance(300);
    watch.stop();
    expect(clock.pending()).toBe(0);
    const reads = h.reads;
    h.table = { lo, wwan0: [info('10.64.0.7')] };
    await clock.advance(1000);
    expect(h.reads).toBe(reads);
    expect(changes).toEqual([]);
  });

  it('start twice arms one timer; interval 0 arms none', async () => {
    const clock = new ManualClock();
    const h = host({ lo });
    const watch = new NetWatch(clock, 100, () => undefined, h.source);
    watch.start();
    watch.start();
    expect(clock.pending()).toBe(1);
    watch.stop();
    const never = new NetWatch(clock, 0, () => undefined, h.source);
    never.start();
    expect(clock.pending()).toBe(0);
    await clock.advance(1000);
  });
});
