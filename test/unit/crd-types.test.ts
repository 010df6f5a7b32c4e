import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { generate, typesPath } from '../tools/crd-types.ts';

describe('generated API types', () => {
  it('are in step with the CRD schema (run npm run crd:generate after changing the CRD)', async () => {
    expect(readFileSync(typesPath, 'utf8')).toBe(await generate());
  });
});
