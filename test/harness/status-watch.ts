// Records every status a connection goes through, from a watch on the API server: a poll can miss a
// state that lasts less than its interval (ChainBroken=True during a recovery that succeeds within
// one reconcile), a watch sees every write.
//
// A watch can end under the recorder (the connection dropped, the API server stopped, an ERROR
// event). Everything written after that is missing, so "no status had ChainBroken=True" would hold
// for want of looking. The recorder therefore remembers a watch that ended before stop(), and every
// read of what it recorded (observed, with) throws from then on: a test cannot pass on a dead watch.
import * as k8s from '@kubernetes/client-node';
import { waitFor, type ConnectionStatus } from './builders.ts';
import { GROUP, PLURAL, VERSION } from './kube.ts';

export interface ObservedStatus {
  /** Date.now() when the watch delivered it. */
  at: number;
  status: ConnectionStatus;
}

export class StatusRecorder {
  private readonly seen: ObservedStatus[] = [];
  private request: { abort(): void } | undefined;
  private stopped = false;
  /** Why the watch ended before stop(), and when; undefined while it is alive (or stopped by us). */
  private died: { at: number; why: string } | undefined;
  private readonly startedAt = Date.now();
  private readonly what: string;

  private constructor(what: string) {
    this.what = what;
  }

  /** Starts watching; throws when the watch cannot be opened (the API server refused it). */
  static async start(kc: k8s.KubeConfig, namespace: string, name: string): Promise<StatusRecorder> {
    const recorder = new StatusRecorder(`${namespace}/${name}`);
    recorder.request = await new k8s.Watch(kc).watch(
      `/apis/${GROUP}/${VERSION}/namespaces/${namespace}/${PLURAL}`,
      { fieldSelector: `metadata.name=${name}` },
      (type: string, object: { status?: ConnectionStatus; message?: string }) => {
        // An ERROR event carries a Status object, not the connection, and the API server closes
        // the watch after it.
        if (type === 'ERROR') {
          recorder.end(`an ERROR event: ${object.message ?? 'no message'}`);
          return;
        }
        recorder.seen.push({ at: Date.now(), status: object.status ?? {} });
      },
      (err: unknown) => {
        recorder.end(err instanceof Error ? err.message : 'the stream closed');
      },
    );
    // client-node reports a refused watch (a non-200 answer) through the done callback only.
    recorder.assertAlive();
    return recorder;
  }

  private end(why: string): void {
    if (this.stopped || this.died !== undefined) return;
    this.died = { at: Date.now(), why };
  }

  private assertAlive(): void {
    if (this.died === undefined) return;
    throw new Error(
      `the status watch of ${this.what} ended ${String(this.died.at - this.startedAt)} ms after it started, ` +
        `before stop() (${this.died.why}): statuses written after that were not seen`,
    );
  }

  /** Every status seen so far, oldest first. Throws when the watch ended before stop(). */
  get observed(): readonly ObservedStatus[] {
    this.assertAlive();
    return this.seen;
  }

  /**
   * Waits until the watch has delivered a status that `matches`. The watch delivers every status in
   * order, but on a connection of its own that may lag a poll: once it has delivered one the poll
   * saw, every status written before that one has been recorded too.
   */
  async delivered(what: string, matches: (status: ConnectionStatus) => boolean): Promise<void> {
    await waitFor(
      `the status watch to deliver ${what}`,
      () => this.observed.some((o) => matches(o.status)),
      10_000,
      20,
    );
  }

  /** The statuses seen so far in which `type` had `status`. Throws when the watch ended before stop(). */
  with(type: string, status: 'True' | 'False'): ObservedStatus[] {
    return this.observed.filter((o) =>
      o.status.conditions?.some((c) => c.type === type && c.status === status),
    );
  }

  /**
   * Ends the watch. It does not throw, so that it can sit in cleanup code; what was recorded stays
   * readable, unless the watch had already died on its own.
   */
  stop(): void {
    this.stopped = true;
    this.request?.abort();
  }
}
