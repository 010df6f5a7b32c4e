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
          // Integration files share one API server but each has its own namespaces, operators (each
          // watching only its namespaces) and providers, so they are independent. They spend most of
          // their time waiting on compressed provider clocks, so three run side by side even on two
          // cores; more would make the timing of Keycloak's start-up and the leader-election bounds
          // depend on the machine.
          fileParallelism: true,
          maxWorkers: 3,
          testTimeout: 120_000,
          hookTimeout: 600_000,
        },
      },
    ],
  },
});
