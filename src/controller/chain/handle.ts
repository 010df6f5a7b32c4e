// A fenced handle on one connection's state Secret. It owns the state and the resourceVersion it was
// read at, so no caller ever passes a resourceVersion by hand: every write is conditional on the
// version this handle last read or wrote, and a write that loses that race (409) means another
// writer decided about the chain since.
//
// persist() is for tokens the provider has already issued: losing them breaks the chain, so it
// retries on the injected clock for as long as this replica may still be the writer (the claim in
// the Secret is still ours), re-creates a state Secret that was deleted meanwhile, and reports a
// loss it cannot avoid loudly. Everything else is one attempt.
import * as k8s from '@kubernetes/client-node';
import { randomUUID } from 'node:crypto';
import type { OAuthConnection } from '../../api/v1alpha1.ts';
import { sleep, type Clock } from '../../kube/clock.ts';
import { errorFields, type Logger } from '../../observability/log.ts';
import {
  fingerprint,
  StateConflictError,
  type ChainState,
  type Claim,
  type StateStore,
  type StoredState,
} from '../state-store.ts';

/** The provider's answer could not be stored: another writer took the chain over, or time ran out. */
export class TokensNotPersistedError extends Error {
  readonly code = 'tokens_not_persisted';
  readonly takenOver: boolean;
  constructor(takenOver: boolean) {
    super(
      takenOver
        ? 'the chain was taken over while a refresh was in flight; its result was not written over the newer state'
        : 'the refreshed tokens could not be stored before this replica stopped being the writer',
    );
    this.name = 'TokensNotPersistedError';
    this.takenOver = takenOver;
  }
}

export interface ChainHandleOptions {
  store: StateStore;
  clock: Clock;
  log: Logger;
  /** Whether this replica still holds leadership. */
  isLeader: () => boolean;
  /** How long persist() keeps trying after leadership was lost (the API may be down for everyone). */
  persistBudgetMs: number;
}

const FIRST_RETRY_MS = 200;
const MAX_RETRY_MS = 5_000;

function isNotFound(err: unknown): boolean {
  return err instanceof k8s.ApiException && err.code === 404;
}

export class ChainHandle {
  private readonly options: ChainHandleOptions;
  private readonly connection: OAuthConnection;
  private stored: StoredState | undefined;

  private constructor(
    options: ChainHandleOptions,
    connection: OAuthConnection,
    stored: StoredState | undefined,
  ) {
    this.options = options;
    this.connection = connection;
    this.stored = stored;
  }

  /** Reads the state live (never from a cache): the fence needs the current resourceVersion. */
  static async open(options: ChainHandleOptions, connection: OAuthConnection): Promise<ChainHandle> {
    return new ChainHandle(options, connection, await options.store.read(connection));
  }

  /** The state as last read or written; undefined when there is no state Secret. */
  get state(): ChainState | undefined {
    return this.stored?.state;
  }

  /** One fenced write. Throws StateConflictError when anyone else wrote since this handle last did. */
  async write(next: ChainState): Promise<void> {
    const resourceVersion = await this.options.store.write(
      this.connection,
      next,
      this.stored?.resourceVersion || undefined,
    );
    this.stored = { state: next, resourceVersion };
  }

  /** Writes a claim for a request about to be sent, and returns it. */
  async claim(state: ChainState, holder: string, presented: string | undefined): Promise<Claim> {
    const claim: Claim = {
      id: randomUUID(),
      holder,
      startedAtMs: this.options.clock.now(),
      ...(presented !== undefined ? { presented: fingerprint(presented) } : {}),
    };
    await this.write({ ...state, claim });
    return claim;
  }

  /**
   * Writes what the provider answered to a claimed request. Retries (200 ms doubling to 5 s) until
   * it is written, while the claim in the Secret is still `claimId`; a deleted state Secret is
   * created again. Throws TokensNotPersistedError when another writer replaced the claim, or when
   * this replica has lost leadership and the persist budget since `sinceMs` is spent.
   */
  async persist(next: ChainState, claimId: string, sinceMs: number): Promise<void> {
    const { clock, log } = this.options;
    let delay = FIRST_RETRY_MS;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.write(next);
        return;
      } catch (err) {
        if (err instanceof StateConflictError || isNotFound(err)) {
          const outcome = await this.reread(claimId);
          if (outcome === 'taken-over') throw new TokensNotPersistedError(true);
          if (outcome === 'reread') continue;
        } else {
          log.warn({ ...errorFields(err), attempt }, 'persisting the new tokens failed; retrying');
        }
      }
      if (!this.options.isLeader() && clock.now() - sinceMs > this.options.persistBudgetMs) {
        log.error(
          { attempt },
          'lost leadership and could not store the new tokens in time: the chain is in doubt',
        );
        throw new TokensNotPersistedError(false);
      }
      await sleep(clock, delay);
      delay = Math.min(delay * 2, MAX_RETRY_MS);
    }
  }

  /**
   * After a conflict or a 404: reads the state again. 'reread' when the claim is still ours (or the
   * Secret is gone, which the next write re-creates), 'taken-over' when someone else decided about
   * the chain, 'failed' when the read itself failed (the caller waits and tries again).
   */
  private async reread(claimId: string): Promise<'reread' | 'taken-over' | 'failed'> {
    let current: StoredState | undefined;
    try {
      current = await this.options.store.read(this.connection);
    } catch (err) {
      this.options.log.warn(errorFields(err), 'reading the state Secret failed; retrying');
      return 'failed';
    }
    if (current === undefined) {
      this.options.log.warn('the state Secret vanished while a refresh was in flight; writing it again');
      this.stored = undefined;
      return 'reread';
    }
    if (current.state.claim?.id !== claimId) return 'taken-over';
    this.stored = current;
    return 'reread';
  }
}
