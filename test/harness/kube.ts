// Small helpers for integration tests that talk to the real API server.
import * as k8s from '@kubernetes/client-node';
import { readFileSync, readdirSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { randomBytes } from 'node:crypto';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export const GROUP = 'oauth.token-operator.dev';
export const VERSION = 'v1alpha1';
export const PLURAL = 'oauthconnections';

export function loadKubeConfig(path: string): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(path);
  return kc;
}

export function readYamlDocuments(path: string): Record<string, unknown>[] {
  return parseAllDocuments(readFileSync(path, 'utf8'))
    .map((doc) => doc.toJS() as Record<string, unknown> | null)
    .filter((doc): doc is Record<string, unknown> => doc !== null);
}

export function crdDocuments(): k8s.V1CustomResourceDefinition[] {
  const dir = join(repoRoot, 'crds');
  return (
    readdirSync(dir)
      .filter((f) => f.endsWith('.yaml'))
      // loadAllYaml turns wire names (enum, default, x-kubernetes-validations) into client-node's model
      // names; a plain object would lose them when the typed API serializes it.
      .flatMap((f) => k8s.loadAllYaml(readFileSync(join(dir, f), 'utf8')) as k8s.V1CustomResourceDefinition[])
  );
}

export function isApiError(err: unknown, code?: number): err is k8s.ApiException<string> {
  return err instanceof k8s.ApiException && (code === undefined || err.code === code);
}

/** Creates or replaces every CRD in crds/ and waits until the server serves them. */
export async function applyCRDs(kc: k8s.KubeConfig): Promise<void> {
  const api = kc.makeApiClient(k8s.ApiextensionsV1Api);
  for (const crd of crdDocuments()) {
    const name = crd.metadata?.name ?? '';
    try {
      await api.createCustomResourceDefinition({ body: crd });
    } catch (err) {
      if (!isApiError(err, 409)) throw err;
      // Integration files run side by side and each applies the CRDs: a replace that lost to another
      // file's (409) reads the new version and replaces again; the content is the same.
      for (let attempt = 1; ; attempt++) {
        const current = await api.readCustomResourceDefinition({ name });
        crd.metadata ??= {};
        crd.metadata.resourceVersion = current.metadata?.resourceVersion;
        try {
          await api.replaceCustomResourceDefinition({ name, body: crd });
          break;
        } catch (replaceErr) {
          if (!isApiError(replaceErr, 409) || attempt >= 10) throw replaceErr;
        }
      }
    }
    const deadline = Date.now() + 60_000;
    for (;;) {
      const current = await api.readCustomResourceDefinition({ name });
      if (current.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True')) break;
      if (Date.now() > deadline) throw new Error(`CRD ${name} not established within 60s`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

export async function createNamespace(kc: k8s.KubeConfig, prefix: string): Promise<string> {
  const name = `${prefix}-${randomBytes(3).toString('hex')}`;
  await kc.makeApiClient(k8s.CoreV1Api).createNamespace({ body: { metadata: { name } } });
  return name;
}

/**
 * A kubeconfig that authenticates as a ServiceAccount with a real token from the TokenRequest API,
 * exactly as a pod would, so that RBAC is tested with the operator's own identity.
 */
export async function serviceAccountKubeConfig(
  admin: k8s.KubeConfig,
  namespace: string,
  name: string,
): Promise<k8s.KubeConfig> {
  const core = admin.makeApiClient(k8s.CoreV1Api);
  try {
    await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name } } });
  } catch (err) {
    if (!isApiError(err, 409)) throw err;
  }
  const tokenRequest = await core.createNamespacedServiceAccountToken({
    name,
    namespace,
    body: { spec: { audiences: [], expirationSeconds: 3600 } },
  });
  const token = tokenRequest.status?.token;
  if (!token) throw new Error('TokenRequest returned no token');
  const cluster = admin.getCurrentCluster();
  if (!cluster) throw new Error('admin kubeconfig has no current cluster');
  const kc = new k8s.KubeConfig();
  kc.loadFromOptions({
    clusters: [cluster],
    users: [{ name, token }],
    contexts: [{ name, cluster: cluster.name, user: name, namespace }],
    currentContext: name,
  });
  return kc;
}
