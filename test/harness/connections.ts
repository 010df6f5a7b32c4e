// The shorthands an integration file uses for the connections of its namespace: their status, a
// wait on it, a spec patch, and what the operator logged about them. The file's admin config,
// namespace and operator are set in beforeAll, so they are read when a shorthand is called.
import * as k8s from '@kubernetes/client-node';
import { getConnectionStatus, untilStatus, type ConnectionStatus } from './builders.ts';
import { GROUP, PLURAL, VERSION } from './kube.ts';
import { connectionRecords, pokeConnection } from './operator-log.ts';

export interface ConnectionsScope {
  admin: k8s.KubeConfig;
  namespace: string;
  /** The log lines of the operator that reconciles them (records, failedRequests, poke). */
  lines?: readonly string[];
}

export interface ConnectionShorthands {
  status: (name: string) => Promise<ConnectionStatus>;
  until: (
    name: string,
    what: string,
    check: (s: ConnectionStatus) => boolean,
    timeoutMs?: number,
  ) => Promise<ConnectionStatus>;
  patchSpec: (name: string, spec: Record<string, unknown>) => Promise<void>;
  records: (name: string) => Record<string, unknown>[];
  failedRequests: (name: string) => Record<string, unknown>[];
  poke: (name: string) => Promise<string[]>;
}

/** Shorthands bound to `scope()`, which is read at each call; `pollMs` is untilStatus's interval. */
export function connectionsOf(scope: () => ConnectionsScope, pollMs?: number): ConnectionShorthands {
  const lines = (): readonly string[] => {
    const { lines } = scope();
    if (lines === undefined) throw new Error('no operator log in this scope');
    return lines;
  };
  const records = (name: string): Record<string, unknown>[] =>
    connectionRecords(lines(), scope().namespace, name);
  return {
    status: (name) => getConnectionStatus(scope().admin, scope().namespace, name),
    until: (name, what, check, timeoutMs) =>
      untilStatus(scope().admin, scope().namespace, name, what, check, timeoutMs, pollMs),
    patchSpec: async (name, spec) => {
      const { admin, namespace } = scope();
      await admin
        .makeApiClient(k8s.CustomObjectsApi)
        .patchNamespacedCustomObject(
          { group: GROUP, version: VERSION, namespace, plural: PLURAL, name, body: { spec } },
          k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
        );
    },
    records,
    failedRequests: (name) => records(name).filter((r) => r.msg === 'token request failed'),
    poke: (name) => pokeConnection(scope().admin, lines(), scope().namespace, name),
  };
}
