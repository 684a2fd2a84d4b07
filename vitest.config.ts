import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts', 'test/integration/**/*.test.ts', 'generated/tests/**/*.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // The declared-codes contract (src/rpc/error-check.ts), for in-process servers and the
    // daemons and helpers the tests spawn (they inherit the environment).
    env: { BANGER_CHECK_ERROR_CODES: '1' },
    setupFiles: ['test/helpers/error-codes-setup.ts'],
  },
});
