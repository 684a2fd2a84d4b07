import { defineConfig } from 'vitest/config';

// Real VMs under TCG: long timeouts, at most two files at once (2 cores).
export default defineConfig({
  test: {
    include: ['test/smoke/**/*.test.ts'],
    testTimeout: 300_000,
    hookTimeout: 900_000,
    pool: 'forks',
    maxWorkers: 1,
    fileParallelism: false,
    globalSetup: ['test/smoke/global-setup.ts'],
  },
});
