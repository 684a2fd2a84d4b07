import { defineConfig } from 'vitest/config';

// Real VMs under TCG: long timeouts, one file at a time. Files share one daemon, and some scenarios
// act on all of it (daemon_restart restarts it; vm_prune deletes every stopped VM), so files must
// not overlap; within a file, scenarios share VMs to keep the number of boots small.
// List the scenarios with `npm run smoke:list`; run one with `npm run smoke -- -t ID`.
// The declared-codes contract (src/rpc/error-check.ts): set here, in the main process, so the
// daemon and helper global-setup starts inherit it; global-setup fails the run on a breach.
process.env.BANGER_CHECK_ERROR_CODES ??= '1';

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
