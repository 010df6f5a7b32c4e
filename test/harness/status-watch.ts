// Records every status a connection goes through, from a watch on the API server: a poll can miss a
// state that lasts less than its interval (ChainBroken=True during a recovery that succeeds within
// one reconcile), a watch sees every write.
import * as k8s from '@kubernetes/client-node';
import type { ConnectionStatus } from './builders.ts';
import { GROUP, PLURAL, VERSION } from './kube.ts';

export interface ObservedStatus {
  /** Date.now() when the watch delivered it. */
  at: number;
  status: ConnectionStatus;
}

export class StatusRecorder {
  readonly observed: ObservedStatus[] = [];
  private request: { abort(): void } | undefined;

  private constructor() {}

  static async start(kc: k8s.KubeConfig, namespace: string, name: string): Promise<StatusRecorder> {
    const recorder = new StatusRecorder();
    recorder.request = await new k8s.Watch(kc).watch(
      `/apis/${GROUP}/${VERSION}/namespaces/${namespace}/${PLURAL}`,
      { fieldSelector: `metadata.name=${name}` },
      (_type: string, object: { status?: ConnectionStatus }) => {
        recorder.observed.push({ at: Date.now(), status: object.status ?? {} });
      },
      () => undefined,
    );
    return recorder;
  }

  /** The statuses seen so far in which `type` had `status`. */
  with(type: string, status: 'True' | 'False'): ObservedStatus[] {
    return this.observed.filter((o) =>
      o.status.conditions?.some((c) => c.type === type && c.status === status),
    );
  }

  stop(): void {
    this.request?.abort();
  }
}
