import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../runtime/config/load.js';
import { changedSections, DeployRefused, planDeployment } from '../../runtime/deploy/plan.js';
import { defaultProtocols } from '../../runtime/protocols.js';

const plc = { id: 'plc-1', protocol: 'modbus-tcp', host: '127.0.0.1', port: 5020, pollIntervalMs: 1000, points: [{ name: 't', table: 'holding', address: 0, type: 'uint16' }] };
const meter = { ...plc, id: 'meter-1', port: 5021 };
const base = {
  gateway: { id: 'gw' },
  devices: [plc, meter, { id: 'pump-1', protocol: 'mqtt' }],
  rules: [{ id: 'all', type: 'filter', match: { device: '*', point: '*' } }],
  cloud: { url: 'mqtt://127.0.0.1:1883' },
  storage: { path: '/var/lib/outpost/outpost.db' },
};
type Input = Record<string, unknown> & Omit<typeof base, 'devices'> & { devices: Array<Record<string, unknown>> };
const cfg = (over: Partial<Input> = {}): ReturnType<typeof parseConfig> => parseConfig({ ...base, ...over });
const plan = (over: Partial<Input>): ReturnType<typeof planDeployment> => planDeployment(cfg(), cfg(over), defaultProtocols);

describe('deployment plan', () => {
  it('nothing changed: nothing to do', () => {
    expect(plan({})).toEqual({ kind: 'unchanged' });
  });

  it('rules alone: in place, no driver restarts', () => {
    expect(plan({ rules: [] })).toEqual({ kind: 'in-place', changed: ['rules'], devices: [] });
  });

  it("a polled device's settings: in place, its driver only", () => {
    expect(plan({ devices: [{ ...plc, pollIntervalMs: 200 }, meter, base.devices[2]!] })).toEqual({ kind: 'in-place', changed: ['devices'], devices: ['plc-1'] });
  });

  it('deploy settings alone: in place', () => {
    expect(plan({ deploy: { healthWindowMs: 5000 } })).toMatchObject({ kind: 'in-place', changed: ['deploy'] });
  });

  it('a device added or removed, a child changed, inventory fields: every part restarts, saying why', () => {
    expect(plan({ devices: [plc, base.devices[2]!] })).toMatchObject({ kind: 'restart', why: 'devices removed: meter-1' });
    expect(plan({ devices: [...base.devices, { ...plc, id: 'plc-2' }] })).toMatchObject({ kind: 'restart', why: 'devices added: plc-2' });
    expect(plan({ devices: [plc, meter, { id: 'pump-1', protocol: 'mqtt', model: 'P-3' }] })).toMatchObject({ kind: 'restart', why: 'device pump-1 is a child of the broker' });
    expect(plan({ devices: [{ ...plc, model: 'S7' }, meter, base.devices[2]!] })).toMatchObject({ kind: 'restart', why: expect.stringContaining('device plc-1 changes its inventory fields') as unknown });
  });

  it('cloud, http and other sections: every part restarts', () => {
    expect(plan({ cloud: { url: 'mqtt://127.0.0.1:1884' } })).toEqual({ kind: 'restart', changed: ['cloud'], why: 'cloud changed' });
    expect(plan({ cloud: { url: 'mqtt://127.0.0.1:1884' }, rules: [] })).toEqual({ kind: 'restart', changed: ['cloud', 'rules'], why: 'cloud changed' });
  });

  it("refuses what a running gateway cannot change: its id, its store's path", () => {
    expect(() => plan({ gateway: { id: 'other' } })).toThrow(DeployRefused);
    expect(() => plan({ storage: { path: '/elsewhere/outpost.db' } })).toThrow(/storage.path changes/);
  });

  it('compares sections by value', () => {
    expect(changedSections(cfg(), cfg())).toEqual([]);
  });
});
