import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

const require = createRequire(import.meta.url);

type Input = (msg: Record<string, unknown>, send: (m: unknown) => void, done: (err?: Error) => void) => void;

/** The `outpost write` node in a fake Node-RED runtime whose host records the writes it is asked for. */
function writeNode(config: Record<string, string>): { input: (msg: Record<string, unknown>) => Promise<Error | undefined>; writes: unknown[][] } {
  const writes: unknown[][] = [];
  let handler: Input | undefined;
  const RED = {
    settings: { outpost: { write: (...args: unknown[]) => (writes.push(args), Promise.resolve({ readBack: args[2] })) } },
    nodes: {
      createNode(node: Record<string, unknown>) {
        node.on = (e: string, f: Input) => {
          if (e === 'input') handler = f;
        };
        node.status = () => undefined;
        node.error = () => undefined;
      },
      registerType(_t: string, ctor: (this: Record<string, unknown>, c: Record<string, string>) => void) {
        ctor.call({}, config);
      },
    },
  };
  (require('../../rules/node-red/outpost-write.cjs') as (red: typeof RED) => void)(RED);
  return {
    writes,
    input: (msg) => new Promise((resolve) => handler!(msg, () => undefined, (err) => resolve(err))),
  };
}

describe('outpost write (Node-RED) trusts only the sources it names', () => {
  it('writes for a reading from a trusted device, refuses one from another device or with no reading', async () => {
    const node = writeNode({ device: 'plc-1', point: 'speed-setpoint', sources: 'plc-1, meter-*' });
    expect(await node.input({ payload: 42, reading: { device: 'plc-1' } })).toBeUndefined();
    expect(await node.input({ payload: 43, reading: { device: 'meter-2' } })).toBeUndefined();
    expect(String(await node.input({ payload: 55.5, reading: { device: 'pump-3' } }))).toMatch(/"pump-3" is not from a trusted source/);
    expect(String(await node.input({ payload: 55.5 }))).toMatch(/without msg.reading/);
    expect(node.writes).toEqual([
      ['plc-1', 'speed-setpoint', 42],
      ['plc-1', 'speed-setpoint', 43],
    ]);
  });

  it('without sources it writes nothing and says what to set; "*" trusts every message', async () => {
    const none = writeNode({ device: 'plc-1', point: 'sp' });
    expect(String(await none.input({ payload: 1, reading: { device: 'plc-1' } }))).toMatch(/name the devices/);
    expect(none.writes).toEqual([]);
    const all = writeNode({ device: 'plc-1', point: 'sp', sources: '*' });
    expect(await all.input({ payload: 1 })).toBeUndefined();
    expect(all.writes).toEqual([['plc-1', 'sp', 1]]);
  });
});
