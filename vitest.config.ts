import { defineConfig } from 'vitest/config';

// OUTPOST_TEST_REPORT=FILE: also write the results as JSON there (.ci/run prints the totals from it).
const report = process.env.OUTPOST_TEST_REPORT;

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // End-to-end tests start brokers and gateways; two cores run two files at a time.
    maxWorkers: 2,
    reporters: report ? ['default', 'json'] : ['default'],
    ...(report ? { outputFile: { json: report } } : {}),
  },
});
