import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // End-to-end tests start brokers and gateways; two cores run two files at a time.
    maxWorkers: 2,
    reporters: process.env.CI ? ['default'] : ['default'],
  },
});
