import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    setupFiles: ['test/setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // tfjs backends and gRPC servers are process-global; forks keep suites isolated.
    pool: 'forks',
  },
});
