// The output Secret: what pods read. Always Opaque, owned by its connection (so the garbage
// collector removes it with the connection), and never a Secret that someone else owns.
//
// Its keys, templates, labels and annotations are the tenant's, the access token the provider's:
// rendering checks every key against Kubernetes' rule, refuses keys used twice or that JavaScript
// mangles, and bounds the token and the rendered size before building a single string
// (renderOutputData); labels and annotations are checked, and the operator's own keys refused, before
// anything is sent (outputMetadata). What the API server refuses anyway ends as an OutputRejected
// status, not as a retry loop with a stale Ready=True.
//
// Ownership is the controller owner reference, never a label or annotation: those are what a tenant
// can set on any Secret (controllingConnection).
import * as k8s from '@kubernetes/client-node';
import { API_VERSION, GROUP, KIND, type OAuthConnection } from '../api/v1alpha1.ts';
import { canonicalTokenType, MAX_TOKEN_BYTES, normaliseGeolocation } from '../oauth/index.ts';
import { CONNECTION_NAME_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, ROLE_LABEL } from './state-store.ts';

export interface OutputTokens {
  accessToken: string;
  tokenType: string;
  expiresAtMs: number;
  /** What `{{geolocation}}` renders (outputGeolocation); empty when left out. */
  geolocation?: string;
}

/**
 * What `{{geolocation}}` renders: the base URI of the data center the connection's token requests go
 * to. For a provider that names one in its answers and is followed there (Concur: the geolocation, where
 * the user lives and where its APIs must be called, https://developer.concur.com/platform/base-uris.html),
 * the stored one. Otherwise (every other provider, whatever its answers carry, or a Concur answer
 * without one) the origin of the token endpoint in use (status.tokenEndpoint): for Concur that is the
 * same data center, since the request was answered there; for other providers simply the token host,
 * which is their API host only for some (Exact Online yes, Keycloak no). Only origins are rendered
 * (scheme, host, port; no path, no user info); undefined when neither is a URL.
 */
export function outputGeolocation(chain: {
  /** Whether the preset sends token requests to the geolocation its answers name (Concur). */
  followsGeolocation: boolean;
  geolocation?: string | undefined;
  tokenEndpoint?: string | undefined;
}): string | undefined {
  const stored = chain.followsGeolocation ? normaliseGeolocation(chain.geolocation) : undefined;
  return stored ?? normaliseGeolocation(chain.tokenEndpoint);
}

/**
 * A spec.output the operator will not write. `reason` is the Ready=False reason and `message` names
 * the field; neither ever contains a token.
 */
export class OutputError extends Error {
  readonly code: string = 'configuration';
  /** How the failure is retried: a person must act (configuration), or time will tell (transient). */
  readonly kind: 'configuration' | 'transient' = 'configuration';
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

/**
 * The output Secret still belongs to an earlier connection of the same name (deleted and created
 * again): the garbage collector deletes it with its owner, within seconds, and the next write
 * creates this connection's own. Retried with the transient backoff, not a person's.
 */
export class OutputSecretOfPredecessorError extends OutputError {
  override readonly kind = 'transient';
  constructor(secretName: string) {
    super(
      'OutputSecretPendingDeletion',
      `Secret ${secretName} still belongs to an earlier connection of this name; waiting for the garbage collector to delete it (spec.output.secretName)`,
    );
    this.name = 'OutputSecretOfPredecessorError';
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

/** A spec.output.labels or annotations key or value Kubernetes refuses, or a key the operator reserves. */
export class InvalidOutputMetadataError extends OutputError {
  constructor(message: string) {
    super('InvalidOutputMetadata', message);
    this.name = 'InvalidOutputMetadataError';
  }
}

/** The API server refused to write the output Secret (400/422); the message names the spec field. */
export class OutputRejectedError extends OutputError {
  constructor(message: string) {
    super('OutputRejected', message);
    this.name = 'OutputRejectedError';
  }
}

/**
 * Largest access token rendered, in bytes: the OAuth layer's own cap (MAX_TOKEN_BYTES, 16 KiB), so
 * one number holds everywhere. Tokens above it are refused where the answer is read; this check
 * covers a token stored by an older version, since every template multiplies it.
 */
export const MAX_ACCESS_TOKEN_BYTES = MAX_TOKEN_BYTES;
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

const PLACEHOLDER = /\{\{\s*(accessToken|tokenType|expiresAt|geolocation)\s*\}\}/g;

export type Placeholder = 'accessToken' | 'tokenType' | 'expiresAt' | 'geolocation';

/** Whether any of spec.output.templates names the placeholder `name` (`{{name}}`). */
export function templatesUse(connection: OAuthConnection, name: Placeholder): boolean {
  return (connection.spec.output.templates ?? []).some(({ template }) =>
    [...template.matchAll(PLACEHOLDER)].some((match) => match[1] === name),
  );
}

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
  const geolocation = tokens.geolocation ?? '';
  const values: Readonly<Record<Placeholder, string>> = {
    accessToken: tokens.accessToken,
    tokenType,
    expiresAt,
    geolocation,
  };
  const valueBytes: Readonly<Record<Placeholder, number>> = {
    accessToken: tokenBytes,
    tokenType: Buffer.byteLength(tokenType),
    expiresAt: Buffer.byteLength(expiresAt),
    // An origin (a host name is at most 253 characters), but a template may repeat it: counted too.
    geolocation: Buffer.byteLength(geolocation),
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

/** Label and annotation keys that are the operator's: it sets them, and tenants may not. */
export function isReservedMetadataKey(key: string): boolean {
  const lower = key.toLowerCase();
  const prefix = lower.includes('/') ? lower.slice(0, lower.indexOf('/')) : '';
  return (
    lower === MANAGED_BY_LABEL || prefix === 'token-operator.dev' || prefix.endsWith('.token-operator.dev')
  );
}

// Kubernetes' IsQualifiedName and IsValidLabelValue (k8s.io/apimachinery/pkg/util/validation).
const QUALIFIED_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$/;
/** The API server's limit on all annotations of an object, keys and values. */
const MAX_ANNOTATIONS_BYTES = 256 * 1024;

function qualifiedNameProblem(key: string): string | undefined {
  const parts = key.split('/');
  const name = parts.at(-1) ?? '';
  if (parts.length > 2) return 'may contain at most one /';
  if (parts.length === 2) {
    const prefix = parts[0] ?? '';
    if (prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix))
      return 'has a prefix that is not a DNS subdomain (lower case, at most 253 characters)';
  }
  if (!QUALIFIED_NAME.test(name))
    return "needs a name of at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit";
  return undefined;
}

function quoted(text: string): string {
  return JSON.stringify(text.length > 64 ? `${text.slice(0, 64)}…` : text);
}

/**
 * The labels and annotations of the output Secret: the tenant's (spec.output.labels/annotations)
 * checked as the API server would check them, plus the operator's own. A tenant key the operator
 * reserves is refused, not silently overridden, so the spec says what the Secret carries.
 * Throws InvalidOutputMetadataError naming the field.
 */
export function outputMetadata(connection: OAuthConnection): {
  labels: Record<string, string>;
  annotations: Record<string, string>;
} {
  const output = connection.spec.output;
  const check = (kind: 'labels' | 'annotations', entries: Record<string, string>): [string, string][] => {
    const checked: [string, string][] = [];
    let bytes = 0;
    for (const [key, value] of Object.entries(entries)) {
      const field = `spec.output.${kind}[${quoted(key)}]`;
      // Annotation keys are checked lowercased by the API server (ValidateAnnotations).
      const problem = qualifiedNameProblem(kind === 'annotations' ? key.toLowerCase() : key);
      if (problem !== undefined) throw new InvalidOutputMetadataError(`${field}: the key ${problem}`);
      if (isReservedMetadataKey(key)) {
        throw new InvalidOutputMetadataError(
          `${field}: the key is reserved for the operator (app.kubernetes.io/managed-by and keys under token-operator.dev/)`,
        );
      }
      if (kind === 'labels' && !LABEL_VALUE.test(value)) {
        throw new InvalidOutputMetadataError(
          `${field}: the value must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit`,
        );
      }
      bytes += Buffer.byteLength(key) + Buffer.byteLength(value);
      if (kind === 'annotations' && bytes > MAX_ANNOTATIONS_BYTES) {
        throw new InvalidOutputMetadataError(
          `spec.output.${kind}: over the ${MAX_ANNOTATIONS_BYTES} bytes Kubernetes allows`,
        );
      }
      checked.push([key, value]);
    }
    return checked;
  };
  // Object.fromEntries defines own properties: no key name reaches a prototype.
  return {
    labels: Object.fromEntries([
      ...check('labels', output.labels ?? {}),
      [MANAGED_BY_LABEL, MANAGED_BY],
      [ROLE_LABEL, 'output'],
    ]),
    annotations: Object.fromEntries([
      ...check('annotations', output.annotations ?? {}),
      [CONNECTION_NAME_ANNOTATION, connection.metadata.name],
    ]),
  };
}

/**
 * The OAuthConnection that controls a Secret: its controller owner reference, when that names our
 * kind. Owner references name objects in the Secret's own namespace, so a Secret can only ever
 * point at a connection beside it; the API server allows one controller reference per object.
 */
export function controllingConnection(
  metadata: Pick<k8s.V1ObjectMeta, 'ownerReferences'> | undefined,
): { name: string; uid: string; apiVersion: string } | undefined {
  const ref = (metadata?.ownerReferences ?? []).find((r) => r.controller === true);
  if (ref?.kind !== KIND || ref.apiVersion.split('/')[0] !== GROUP) return undefined;
  return { name: ref.name, uid: ref.uid, apiVersion: ref.apiVersion };
}

/**
 * The key (namespace/name) of the connection an output Secret's event is for: the connection its
 * controller owner reference names, in the Secret's own namespace, while that connection exists with
 * the UID the reference names; undefined otherwise, so a forged or leftover Secret wakes nothing.
 */
export function outputSecretOwnerKey(
  secret: { metadata?: Pick<k8s.V1ObjectMeta, 'namespace' | 'ownerReferences'> },
  connection: (namespace: string, name: string) => { metadata: { uid?: string } } | undefined,
): string | undefined {
  const namespace = secret.metadata?.namespace;
  const owner = controllingConnection(secret.metadata);
  if (namespace === undefined || owner === undefined) return undefined;
  const uid = connection(namespace, owner.name)?.metadata.uid;
  return uid !== undefined && uid === owner.uid ? `${namespace}/${owner.name}` : undefined;
}

/**
 * Whether the operator may write an existing Secret for a connection: `owned` when the connection
 * controls it; `adopt` for an output Secret an earlier version wrote without an owner reference (it
 * carries this connection's name annotation and the operator's labels, and no controller at all),
 * which gets the reference on this write; `predecessor` for one controlled by a connection of this
 * name with another UID (deleted and created again, or a reference to no object at all: either way
 * the garbage collector removes it), also never touched; `foreign` for everything else.
 */
export function ownership(
  existing: Pick<k8s.V1ObjectMeta, 'ownerReferences' | 'labels' | 'annotations'> | undefined,
  connection: OAuthConnection,
): 'owned' | 'adopt' | 'predecessor' | 'foreign' {
  const controller = controllingConnection(existing);
  if (controller !== undefined) {
    if (controller.name !== connection.metadata.name) return 'foreign';
    if (controller.uid === connection.metadata.uid) return 'owned';
    // Only a reference the garbage collector can resolve is a predecessor's: the collector deletes
    // the Secret. One naming a version the API server does not serve stays for ever: a person's.
    return controller.apiVersion === API_VERSION ? 'predecessor' : 'foreign';
  }
  if ((existing?.ownerReferences ?? []).some((r) => r.controller === true)) return 'foreign';
  const marked =
    existing?.labels?.[MANAGED_BY_LABEL] === MANAGED_BY &&
    existing.labels[ROLE_LABEL] === 'output' &&
    existing.annotations?.[CONNECTION_NAME_ANNOTATION] === connection.metadata.name;
  return marked ? 'adopt' : 'foreign';
}

const MAX_REJECTION_CHARS = 1024;
const REDACTED = '[redacted]';

/** The spec field behind a field of the output Secret, as the API server names it. */
function specFieldOf(secretField: string | undefined): string {
  if (secretField === undefined || secretField === '') return 'spec.output';
  if (secretField.startsWith('metadata.labels')) return 'spec.output.labels';
  if (secretField.startsWith('metadata.annotations')) return 'spec.output.annotations';
  if (secretField.startsWith('metadata.name')) return 'spec.output.secretName';
  // Secret data comes from keys and templates together (a key, or the total size).
  if (secretField.startsWith('data')) return 'spec.output.keys, spec.output.templates';
  return 'spec.output';
}

/**
 * The API server's refusal (400 or 422) of an output Secret write as an OutputRejectedError whose
 * message names the spec field of each cause; undefined for any other failure (retried as before).
 * Every value in `secrets` (the token, the rendered data, raw and base64) is redacted before the text
 * is truncated, so no cut can leave part of a secret behind.
 */
export function rejectionOf(
  err: unknown,
  secretName: string,
  secrets: readonly string[],
): OutputRejectedError | undefined {
  if (!(err instanceof k8s.ApiException) || (err.code !== 400 && err.code !== 422)) return undefined;
  let status: { message?: unknown; details?: { causes?: { field?: unknown; message?: unknown }[] } } = {};
  try {
    const body: unknown = typeof err.body === 'string' ? JSON.parse(err.body) : err.body;
    if (body !== null && typeof body === 'object') status = body;
  } catch {
    // Not a Status: only the HTTP code is known.
  }
  const causes = (status.details?.causes ?? []).map((cause) => {
    const field = typeof cause.field === 'string' ? cause.field : undefined;
    const text = typeof cause.message === 'string' ? cause.message : 'invalid';
    return `${specFieldOf(field)}: ${text}${field !== undefined ? ` (${field})` : ''}`;
  });
  const detail =
    causes.length > 0
      ? causes.join('; ')
      : `spec.output: ${typeof status.message === 'string' ? status.message : `HTTP ${err.code}`}`;
  let redacted = detail;
  // Longest first, so that a value containing another is redacted whole.
  for (const secret of [...secrets].filter((v) => v !== '').sort((a, b) => b.length - a.length)) {
    redacted = redacted.split(secret).join(REDACTED);
  }
  const message = `the API server refused the output Secret ${secretName}: ${redacted}`;
  return new OutputRejectedError(
    message.length > MAX_REJECTION_CHARS ? `${message.slice(0, MAX_REJECTION_CHARS - 1)}…` : message,
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

function sameEntries(actual: Record<string, string> | undefined, wanted: Record<string, string>): boolean {
  return Object.entries(wanted).every(([k, v]) => actual?.[k] === v);
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
    const { labels, annotations } = outputMetadata(connection);
    const rendered = renderOutputData(connection, tokens);
    const data = encode(rendered);
    const ownerReference: k8s.V1OwnerReference = {
      apiVersion: API_VERSION,
      kind: KIND,
      name: connection.metadata.name,
      uid: connection.metadata.uid ?? '',
      controller: true,
    };
    let existing: k8s.V1Secret | undefined;
    try {
      existing = await this.core.readNamespacedSecret({ name, namespace });
    } catch (err) {
      if (!(err instanceof k8s.ApiException && err.code === 404)) throw err;
    }
    // Other owners' (non-controller) references are kept: they tie the Secret to other lifetimes.
    const others = (existing?.metadata?.ownerReferences ?? []).filter((r) => r.uid !== ownerReference.uid);
    const metadata: k8s.V1ObjectMeta = {
      name,
      namespace,
      labels,
      annotations,
      ownerReferences: [ownerReference, ...others],
    };
    const body = (meta: k8s.V1ObjectMeta): k8s.V1Secret => ({
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'Opaque',
      metadata: meta,
      data,
    });
    // Every value that holds the token, as sent (base64) and as rendered: none may reach a status.
    const secrets = Object.keys(rendered)
      .filter((key) => rendered[key]?.includes(tokens.accessToken))
      .flatMap((key) => [rendered[key] ?? '', data[key] ?? '']);
    const refused = (err: unknown): unknown =>
      rejectionOf(err, name, [tokens.accessToken, ...secrets]) ?? err;
    try {
      if (!existing) {
        await this.core.createNamespacedSecret({ namespace, body: body(metadata) });
        return true;
      }
      const owner = ownership(existing.metadata, connection);
      if (owner === 'foreign') throw new OutputSecretNotOwnedError(name);
      if (owner === 'predecessor') throw new OutputSecretOfPredecessorError(name);
      if (existing.type !== 'Opaque') {
        // A Secret's type cannot be changed, and replacing it would need delete on Secrets in every
        // watched namespace: a person deletes it instead (the operator then creates an Opaque one).
        throw new OutputError(
          'OutputSecretWrongType',
          `spec.output.secretName: Secret ${name} belongs to this connection but has type ${(existing.type ?? '').slice(0, 64)}, and a Secret's type cannot be changed; delete it and the operator creates an Opaque one`,
        );
      }
      if (
        owner === 'owned' &&
        sameData(existing.data, data) &&
        sameEntries(existing.metadata?.labels, labels) &&
        sameEntries(existing.metadata?.annotations, annotations)
      ) {
        return false;
      }
      await this.core.replaceNamespacedSecret({
        name,
        namespace,
        body: body(Object.assign({}, metadata, { resourceVersion: existing.metadata?.resourceVersion })),
      });
      return true;
    } catch (err) {
      throw refused(err);
    }
  }
}
