// Reading what an operator process logged about one connection, and making it look at a
// connection again: the observable state the integration files wait on instead of sleeping.
import * as k8s from '@kubernetes/client-node';
import { waitFor } from './builders.ts';
import { GROUP, PLURAL, VERSION, isApiError } from './kube.ts';

const POKE_FINALIZER = 'test.oauth.token-operator.dev/poke';

/** The operator's JSON log records about one connection. */
export function connectionRecords(
  lines: readonly string[],
  namespace: string,
  name: string,
): Record<string, unknown>[] {
  return lines.flatMap((line) => {
    try {
      const record = JSON.parse(line) as Record<string, unknown>;
      return record.namespace === namespace && record.name === name ? [record] : [];
    } catch {
      return [];
    }
  });
}

/** The chain engine's decisions for one connection, in order (decide.ts action kinds). */
export function chainDecisions(lines: readonly string[], namespace: string, name: string): string[] {
  return connectionRecords(lines, namespace, name)
    .filter((r) => r.msg === 'chain decision')
    .map((r) => String(r.action));
}

/**
 * Makes the operator look at the connection again without lifting its backoff, and returns the
 * decisions it then made: the proof that a failure is not retried in a loop, observed rather than
 * slept on. A finalizer of another controller, added and removed, is such a change: the operator
 * reconciles on a change of finalizers (an annotation would not wake it), while neither the spec
 * generation nor an input Secret changes.
 */
export async function pokeConnection(
  kc: k8s.KubeConfig,
  lines: readonly string[],
  namespace: string,
  name: string,
): Promise<string[]> {
  const decisions = (): string[] => chainDecisions(lines, namespace, name);
  const before = decisions().length;
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const object = { group: GROUP, version: VERSION, namespace, plural: PLURAL, name };
  const setPoke = async (on: boolean): Promise<void> => {
    const current = (await custom.getNamespacedCustomObject(object)) as {
      metadata: { finalizers?: string[]; resourceVersion?: string };
    };
    const others = (current.metadata.finalizers ?? []).filter((f) => f !== POKE_FINALIZER);
    await custom.patchNamespacedCustomObject(
      {
        ...object,
        body: {
          metadata: {
            resourceVersion: current.metadata.resourceVersion,
            finalizers: on ? [...others, POKE_FINALIZER] : others,
          },
        },
      },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
  };
  for (const on of [true, false]) {
    const seen = decisions().length;
    // The finalizer list is patched on the version just read, so that another finalizer is never
    // lost; a status write by the operator in between is a 409, and the patch is made again.
    await waitFor(
      `${name}: the poke patched`,
      async () => {
        try {
          await setPoke(on);
          return true;
        } catch (err) {
          if (isApiError(err, 409)) return false;
          throw err;
        }
      },
      10_000,
      50,
    );
    await waitFor(`${name}: a decision after the poke`, () => decisions().length > seen, 30_000, 100);
  }
  return decisions().slice(before);
}
