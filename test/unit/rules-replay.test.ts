import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../runtime/config/load.js';
import { replay } from '../../runtime/rules-test.js';

describe('outpost rules test (replay)', () => {
  it('closes what is still open at the end, count windows included, and names refused lines', () => {
    const config = parseConfig({
      gateway: { id: 'g' },
      cloud: { url: 'mqtt://127.0.0.1:1' },
      storage: { path: 'x.db' },
      rules: [
        { id: 'c', type: 'window', kind: 'count', count: 10, aggregates: ['count', 'sum'] },
        { id: 't', type: 'window', windowMs: 1000, aggregates: ['count'] },
      ],
    });
    const lines = [1, 2, 3].map((v, i) => JSON.stringify({ device: 'm', point: 'p', value: v, ts: 1000 + i * 100 }));
    lines.splice(1, 0, '{"device":"m","point":"p","value":{"nested":1}}');
    const out: string[] = [];
    const problems: string[] = [];
    const r = replay(config, lines, (l) => out.push(l), (p) => problems.push(p));
    const got = out.map((l) => JSON.parse(l) as { reading: { point: string; value: number; rule: string } }).map((o) => [o.reading.rule, o.reading.point, o.reading.value]);
    expect(got).toEqual([
      ['t', 'p.count', 3],
      ['c', 'p.count', 3],
      ['c', 'p.sum', 6],
    ]);
    expect(r).toMatchObject({ readings: 3, outputs: 3, badLines: 1 });
    expect(problems).toEqual([expect.stringMatching(/^line 2: value: /) as unknown]);
  });
});
