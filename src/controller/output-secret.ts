// The output Secret: what pods read. Always Opaque, owned by its connection (so the garbage
// collector removes it with the connection), and never a Secret that someone else owns.
//
// Its keys and templates are the tenant's, the access token the provider's: rendering checks every
// key against Kubernetes' rule, refuses keys used twice or that JavaScript mangles, and bounds the
// token and the rendered size before building a single string (renderOutputData).
import * as k8s from '@kubernetes/client-node';
import { API_VERSION, KIND, type OAuthConnection } from '../api/v1alpha1.ts';
import { canonicalTokenType } from '../oauth/index.ts';
import { CONNECTION_NAME_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, ROLE_LABEL } from './state-store.ts';

export interface OutputTokens {
  accessToken: string;
  tokenType: string;
  expiresAtMs: number;
}

/**
 * A spec.output the operator will not write. `reason` is the Ready=False reason and `message` names
 * the field; neither ever contains a token.
 */
export class OutputError extends Error {
  readonly code: string = 'configuration';
  readonly reason: string;

  constructor(reason: string, message: string) {
    super(message);
    this.reason = reason;
    this.name = 'OutputError';
  }
}

export class OutputSecretNotOwnedError extends OutputError {
  override readonly code = 'output_not_owned';
  constructor(secretName: string) {
    super(
      'OutputSecretNotOwned',
      `Secret ${secretName} exists and is not owned by this connection; it is left untouched (spec.output.secretName)`,
    );
    this.name = 'OutputSecretNotOwnedError';
  }
}

/** An output key that is not a valid Secret data key, is reserved, or is used twice. */
export class InvalidOutputKeyError extends OutputError {
  constructor(message: string) {
    super('InvalidOutputKey', message);
    this.name = 'InvalidOutputKeyError';
  }
}

/** An access token, or the rendered data, over the bounds below. */
export class OutputTooLargeError extends OutputError {
  constructor(message: string) {
    super('OutputTooLarge', message);
    this.name = 'OutputTooLargeError';
  }
}

/**
 * Largest access token rendered, in bytes. JWTs with many claims reach a few KiB; anything near this
 * is a provider sending something else, and every template multiplies it.
 */
export const MAX_ACCESS_TOKEN_BYTES = 64 * 1024;
/**
 * Largest rendered data, keys and values, in bytes: half of the 1 MiB a Secret may hold, so that the
 * base64 encoding and the metadata fit with room to spare. 8 templates of 16 KiB (the CRD's limits)
 * with `{{accessToken}}` in every 15 characters would otherwise render about 1000 tokens.
 */
export const MAX_RENDERED_BYTES = 512 * 1024;

/** Kubernetes' rule for Secret and ConfigMap data keys (IsConfigMapKey). */
const DATA_KEY = /^[-._a-zA-Z0-9]+$/;
const MAX_DATA_KEY_LENGTH = 253;
/**
 * Keys valid for Kubernetes that JavaScript readers mangle: @kubernetes/client-node copies data
 * maps with `out[key] = value`, which for `__proto__` sets the prototype and drops the entry (the
 * token would silently be missing). Consumers written in JavaScript have the same trap.
 */
const RESERVED_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

const PLACEHOLDER = /\{\{\s*(accessToken|tokenType|expiresAt)\s*\}\}/g;

type Placeholder = 'accessToken' | 'tokenType' | 'expiresAt';

/** Why a key cannot be a Secret data key, or undefined. Quotes at most a short prefix of the key. */
function keyProblem(key: string): string | undefined {
  const shown = JSON.stringify(key.length > 40 ? `${key.slice(0, 40)}…` : key);
  if (key === '') return 'is empty';
  if (key.length > MAX_DATA_KEY_LENGTH) return `${shown} is longer than ${MAX_DATA_KEY_LENGTH} characters`;
  if (!DATA_KEY.test(key)) return `${shown} may only contain letters, digits, '-', '_' and '.'`;
  if (key === '.' || key === '..' || key.startsWith('..'))
    return `${shown} may not be '.' or start with '..'`;
  if (RESERVED_KEYS.has(key))
    return `${shown} is reserved (JavaScript clients, the operator's included, lose it)`;
  return undefined;
}

/**
 * The key/value pairs of the output Secret, as the connection's spec.output asks for them.
 *
 * Sizes are computed from the template's literal text and its placeholder counts before any string
 * is built, so a refused output costs no memory. Throws InvalidOutputKeyError (a key that is not a
 * valid data key, reserved, or used twice) and OutputTooLargeError (a token over
 * MAX_ACCESS_TOKEN_BYTES, data over MAX_RENDERED_BYTES).
 */
export function renderOutputData(connection: OAuthConnection, tokens: OutputTokens): Record<string, string> {
  const keys = connection.spec.output.keys ?? {};
  const expiresAt = new Date(tokens.expiresAtMs).toISOString();
  const tokenType = canonicalTokenType(tokens.tokenType);
  const tokenBytes = Buffer.byteLength(tokens.accessToken);
  if (tokenBytes > MAX_ACCESS_TOKEN_BYTES) {
    throw new OutputTooLargeError(
      `spec.output.keys.accessToken: the provider's access token is ${tokenBytes} bytes, over the ${MAX_ACCESS_TOKEN_BYTES} bytes the operator writes to a Secret`,
    );
  }
  const values: Readonly<Record<Placeholder, string>> = {
    accessToken: tokens.accessToken,
    tokenType,
    expiresAt,
  };
  const valueBytes: Readonly<Record<Placeholder, number>> = {
    accessToken: tokenBytes,
    tokenType: Buffer.byteLength(tokenType),
    expiresAt: Buffer.byteLength(expiresAt),
  };

  // Key → the field that asked for it, in the order rendered; a Map, so no key name is special.
  const fieldOf = new Map<string, string>();
  const claim = (key: string, field: string): void => {
    const problem = keyProblem(key);
    if (problem !== undefined) throw new InvalidOutputKeyError(`${field}: the Secret data key ${problem}`);
    const earlier = fieldOf.get(key);
    if (earlier !== undefined) {
      throw new InvalidOutputKeyError(
        `${field}: the Secret data key ${JSON.stringify(key)} is already used by ${earlier}`,
      );
    }
    fieldOf.set(key, field);
  };

  const plain = new Map<string, string>();
  const accessTokenKey = keys.accessToken ?? 'access_token';
  claim(accessTokenKey, 'spec.output.keys.accessToken');
  plain.set(accessTokenKey, tokens.accessToken);
  const tokenTypeKey = keys.tokenType ?? 'token_type';
  if (tokenTypeKey !== '') {
    claim(tokenTypeKey, 'spec.output.keys.tokenType');
    plain.set(tokenTypeKey, tokenType);
  }
  const expiresAtKey = keys.expiresAt ?? 'expires_at';
  if (expiresAtKey !== '') {
    claim(expiresAtKey, 'spec.output.keys.expiresAt');
    plain.set(expiresAtKey, expiresAt);
  }
  if (keys.authorizationHeader !== undefined && keys.authorizationHeader !== '') {
    claim(keys.authorizationHeader, 'spec.output.keys.authorizationHeader');
    plain.set(keys.authorizationHeader, `${tokenType} ${tokens.accessToken}`);
  }
  // At most two tokens and a few short values: well under MAX_RENDERED_BYTES; templates are what can
  // outgrow it.
  let total = 0;
  for (const [key, value] of plain) total += Buffer.byteLength(key) + Buffer.byteLength(value);

  const templates = connection.spec.output.templates ?? [];
  // split() with the capturing group alternates literal text and placeholder names.
  const parts = templates.map(({ template }) => template.split(PLACEHOLDER));
  for (const [index, { key }] of templates.entries()) {
    const field = `spec.output.templates[${index}]`;
    claim(key, `${field}.key`);
    let size = Buffer.byteLength(key);
    for (const [i, part] of (parts[index] ?? []).entries()) {
      size += i % 2 === 0 ? Buffer.byteLength(part) : valueBytes[part as Placeholder];
    }
    total += size;
    if (total > MAX_RENDERED_BYTES) {
      throw new OutputTooLargeError(
        `${field}: the template renders ${size} bytes, taking the output to ${total} bytes, over the ${MAX_RENDERED_BYTES} bytes the operator writes to a Secret`,
      );
    }
  }

  const data = Object.create(null) as Record<string, string>;
  for (const [key, value] of plain) data[key] = value;
  for (const [index, { key }] of templates.entries()) {
    data[key] = (parts[index] ?? [])
      .map((part, i) => (i % 2 === 0 ? part : values[part as Placeholder]))
      .join('');
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
