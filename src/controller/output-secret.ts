// The output Secret: what pods read. Always Opaque, owned by its connection (so the garbage
// collector removes it with the connection), and never a Secret that someone else owns.
import * as k8s from '@kubernetes/client-node';
import { API_VERSION, KIND, type OAuthConnection } from '../api/v1alpha1.ts';
import { canonicalTokenType } from '../oauth/index.ts';
import { CONNECTION_NAME_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, ROLE_LABEL } from './state-store.ts';

export interface OutputTokens {
  accessToken: string;
  tokenType: string;
  expiresAtMs: number;
}

export class OutputSecretNotOwnedError extends Error {
  readonly code = 'output_not_owned';
  constructor(secretName: string) {
    super(
      `Secret ${secretName} exists and is not owned by this connection; it is left untouched (spec.output.secretName)`,
    );
    this.name = 'OutputSecretNotOwnedError';
  }
}

/** The key/value pairs of the output Secret, as the connection's spec.output asks for them. */
export function renderOutputData(connection: OAuthConnection, tokens: OutputTokens): Record<string, string> {
  const keys = connection.spec.output.keys ?? {};
  const expiresAt = new Date(tokens.expiresAtMs).toISOString();
  const tokenType = canonicalTokenType(tokens.tokenType);
  const data: Record<string, string> = {};
  data[keys.accessToken ?? 'access_token'] = tokens.accessToken;
  const tokenTypeKey = keys.tokenType ?? 'token_type';
  if (tokenTypeKey) data[tokenTypeKey] = tokenType;
  const expiresAtKey = keys.expiresAt ?? 'expires_at';
  if (expiresAtKey) data[expiresAtKey] = expiresAt;
  if (keys.authorizationHeader) data[keys.authorizationHeader] = `${tokenType} ${tokens.accessToken}`;
  for (const { key, template } of connection.spec.output.templates ?? []) {
    data[key] = template.replace(/\{\{\s*(accessToken|tokenType|expiresAt)\s*\}\}/g, (_, name: string) =>
      name === 'accessToken' ? tokens.accessToken : name === 'tokenType' ? tokenType : expiresAt,
    );
  }
  return data;
}

function ownedBy(secret: k8s.V1Secret, connection: OAuthConnection): boolean {
  return (secret.metadata?.ownerReferences ?? []).some(
    (ref) =>
      ref.kind === KIND &&
      ref.apiVersion.startsWith('oauth.token-operator.dev/') &&
      ref.uid === connection.metadata.uid,
  );
}

function encode(data: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')]));
}

function sameData(a: Record<string, string> | undefined, b: Record<string, string>): boolean {
  const aKeys = Object.keys(a ?? {}).sort();
  const bKeys = Object.keys(b).sort();
  return aKeys.length === bKeys.length && aKeys.every((k, i) => k === bKeys[i] && a?.[k] === b[k]);
}

export class OutputSecretWriter {
  private readonly core: k8s.CoreV1Api;

  constructor(core: k8s.CoreV1Api) {
    this.core = core;
  }

  /** Creates or updates the output Secret; returns true when anything was written. */
  async write(connection: OAuthConnection, tokens: OutputTokens): Promise<boolean> {
    const { namespace } = connection.metadata;
    const name = connection.spec.output.secretName;
    const data = encode(renderOutputData(connection, tokens));
    const labels = {
      ...(connection.spec.output.labels ?? {}),
      [MANAGED_BY_LABEL]: MANAGED_BY,
      [ROLE_LABEL]: 'output',
    };
    const annotations = {
      ...(connection.spec.output.annotations ?? {}),
      [CONNECTION_NAME_ANNOTATION]: connection.metadata.name,
    };
    const metadata: k8s.V1ObjectMeta = {
      name,
      namespace,
      labels,
      annotations,
      ownerReferences: [
        {
          apiVersion: API_VERSION,
          kind: KIND,
          name: connection.metadata.name,
          uid: connection.metadata.uid ?? '',
          controller: true,
        },
      ],
    };
    let existing: k8s.V1Secret | undefined;
    try {
      existing = await this.core.readNamespacedSecret({ name, namespace });
    } catch (err) {
      if (!(err instanceof k8s.ApiException && err.code === 404)) throw err;
    }
    if (!existing) {
      await this.core.createNamespacedSecret({
        namespace,
        body: { apiVersion: 'v1', kind: 'Secret', type: 'Opaque', metadata, data },
      });
      return true;
    }
    if (!ownedBy(existing, connection)) throw new OutputSecretNotOwnedError(name);
    if (existing.type !== 'Opaque') {
      // The type of a Secret is immutable; an owned Secret of another type is replaced.
      await this.core.deleteNamespacedSecret({ name, namespace });
      await this.core.createNamespacedSecret({
        namespace,
        body: { apiVersion: 'v1', kind: 'Secret', type: 'Opaque', metadata, data },
      });
      return true;
    }
    const sameLabels = Object.entries(labels).every(([k, v]) => existing.metadata?.labels?.[k] === v);
    const sameAnnotations = Object.entries(annotations).every(
      ([k, v]) => existing.metadata?.annotations?.[k] === v,
    );
    if (sameData(existing.data, data) && sameLabels && sameAnnotations) return false;
    await this.core.replaceNamespacedSecret({
      name,
      namespace,
      body: {
        apiVersion: 'v1',
        kind: 'Secret',
        type: 'Opaque',
        metadata: Object.assign({}, metadata, { resourceVersion: existing.metadata?.resourceVersion }),
        data,
      },
    });
    return true;
  }
}
