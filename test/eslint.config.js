// @ts-check
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import { resolve } from 'node:path';
import tseslint from 'typescript-eslint';

export default defineConfig(
  { ignores: ['node_modules/', 'dist/', 'coverage/', 'charts/', 'test/controlplane/'] },
  js.configs.recommended,
  tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: resolve(import.meta.dirname, '..') },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowNumber: true, allowBoolean: true },
      ],
      // @kubernetes/client-node models are plain data classes that its API accepts as object literals.
      '@typescript-eslint/no-unsafe-class-instance-assignment': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  // Layers point one way: main → controller → oauth, providers, observability → kube, api.
  // Each entry names what a layer must not import; the OAuth layer is reached only through its
  // entry module, so its public surface stays the one documented there.
  ...layer('src/kube/**', ['oauth', 'providers', 'observability', 'controller', 'main']),
  ...layer('src/api/**', ['kube', 'oauth', 'providers', 'observability', 'controller', 'main']),
  ...layer('src/oauth/**', ['api', 'providers', 'observability', 'controller', 'main']),
  ...layer('src/providers/**', ['observability', 'controller', 'main'], { oauthEntryOnly: true }),
  ...layer('src/observability/**', ['oauth', 'providers', 'controller', 'main']),
  ...layer('src/controller/**', ['main'], { oauthEntryOnly: true }),
  ...layer('src/main.ts', [], { oauthEntryOnly: true }),
);

/**
 * A restriction of what files under `files` may import.
 * @param {string} files
 * @param {string[]} forbidden layers: top-level folders of src/, or 'main' for src/main.ts and src/config.ts
 * @param {{ oauthEntryOnly?: boolean }} [options]
 */
function layer(files, forbidden, options = {}) {
  const patterns = forbidden.map((name) => ({
    regex: name === 'main' ? '(^|/)(main|config)\\.ts$' : `(^|/)${name}/`,
    message: `${files} must not import from the ${name} layer (see docs/architecture.md, "Layers").`,
  }));
  if (options.oauthEntryOnly) {
    patterns.push({
      regex: '(^|/)oauth/(?!index\\.ts$)[^/]+$',
      message: 'import the OAuth layer through src/oauth/index.ts, its one public surface.',
    });
  }
  /** @type {import('eslint').Linter.RuleEntry} */
  const rule = ['error', { patterns }];
  return [{ files: [files], rules: { 'no-restricted-imports': rule } }];
}
