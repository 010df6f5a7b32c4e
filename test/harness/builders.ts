// Small builders for the resources integration tests create.
import * as k8s from '@kubernetes/client-node';
import { GROUP, isApiError, PLURAL, VERSION } from './kube.ts';

export interface ConnectionOverrides {
  provider?: Record<string, unknown>;
  grant?: Record<string, unknown>;
  refresh?: Record<string, unknown>;
  output?: Record<string, unknown>;
  spec?: Record<string, unknown>;
}

/** A refresh-token connection against a generic OIDC issuer, with the usual Secret names. */
export function connection(
  namespace: string,
  name: string,
  issuer: string,
  overrides: ConnectionOverrides = {},
) {
  return {
    apiVersion: `${GROUP}/${VERSION}`,
    kind: 'OAuthConnection',
    metadata: { name, namespace },
    spec: {
      provider: { issuerURL: issuer, ...overrides.provider },
      clientID: 'operator',
      clientSecretRef: { name: 'client' },
      grant: { type: 'refreshToken', seedSecretRef: { name: `${name}-seed` }, ...overrides.grant },
      ...(overrides.refresh ? { refresh: overrides.refresh } : {}),
      output: { secretName: `${name}-token`, ...overrides.output },
      ...overrides.spec,
    },
  };
}

export async function createConnection(
  kc: k8s.KubeConfig,
  body: ReturnType<typeof connection>,
): Promise<void> {
  await kc.makeApiClient(k8s.CustomObjectsApi).createNamespacedCustomObject({
    group: GROUP,
    version: VERSION,
    namespace: body.metadata.namespace,
    plural: PLURAL,
    body,
  });
}

/** Deletes a connection and waits until it is gone, i.e. until the operator's finalizer has run. */
export async function deleteConnection(kc: k8s.KubeConfig, namespace: string, name: string): Promise<void> {
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const ref = { group: GROUP, version: VERSION, namespace, plural: PLURAL, name };
  await custom.deleteNamespacedCustomObject(ref);
  await waitFor(`${namespace}/${name} to be gone (the finalizer ran)`, async () => {
    try {
      await custom.getNamespacedCustomObject(ref);
      return false;
    } catch (err) {
      return isApiError(err, 404);
    }
  });
}

export interface ConnectionStatus {
  conditions?: {
    type: string;
    status: string;
    reason: string;
    message: string;
    lastTransitionTime: string;
  }[];
  rotations?: number;
  chainGeneration?: number;
  failedAttempts?: number;
  accessTokenExpiresAt?: string;
  nextRefreshTime?: string;
  lastRefreshTime?: string;
  observedGeneration?: number;
  lastFailureTime?: string;
  lastRecoveryTime?: string;
  refreshTokenExpiresAt?: string;
  tokenEndpoint?: string;
  loginAttempts?: string[];
}

export async function getConnectionStatus(
  kc: k8s.KubeConfig,
  namespace: string,
  name: string,
): Promise<ConnectionStatus> {
  const object = (await kc.makeApiClient(k8s.CustomObjectsApi).getNamespacedCustomObject({
    group: GROUP,
    version: VERSION,
    namespace,
    plural: PLURAL,
    name,
  })) as { status?: ConnectionStatus };
  return object.status ?? {};
}

export function condition(status: ConnectionStatus, type: string) {
  return status.conditions?.find((c) => c.type === type);
}

/** Whether the connection says its output Secret holds a valid token (Ready=True). */
export const ready = (s: ConnectionStatus): boolean => condition(s, 'Ready')?.status === 'True';

/** The reasons of the Events recorded for an object of the namespace, by its name. */
export async function eventReasons(kc: k8s.KubeConfig, namespace: string, name: string): Promise<string[]> {
  const events = await kc.makeApiClient(k8s.CoreV1Api).listNamespacedEvent({ namespace });
  return events.items.filter((e) => e.involvedObject.name === name).map((e) => e.reason ?? '');
}

/**
 * A run's polled statuses held against "Ready throughout": the index of the first Ready one (-1
 * when none), the Ready conditions of those after it that are not Ready, and the statuses with
 * Degraded or ChainBroken True. Each list is empty for a run without trouble.
 */
export function healthOf(polled: readonly ConnectionStatus[]) {
  const firstReady = polled.findIndex(ready);
  return {
    firstReady,
    notReadyAfter: polled
      .slice(firstReady)
      .filter((s) => !ready(s))
      .map((s) => condition(s, 'Ready')),
    degraded: polled.filter((s) => condition(s, 'Degraded')?.status === 'True'),
    chainBroken: polled.filter((s) => condition(s, 'ChainBroken')?.status === 'True'),
  };
}

export async function createSecret(
  kc: k8s.KubeConfig,
  namespace: string,
  name: string,
  data: Record<string, string>,
  metadata: Partial<k8s.V1ObjectMeta> = {},
): Promise<void> {
  await kc.makeApiClient(k8s.CoreV1Api).createNamespacedSecret({
    namespace,
    body: { metadata: { name, namespace, ...metadata }, type: 'Opaque', stringData: data },
  });
}

export async function readSecretData(
  kc: k8s.KubeConfig,
  namespace: string,
  name: string,
): Promise<Record<string, string> | undefined> {
  try {
    const secret = await kc.makeApiClient(k8s.CoreV1Api).readNamespacedSecret({ name, namespace });
    return Object.fromEntries(
      Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]),
    );
  } catch (err) {
    if (err instanceof k8s.ApiException && err.code === 404) return undefined;
    throw err;
  }
}

/** Polls until the check returns a value (not undefined/false), or fails with the last error. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 30_000,
  intervalMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${lastError instanceof Error ? `: ${lastError.message}` : ''}`,
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export interface SeenToken {
  token: string;
  expiresAt: number;
  seenAt: number;
}

/** Watches an output Secret and records each new access token with when it was seen. */
export class OutputTokenWatcher {
  readonly seen: SeenToken[] = [];
  private readonly kc: k8s.KubeConfig;
  private readonly namespace: string;
  private readonly secretName: string;
  private readonly onNew: ((token: string) => Promise<void> | void) | undefined;

  constructor(
    kc: k8s.KubeConfig,
    namespace: string,
    secretName: string,
    onNew?: (token: string) => Promise<void> | void,
  ) {
    this.kc = kc;
    this.namespace = namespace;
    this.secretName = secretName;
    this.onNew = onNew;
  }

  /** Reads the Secret once; returns how many distinct tokens have been seen. */
  async poll(): Promise<number> {
    const data = await readSecretData(this.kc, this.namespace, this.secretName);
    const token = data?.access_token;
    if (token && token !== this.seen.at(-1)?.token) {
      const seenAt = Date.now();
      await this.onNew?.(token);
      this.seen.push({ token, expiresAt: Date.parse(data.expires_at ?? ''), seenAt });
    }
    return this.seen.length;
  }

  /** Waits until at least `count` distinct tokens have been seen. */
  async waitForTokens(count: number, timeoutMs: number): Promise<void> {
    await waitFor(
      `${String(count)} access tokens in ${this.secretName}`,
      async () => (await this.poll()) >= count,
      timeoutMs,
      100,
    );
  }

  /** Rotations that reached the Secret only after the previous token had expired (should be none). */
  lateRotations(): string[] {
    const late: string[] = [];
    for (let i = 1; i < this.seen.length; i++) {
      const previous = this.seen[i - 1];
      const current = this.seen[i];
      if (previous && current && current.seenAt >= previous.expiresAt) {
        late.push(
          `token ${String(i)} appeared ${String(current.seenAt - previous.expiresAt)} ms after the previous one expired`,
        );
      }
    }
    return late;
  }
}

/** Polls a connection's status every `intervalMs` until `check` holds; the status that passed. */
export async function untilStatus(
  kc: k8s.KubeConfig,
  namespace: string,
  name: string,
  what: string,
  check: (s: ConnectionStatus) => boolean,
  timeoutMs = 60_000,
  intervalMs = 100,
): Promise<ConnectionStatus> {
  return waitFor(
    `${name}: ${what}`,
    async () => {
      const s = await getConnectionStatus(kc, namespace, name);
      return check(s) ? s : undefined;
    },
    timeoutMs,
    intervalMs,
  );
}
