// oidc-provider itself (https://github.com/panva/node-oidc-provider, 9.13.3 in package.json): the
// slice of its API the test server uses (the package ships no type declarations), loading the untyped
// package, and the one patch of its private state, allowPlainTokenResponseType.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { KoaLikeMiddleware } from '../fault-proxy.ts';

/** What the provider stores through an adapter (storage.ts). */
export type Payload = Record<string, unknown> & {
  grantId?: string;
  consumed?: number;
  uid?: string;
  userCode?: string;
};

export interface ProviderClient {
  clientId: string;
}

export interface ProviderGrant {
  addOIDCScope(scope: string): void;
  addOIDCClaims(claims: string[]): void;
  addResourceScope(indicator: string, scope: string): void;
  save(): Promise<string>;
}

export interface InteractionDetails {
  uid: string;
  prompt: { name: string; details: Record<string, unknown> };
  params: Record<string, unknown>;
  session?: { accountId?: string };
  grantId?: string;
}

export interface InteractionResult {
  login?: { accountId: string };
  consent?: { grantId?: string };
}

export interface Provider {
  readonly issuer: string;
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  use(middleware: KoaLikeMiddleware): unknown;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  urlFor(name: string): string;
  interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<InteractionDetails>;
  /** Stores the result and answers 303 to the authorization endpoint's resume URL. */
  interactionFinished(
    req: IncomingMessage,
    res: ServerResponse,
    result: InteractionResult,
    options?: { mergeWithLastSubmission?: boolean },
  ): Promise<void>;
  Client: {
    find(id: string): Promise<ProviderClient | undefined>;
    Schema: { prototype: { invalidate: (this: unknown, message: string, code?: string) => void } };
  };
  Grant: {
    new (init: { accountId: string; clientId: string }): ProviderGrant;
    find(id: string): Promise<ProviderGrant | undefined>;
  };
  RefreshToken: new (init: {
    client: ProviderClient;
    accountId: string;
    grantId: string;
    scope: string;
    gty: string;
    authTime: number;
  }) => { save(): Promise<string> };
}

export interface ProviderErrors {
  InvalidGrant: new (description: string) => Error;
  SessionNotFound: new () => Error;
}

interface OidcProviderModule {
  default: new (issuer: string, configuration: Record<string, unknown>) => Provider;
  errors: ProviderErrors;
}

// Loaded through a computed specifier: a static import of the untyped package fails type checking.
const OIDC_PROVIDER_PACKAGE: string = 'oidc-provider';
let loaded: Promise<OidcProviderModule> | undefined;
export function loadOidcProvider(): Promise<OidcProviderModule> {
  loaded ??= import(OIDC_PROVIDER_PACKAGE) as Promise<OidcProviderModule>;
  return loaded;
}

// oidc-provider's accessor for a provider's private state (the same module instance the provider
// uses: the package has no "exports" map, so the deep path resolves to the very file it imports).
const OIDC_PROVIDER_INTERNALS: string = 'oidc-provider/lib/helpers/weak_cache.js';

/**
 * oidc-provider 9 refuses `responseTypes: ['token']` (OAuth 2.0 implicit without an id_token) when
 * it validates its configuration, yet its authorization endpoint still knows how to answer it: it
 * checks requests against configuration.responseTypes at request time. So 'token' is added to that
 * list after construction (tested against 9.13.3: test/unit/oidc-login.test.ts fails if it stops
 * working). Implicit clients also need http loopback redirect URIs, which the provider's documented
 * recipe allows by skipping two client validations:
 * https://github.com/panva/node-oidc-provider/blob/main/recipes/implicit_http_localhost.md
 */
export async function allowPlainTokenResponseType(provider: Provider): Promise<void> {
  const { default: internals } = (await import(OIDC_PROVIDER_INTERNALS)) as {
    default: (
      provider: unknown,
    ) => { configuration?: { responseTypes?: unknown; grantTypes?: unknown } } | undefined;
  };
  const configuration = internals(provider)?.configuration;
  const responseTypes = configuration?.responseTypes;
  const grantTypes = configuration?.grantTypes;
  if (!Array.isArray(responseTypes) || !(grantTypes instanceof Set)) {
    throw new Error('oidc-provider internals changed: cannot enable response_type=token');
  }
  if (!responseTypes.includes('token')) responseTypes.push('token');
  grantTypes.add('implicit');

  const schema = provider.Client.Schema.prototype;
  const invalidate = schema.invalidate;
  schema.invalidate = function (message, code) {
    if (code === 'implicit-force-https' || code === 'implicit-forbid-localhost') return;
    invalidate.call(this, message, code);
  };
}
