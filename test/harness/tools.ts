// External tools some tests use (helm, promtool), found where the install script puts them.
import { accessSync, constants } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';

/** A tool from $ENV_VAR, the install script's cache, or PATH. */
export function findTool(name: string, envVar: string): string | undefined {
  const candidates = [
    process.env[envVar],
    join(homedir(), '.cache/oauth-token-operator/tools/bin', name),
    ...(process.env.PATH ?? '').split(delimiter).map((dir) => join(dir, name)),
  ];
  for (const candidate of candidates) {
    if (!candidate) continue;
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}
