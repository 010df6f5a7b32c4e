import { resolve } from 'node:path';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // This file lives in test/; paths below are relative to the repository root.
  root: resolve(import.meta.dirname, '..'),
  test: {
    reporters: ['default', './test/harness/summary-reporter.ts'],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/harness/global-setup.ts'],
          // Integration files share one API server and start real processes; two cores do not gain
          // from running them side by side.
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 600_000,
        },
      },
    ],
  },
});
