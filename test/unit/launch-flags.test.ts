import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { GATEWAY_ENV, GATEWAY_NODE_FLAGS } from '../../runtime/launch-flags.js';

describe('gateway launch flags', () => {
  it('the outpost command starts node with the same heap settings and environment the tests and benchmarks use', () => {
    const shebang = readFileSync('runtime/cli.ts', 'utf8').split('\n')[0];
    const env = Object.entries(GATEWAY_ENV).map(([k, v]) => `${k}=${v}`);
    expect(shebang).toBe(`#!/usr/bin/env -S ${[...env, 'node', ...GATEWAY_NODE_FLAGS].join(' ')}`);
  });
});
