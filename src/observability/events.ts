// Kubernetes Events for transitions a person should see in `kubectl describe`. Messages come from
// the controller's safe public messages only. Identical events for one object are aggregated by
// bumping the count of the previous one, as client-go's recorder does, so a flapping connection
// cannot flood etcd.
import * as k8s from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import type { Clock } from '../kube/clock.ts';
import { API_VERSION, KIND } from '../api/v1alpha1.ts';
import type { Logger } from './log.ts';
import { errorFields } from './log.ts';

export type EventType = 'Normal' | 'Warning';

export interface EventTarget {
  namespace: string;
  name: string;
  uid?: string;
}

export interface EventRecorder {
  record(target: EventTarget, type: EventType, reason: string, message: string): void;
}

interface Recent {
  eventName: string;
  count: number;
  firstTimestamp: Date;
}

export class KubeEventRecorder implements EventRecorder {
  private readonly recent = new Map<string, Recent>();

  private readonly core: k8s.CoreV1Api;
  private readonly component: string;
  private readonly clock: Clock;
  private readonly log: Logger;

  constructor(core: k8s.CoreV1Api, component: string, clock: Clock, log: Logger) {
    this.core = core;
    this.component = component;
    this.clock = clock;
    this.log = log;
  }

  record(target: EventTarget, type: EventType, reason: string, message: string): void {
    void this.write(target, type, reason, message.slice(0, 1024)).catch((err: unknown) => {
      this.log.warn({ ...errorFields(err), reason }, 'could not record event');
    });
  }

  private async write(target: EventTarget, type: EventType, reason: string, message: string): Promise<void> {
    const key = `${target.namespace}/${target.name}/${type}/${reason}/${message}`;
    const now = new Date(this.clock.now());
    const previous = this.recent.get(key);
    if (previous) {
      previous.count += 1;
      try {
        await this.core.patchNamespacedEvent(
          {
            name: previous.eventName,
            namespace: target.namespace,
            body: { count: previous.count, lastTimestamp: now },
          },
          k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
        );
        return;
      } catch {
        this.recent.delete(key);
      }
    }
    const eventName = `${target.name.slice(0, 200)}.${randomBytes(8).toString('hex')}`;
    await this.core.createNamespacedEvent({
      namespace: target.namespace,
      body: {
        metadata: { name: eventName, namespace: target.namespace },
        involvedObject: {
          apiVersion: API_VERSION,
          kind: KIND,
          name: target.name,
          namespace: target.namespace,
          ...(target.uid ? { uid: target.uid } : {}),
        },
        type,
        reason,
        message,
        count: 1,
        firstTimestamp: now,
        lastTimestamp: now,
        source: { component: this.component },
        reportingComponent: this.component,
        reportingInstance: this.component,
      },
    });
    if (this.recent.size > 4096) this.recent.clear();
    this.recent.set(key, { eventName, count: 1, firstTimestamp: now });
  }
}
