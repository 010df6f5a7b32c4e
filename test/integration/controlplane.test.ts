import * as k8s from '@kubernetes/client-node';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { createNamespace, isApiError, loadKubeConfig, serviceAccountKubeConfig } from '../harness/kube.ts';

describe('the test control plane', () => {
  let admin: k8s.KubeConfig;
  beforeAll(() => {
    admin = loadKubeConfig(inject('kubeconfig'));
  });

  it('is a real kube-apiserver', async () => {
    const version = await admin.makeApiClient(k8s.VersionApi).getCode();
    console.log(`kube-apiserver version ${version.gitVersion} (${version.platform})`);
    expect(version.gitVersion).toBe(inject('kubeServerVersion'));
    expect(version.gitVersion).toMatch(/^v1\.\d+\.\d+/);
  });

  it('denies a ServiceAccount that has no rights (RBAC is on)', async () => {
    const namespace = await createNamespace(admin, 'rbac');
    const nobody = await serviceAccountKubeConfig(admin, namespace, 'no-rights');
    const core = nobody.makeApiClient(k8s.CoreV1Api);
    const error = await core.listNamespacedSecret({ namespace }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(isApiError(error, 403), `expected 403, got ${String(error)}`).toBe(true);
    if (isApiError(error)) {
      expect(error.body).toContain(`system:serviceaccount:${namespace}:no-rights`);
    }
  });

  it('grants a ServiceAccount exactly what a Role gives it', async () => {
    const namespace = await createNamespace(admin, 'rbac');
    const rbac = admin.makeApiClient(k8s.RbacAuthorizationV1Api);
    await rbac.createNamespacedRole({
      namespace,
      body: {
        metadata: { name: 'read-configmaps' },
        rules: [{ apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list'] }],
      },
    });
    await rbac.createNamespacedRoleBinding({
      namespace,
      body: {
        metadata: { name: 'read-configmaps' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'read-configmaps' },
        subjects: [{ kind: 'ServiceAccount', name: 'reader', namespace }],
      },
    });
    const reader = await serviceAccountKubeConfig(admin, namespace, 'reader');
    const core = reader.makeApiClient(k8s.CoreV1Api);
    await expect(core.listNamespacedConfigMap({ namespace })).resolves.toBeDefined();
    const denied = await core.listNamespacedSecret({ namespace }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(isApiError(denied, 403)).toBe(true);
  });
});
