import type { TestProject } from 'vitest/node';
import { startControlPlane, type ControlPlane } from './controlplane.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    kubeconfig: string;
    controlPlaneBinary: string;
    kubeServerVersion: string;
  }
}

let controlPlane: ControlPlane | undefined;

export async function setup(project: TestProject): Promise<void> {
  controlPlane = await startControlPlane();
  // Printed so that a CI log shows which real server the integration tests ran against.
  console.log(
    `integration tests run against kube-apiserver ${controlPlane.gitVersion} at ${controlPlane.server}` +
      (controlPlane.local ? ' (local control plane with etcd)' : ' (existing cluster)'),
  );
  project.provide('kubeconfig', controlPlane.kubeconfig);
  project.provide('controlPlaneBinary', controlPlane.binary);
  project.provide('kubeServerVersion', controlPlane.gitVersion);
}

export async function teardown(): Promise<void> {
  await controlPlane?.stop();
}
