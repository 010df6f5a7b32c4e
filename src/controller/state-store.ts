// The state Secret: the one place a connection's refresh token lives. It sits in the operator's
// namespace, which workloads cannot read, and every write carries the resourceVersion that was read
// live just before: the API server's optimistic concurrency is the fencing that leader election
// alone cannot give (an old leader cut off from the API server cannot write past a newer claim).
import * as k8s from '@kubernetes/client-node';
import { createHash } from 'node:crypto';
import type { OAuthConnection } from '../api/v1alpha1.ts';

export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY = 'oauth-token-operator';
export const ROLE_LABEL = 'oauth.token-operator.dev/role';
export const CONNECTION_NAMESPACE_ANNOTATION = 'oauth.token-operator.dev/connection-namespace';
export const CONNECTION_NAME_ANNOTATION = 'oauth.token-operator.dev/connection-name';
export const CONNECTION_UID_ANNOTATION = 'oauth.token-operator.dev/connection-uid';
const STATE_KEY = 'state.json';

/** An in-flight token request, written before the request is sent. */
export interface Claim {
  id: string;
  holder: string;
  startedAtMs: number;
  /** Fingerprint of the refresh token that the request presents. */
  presented?: string;
}

export interface ChainState {
  connectionUID: string;
  refreshToken?: string;
  chainGeneration: number;
  rotations: number;
  /** Fingerprint of the seed last imported; a different seed is a manual re-seed. */
  seedFingerprint?: string;
  claim?: Claim;
  /** Set when the chain is known dead, so its consumed token is never presented again. */
  broken?: {
    reason: string;
    atMs: number;
    /** Safe public detail (the provider's error, sanitised). */ detail?: string;
  };
  accessToken?: string;
  tokenType?: string;
  accessTokenExpiresAtMs?: number;
  issuedAtMs?: number;
  refreshTokenExpiresAtMs?: number;
  /** SAP Concur: the host that answers for this user. */
  geolocation?: string;
  /** The last TOTP time step sent to the provider, so no replica ever sends that code again. */
  totpLastStep?: number;
  /** Implicit mode: no refresh token, a login before each expiry. */
  implicit?: boolean;
}

export interface StoredState {
  state: ChainState;
  resourceVersion: string;
}

export class StateConflictError extends Error {
  readonly code = 'state_conflict';
  constructor() {
    super('the state Secret changed since it was read: another writer is active');
    this.name = 'StateConflictError';
  }
}

export function fingerprint(secret: string): string {
  return createHash('sha256').update(secret).digest('hex').slice(0, 32);
}

/** Deterministic, DNS-safe, and unique per namespace/name even when the two are long. */
export function stateSecretName(namespace: string, name: string): string {
  const plain = `oac-${namespace}.${name}`;
  if (plain.length <= 253) return plain;
  return `oac-${fingerprint(`${namespace}/${name}`)}`;
}

function isNotFound(err: unknown): boolean {
  return err instanceof k8s.ApiException && err.code === 404;
}

function isConflict(err: unknown): boolean {
  return err instanceof k8s.ApiException && (err.code === 409 || err.code === 412);
}

export class StateStore {
  private readonly core: k8s.CoreV1Api;
  private readonly namespace: string;

  constructor(core: k8s.CoreV1Api, namespace: string) {
    this.core = core;
    this.namespace = namespace;
  }

  /** Reads live from the API server, never from a cache: fencing needs the current resourceVersion. */
  async read(connection: OAuthConnection): Promise<StoredState | undefined> {
    const name = stateSecretName(connection.metadata.namespace, connection.metadata.name);
    let secret: k8s.V1Secret;
    try {
      secret = await this.core.readNamespacedSecret({ name, namespace: this.namespace });
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
    const raw = secret.data?.[STATE_KEY];
    const state = raw ? (JSON.parse(Buffer.from(raw, 'base64').toString('utf8')) as ChainState) : undefined;
    return {
      state: state ?? { connectionUID: '', chainGeneration: 0, rotations: 0 },
      resourceVersion: secret.metadata?.resourceVersion ?? '',
    };
  }

  /**
   * Writes the state with the resourceVersion it was read at (create when there was none).
   * Throws StateConflictError when anyone else wrote in between.
   */
  async write(
    connection: OAuthConnection,
    state: ChainState,
    resourceVersion: string | undefined,
  ): Promise<string> {
    const name = stateSecretName(connection.metadata.namespace, connection.metadata.name);
    const body: k8s.V1Secret = {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'Opaque',
      metadata: {
        name,
        namespace: this.namespace,
        labels: { [MANAGED_BY_LABEL]: MANAGED_BY, [ROLE_LABEL]: 'state' },
        annotations: {
          [CONNECTION_NAMESPACE_ANNOTATION]: connection.metadata.namespace,
          [CONNECTION_NAME_ANNOTATION]: connection.metadata.name,
          [CONNECTION_UID_ANNOTATION]: connection.metadata.uid ?? '',
        },
        ...(resourceVersion ? { resourceVersion } : {}),
      },
      data: { [STATE_KEY]: Buffer.from(JSON.stringify(state)).toString('base64') },
    };
    try {
      const written = resourceVersion
        ? await this.core.replaceNamespacedSecret({ name, namespace: this.namespace, body })
        : await this.core.createNamespacedSecret({ namespace: this.namespace, body });
      return written.metadata?.resourceVersion ?? '';
    } catch (err) {
      if (isConflict(err)) throw new StateConflictError();
      throw err;
    }
  }

  async delete(namespace: string, name: string): Promise<void> {
    try {
      await this.core.deleteNamespacedSecret({
        name: stateSecretName(namespace, name),
        namespace: this.namespace,
      });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
}
