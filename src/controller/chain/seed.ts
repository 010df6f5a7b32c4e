// The consumed-by mark on a seed Secret: which connection imported which refresh token. It lives on
// the user's Secret, beside the token, so it survives the state Secret; a connection presents a
// seed's token only once the mark names it, and a second connection naming the same seed is refused.
import * as k8s from '@kubernetes/client-node';
import { fingerprint } from '../state-store.ts';
import type { VersionedSecretValue } from '../inputs.ts';
import type { SeedView } from './decide.ts';

export const SEED_CONSUMED_ANNOTATION = 'oauth.token-operator.dev/consumed-by';

/** The seed as the decision sees it: its fingerprint and the mark, if any (`<connection uid>:<fingerprint>`). */
export function seedView(seed: VersionedSecretValue): SeedView {
  const view: SeedView = { fingerprint: fingerprint(seed.value) };
  const mark = /^([^:\s]{1,64}):([0-9a-f]{32})$/.exec(seed.annotations[SEED_CONSUMED_ANNOTATION] ?? '');
  if (mark?.[1] !== undefined && mark[2] !== undefined)
    view.consumedBy = { uid: mark[1], fingerprint: mark[2] };
  return view;
}

export type MarkOutcome = 'marked' | 'changed' | 'forbidden';

/** The seed Secret's annotations once it is marked consumed by a connection. */
export function withConsumedMark(seed: VersionedSecretValue, connectionUID: string): Record<string, string> {
  return { ...seed.annotations, [SEED_CONSUMED_ANNOTATION]: consumedMark(seed, connectionUID) };
}

function consumedMark(seed: VersionedSecretValue, connectionUID: string): string {
  return `${connectionUID}:${fingerprint(seed.value)}`;
}

/**
 * Marks the seed consumed by a connection, conditional on the version that was read: 'changed'
 * when the Secret changed since (read it again and decide again), 'forbidden' when the operator
 * may not patch it.
 */
export async function markSeedConsumed(
  core: k8s.CoreV1Api,
  namespace: string,
  seed: VersionedSecretValue,
  connectionUID: string,
): Promise<MarkOutcome> {
  try {
    await core.patchNamespacedSecret(
      {
        name: seed.name,
        namespace,
        body: {
          metadata: {
            resourceVersion: seed.resourceVersion,
            annotations: { [SEED_CONSUMED_ANNOTATION]: consumedMark(seed, connectionUID) },
          },
        },
      },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
    return 'marked';
  } catch (err) {
    if (err instanceof k8s.ApiException && (err.code === 409 || err.code === 404)) return 'changed';
    if (err instanceof k8s.ApiException && err.code === 403) return 'forbidden';
    throw err;
  }
}
