// Everything a reconcile needs from the user's side, resolved and checked before any outbound
// request: Secret references (read by GET, only in the connection's own namespace, never of a type
// that holds a cluster or registry credential, and only with the opt-in label when the operator
// requires one), the preset, the timing. A problem here is a configuration failure whose message
// names the offending field.
import * as k8s from '@kubernetes/client-node';
import { createHash } from 'node:crypto';
import type { OAuthConnection, SecretKeyRef } from '../api/v1alpha1.ts';
import { parseDuration } from '../kube/duration.ts';
import { isTokenError, type ClientConfig, type EndpointSettings } from '../oauth/index.ts';
import {
  clientConfigFor,
  endpointSettingsFor,
  probeSettingsFor,
  unsupportedBy,
  type ProbeSettings,
} from '../providers/configure.ts';
import { presetDefaults, type PresetDefaults } from '../providers/presets.ts';
import type { RefreshTiming } from './schedule.ts';
import { fingerprint } from './state-store.ts';

export class ConfigurationError extends Error {
  readonly code = 'configuration';
  readonly reason: string;

  constructor(reason: string, message: string) {
    super(message);
    this.reason = reason;
    this.name = 'ConfigurationError';
  }
}

/** The recovery login's credentials, read only when spec.recovery.login is set. */
export interface LoginCredentials {
  username: string;
  password: string;
  /** The authenticator secret (base32 or otpauth:// URI), when a TOTP step is configured. */
  totpSecret?: string;
  /**
   * Identifies this version of the credentials without deriving anything from their values: the
   * referenced Secrets' names and resourceVersions. A rejected password blocks further logins until
   * this changes.
   */
  version: string;
}

export interface ResolvedInputs {
  preset: PresetDefaults;
  /** The client as the OAuth layer takes it, client secret included. */
  client: ClientConfig;
  /** Where the endpoints come from; a geolocation the provider returned (Concur) changes them. */
  endpoints(geolocation: string | undefined): EndpointSettings;
  /** The seed refresh token, when the grant has one and the Secret exists. */
  seed?: VersionedSecretValue;
  /**
   * Identifies the versions of every Secret the connection references (names and resourceVersions,
   * never values): a change is a person's answer to a failure and lifts its backoff.
   */
  version: string;
  username?: string;
  password?: string;
  /** Identifies the password grant's credentials Secrets' versions: a rejected password blocks until it changes. */
  passwordVersion?: string;
  login?: LoginCredentials;
  timing: RefreshTiming;
  assumedLifetimeMs: number;
  graceWindowMs: number;
  /** spec.probe with the preset's defaults; absent when the connection is not probed. */
  probe?: ProbeSettings;
}

const DEFAULT_ASSUMED_LIFETIME_MS = 3_600_000;
/** Refusals of readSecretKeyVersioned that are the operator's policy, not a missing value. */
const POLICY_REFUSALS: ReadonlySet<string> = new Set(['SecretTypeNotAllowed', 'SecretNotOptedIn']);

function durationField(value: string | undefined, field: string): number | undefined {
  if (value === undefined) return undefined;
  try {
    return parseDuration(value);
  } catch (err) {
    // parseDuration's message quotes the value (a spec field, not a secret) and says what is wrong.
    throw new ConfigurationError(
      'InvalidDuration',
      `${field}: ${err instanceof Error ? err.message : 'invalid duration'}`,
    );
  }
}

/** The operator's policy for the Secrets connections reference. */
export interface SecretReadOptions {
  /**
   * A label key every referenced Secret must carry with the value "true" (an operator flag, for
   * clusters where the people who write connections may not read every Secret of their namespace:
   * only Secrets someone labelled are then read). Unset: no label is required.
   */
  requireSecretLabel?: string;
}

/**
 * Secret types the operator never reads, whatever a connection says. Each holds a credential for
 * the cluster or a registry, not for an OAuth provider, and every value the operator reads is sent
 * to a URL the connection names: a clientSecretRef to the namespace's service-account token with
 * a tokenURL on the tenant's own host would POST that token there (a confused deputy).
 */
export const REFUSED_SECRET_TYPES: ReadonlySet<string> = new Set([
  'kubernetes.io/service-account-token',
  'bootstrap.kubernetes.io/token',
  'kubernetes.io/tls',
  'kubernetes.io/dockerconfigjson',
  'kubernetes.io/dockercfg',
]);

export interface VersionedSecretValue {
  value: string;
  /** The Secret's name and resourceVersion: what identifies this version of the value. */
  name: string;
  resourceVersion: string;
  annotations: Record<string, string>;
}

/**
 * Reads one key of a referenced Secret, with the Secret's name, resourceVersion and annotations.
 * Refuses (ConfigurationError) a reference out of the namespace, a Secret of a type in
 * REFUSED_SECRET_TYPES (SecretTypeNotAllowed) and, when options.requireSecretLabel is set, a Secret
 * without that label set to "true" (SecretNotOptedIn), before any of its data is looked at.
 */
export async function readSecretKeyVersioned(
  core: k8s.CoreV1Api,
  namespace: string,
  ref: SecretKeyRef & { namespace?: unknown },
  field: string,
  defaultKey: string,
  options: SecretReadOptions = {},
): Promise<VersionedSecretValue> {
  if (ref.namespace !== undefined && ref.namespace !== namespace) {
    throw new ConfigurationError(
      'CrossNamespaceReference',
      `${field}: Secret references cannot leave the connection's namespace ${namespace}`,
    );
  }
  const key = ref.key ?? defaultKey;
  let secret: k8s.V1Secret;
  try {
    secret = await core.readNamespacedSecret({ name: ref.name, namespace });
  } catch (err) {
    if (err instanceof k8s.ApiException && err.code === 404) {
      throw new ConfigurationError('SecretNotFound', `${field}: Secret ${namespace}/${ref.name} not found`);
    }
    if (err instanceof k8s.ApiException && err.code === 403) {
      throw new ConfigurationError(
        'SecretForbidden',
        `${field}: the operator may not read Secret ${namespace}/${ref.name}`,
      );
    }
    throw err;
  }
  const type = secret.type ?? 'Opaque';
  if (REFUSED_SECRET_TYPES.has(type)) {
    throw new ConfigurationError(
      'SecretTypeNotAllowed',
      `${field}: Secret ${namespace}/${ref.name} is of type ${type}, which the operator never reads (it holds a cluster or registry credential, not an OAuth one)`,
    );
  }
  const label = options.requireSecretLabel;
  if (label !== undefined && label !== '' && secret.metadata?.labels?.[label] !== 'true') {
    throw new ConfigurationError(
      'SecretNotOptedIn',
      `${field}: Secret ${namespace}/${ref.name} lacks the label ${label}=true that this operator requires on every Secret a connection references`,
    );
  }
  // Own keys only: `secret.data` is a plain object, and a key such as `constructor` that the Secret
  // lacks must not resolve to what Object.prototype has under that name.
  const raw = secret.data !== undefined && Object.hasOwn(secret.data, key) ? secret.data[key] : undefined;
  if (raw === undefined) {
    throw new ConfigurationError(
      'SecretKeyMissing',
      `${field}: Secret ${namespace}/${ref.name} has no key ${key}`,
    );
  }
  const value = Buffer.from(raw, 'base64').toString('utf8').trim();
  if (value === '') {
    throw new ConfigurationError(
      'SecretKeyEmpty',
      `${field}: key ${key} of Secret ${namespace}/${ref.name} is empty`,
    );
  }
  return {
    value,
    name: ref.name,
    resourceVersion: secret.metadata?.resourceVersion ?? '',
    annotations: secret.metadata?.annotations ?? {},
  };
}

export async function resolveInputs(
  core: k8s.CoreV1Api,
  connection: OAuthConnection,
  propagationMs: number,
  options: SecretReadOptions & {
    /**
     * Only what a request as the client needs (the revocation on delete): the client secret. The
     * seed and the user's credentials are not read, so a deletion whose Secrets went first (a
     * namespace being deleted, `kubectl delete -f` of a manifest) still revokes.
     */
    clientOnly?: boolean;
  } = {},
): Promise<ResolvedInputs> {
  const { spec } = connection;
  const { namespace } = connection.metadata;
  let preset: PresetDefaults;
  try {
    preset = presetDefaults(spec.provider.preset ?? 'generic', spec.provider.region);
  } catch (err) {
    if (isTokenError(err)) throw new ConfigurationError(err.reason, `spec.provider.region: ${err.message}`);
    throw err;
  }
  // The CRD requires both for the folio preset; checked again so that no request goes without them.
  if (preset.protocol === 'folio' && (!spec.provider.baseURL || !spec.provider.tenant)) {
    throw new ConfigurationError(
      'ProviderIncomplete',
      `spec.provider.${spec.provider.baseURL ? 'tenant' : 'baseURL'}: the folio preset needs baseURL (the Okapi or Kong gateway) and tenant`,
    );
  }
  const unsupported = unsupportedBy(spec, preset);
  if (unsupported !== undefined) throw new ConfigurationError(unsupported.reason, unsupported.message);
  const grantType = spec.grant?.type ?? 'refreshToken';
  const authMethod = spec.clientAuthMethod ?? preset.clientAuthMethod;

  const inputs: ResolvedInputs = {
    preset,
    client: clientConfigFor(spec, preset, undefined),
    endpoints: (geolocation) => endpointSettingsFor(spec.provider, preset, geolocation),
    timing: {
      minIntervalMs:
        durationField(spec.refresh?.minInterval, 'spec.refresh.minInterval') ?? preset.minIntervalMs,
      propagationMs,
    },
    assumedLifetimeMs:
      durationField(spec.refresh?.assumedLifetime, 'spec.refresh.assumedLifetime') ??
      preset.accessTokenLifetimeMs ??
      DEFAULT_ASSUMED_LIFETIME_MS,
    graceWindowMs:
      durationField(spec.refresh?.graceWindow, 'spec.refresh.graceWindow') ?? preset.graceWindowMs,
    version: '',
  };
  const before = durationField(spec.refresh?.before, 'spec.refresh.before');
  if (before !== undefined) inputs.timing.beforeMs = before;
  const keepAlive = durationField(spec.refresh?.keepAlive, 'spec.refresh.keepAlive') ?? preset.keepAliveMs;
  if (keepAlive !== undefined) inputs.timing.keepAliveMs = keepAlive;
  const probe = probeSettingsFor(spec, preset, durationField(spec.probe?.interval, 'spec.probe.interval'));
  if (probe !== undefined) inputs.probe = probe;

  // Every Secret read is recorded by name and resourceVersion: together they are the inputs' version.
  const versions: string[] = [];
  const read = async (
    ref: SecretKeyRef,
    field: string,
    defaultKey: string,
    versionBy: 'resourceVersion' | 'value' = 'resourceVersion',
  ): Promise<VersionedSecretValue> => {
    const value = await readSecretKeyVersioned(core, namespace, ref, field, defaultKey, options);
    const id = versionBy === 'value' ? fingerprint(value.value) : value.resourceVersion;
    versions.push(`${field}=${value.name}@${id}`);
    return value;
  };
  const versionOf = (parts: readonly string[]): string =>
    createHash('sha256').update(parts.join(',')).digest('hex').slice(0, 32);

  if (authMethod !== 'none') {
    if (!spec.clientSecretRef) {
      throw new ConfigurationError(
        'ClientSecretMissing',
        `spec.clientSecretRef: required for client authentication ${authMethod}`,
      );
    }
    inputs.client.clientSecret = (
      await read(spec.clientSecretRef, 'spec.clientSecretRef', 'client_secret')
    ).value;
  }
  if (options.clientOnly === true) {
    inputs.version = versionOf(versions);
    return inputs;
  }
  if (grantType === 'refreshToken' && spec.grant?.seedSecretRef) {
    try {
      // By its value: the operator annotates the seed Secret itself (the consumed-by mark), which
      // changes its resourceVersion, and that must not pass for a person's answer to a failure.
      inputs.seed = await read(
        spec.grant.seedSecretRef,
        'spec.grant.seedSecretRef',
        'refresh_token',
        'value',
      );
    } catch (err) {
      // Without a login to fall back on, a missing seed is a configuration error; with one, the
      // chain is bootstrapped by logging in instead. A Secret the policy refuses is reported all
      // the same: its owner should learn why it is ignored.
      if (!(err instanceof ConfigurationError) || !spec.recovery?.login || POLICY_REFUSALS.has(err.reason)) {
        throw err;
      }
    }
  }
  if (grantType === 'password') {
    const { usernameRef, passwordRef } = spec.grant ?? {};
    if (!usernameRef || !passwordRef) {
      throw new ConfigurationError(
        'CredentialsMissing',
        'spec.grant.usernameRef: the password grant needs usernameRef and passwordRef',
      );
    }
    const before = versions.length;
    inputs.username = (await read(usernameRef, 'spec.grant.usernameRef', 'username')).value;
    inputs.password = (await read(passwordRef, 'spec.grant.passwordRef', 'password')).value;
    inputs.passwordVersion = versionOf(versions.slice(before));
  }
  const login = spec.recovery?.login;
  if (login) {
    const before = versions.length;
    const username = await read(login.usernameRef, 'spec.recovery.login.usernameRef', 'username');
    const password = await read(login.passwordRef, 'spec.recovery.login.passwordRef', 'password');
    const totp = login.totpSecretRef
      ? await read(login.totpSecretRef, 'spec.recovery.login.totpSecretRef', 'totp')
      : undefined;
    inputs.login = {
      username: username.value,
      password: password.value,
      ...(totp ? { totpSecret: totp.value } : {}),
      version: versionOf(versions.slice(before)),
    };
  }
  inputs.version = versionOf(versions);
  return inputs;
}
