// Status writes of one reconcile, fenced: every patch carries the resourceVersion of the connection
// the reconcile read live (or of its own last write), so a replica that is no longer the writer,
// or that decided from an older view, gets a 409 instead of overwriting the current writer's status.
// Events go out only after the status write they belong to succeeded, so they too come only from
// the current writer. The connection object read at the start is never modified.
import * as k8s from '@kubernetes/client-node';
import { GROUP, PLURAL, VERSION, type OAuthConnection, type OAuthConnectionStatus } from '../api/v1alpha1.ts';
import type { EventRecorder } from '../observability/events.ts';
import { sameStatus, statusPatch, type Decision } from './status.ts';

/** The connection changed since this reconcile read it: someone else wrote, so this reconcile stops. */
export class StatusConflictError extends Error {
  readonly code = 'status_conflict';
  constructor() {
    super('the connection changed since it was read; not writing a status decided from an older view');
    this.name = 'StatusConflictError';
  }
}

export type StatusEvent = NonNullable<Decision['event']>;

export class StatusWriter {
  private readonly custom: k8s.CustomObjectsApi;
  private readonly events: EventRecorder;
  private readonly connection: OAuthConnection;
  private resourceVersion: string | undefined;
  private written: OAuthConnectionStatus;

  constructor(custom: k8s.CustomObjectsApi, events: EventRecorder, connection: OAuthConnection) {
    this.custom = custom;
    this.events = events;
    this.connection = connection;
    this.resourceVersion = connection.metadata.resourceVersion;
    this.written = structuredClone(connection.status ?? {});
  }

  /** A copy of the status as last read or written, for the next decision to start from. */
  get current(): OAuthConnectionStatus {
    return structuredClone(this.written);
  }

  /**
   * Writes the status when it changed, then records the event. Throws StatusConflictError when the
   * connection changed since it was read (nothing is written, no event recorded).
   */
  async write(next: OAuthConnectionStatus, event?: StatusEvent): Promise<void> {
    if (!sameStatus(this.written, next)) {
      const { namespace, name } = this.connection.metadata;
      let updated: unknown;
      try {
        updated = await this.custom.patchNamespacedCustomObjectStatus(
          {
            group: GROUP,
            version: VERSION,
            namespace,
            plural: PLURAL,
            name,
            body: {
              metadata: { resourceVersion: this.resourceVersion },
              status: statusPatch(this.written, next),
            },
          },
          k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
        );
      } catch (err) {
        if (err instanceof k8s.ApiException && err.code === 409) throw new StatusConflictError();
        if (err instanceof k8s.ApiException && err.code === 404) return;
        throw err;
      }
      this.resourceVersion = (updated as { metadata?: { resourceVersion?: string } }).metadata
        ?.resourceVersion;
      this.written = structuredClone(next);
    }
    if (event !== undefined) this.record(event);
  }

  /** An Event about the connection, for outcomes that change no status. */
  record(event: StatusEvent): void {
    const { namespace, name, uid } = this.connection.metadata;
    this.events.record({ namespace, name, ...(uid ? { uid } : {}) }, event.type, event.reason, event.message);
  }
}
