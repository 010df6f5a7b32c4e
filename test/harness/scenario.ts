// The setup the integration tests, the demo (test/demo/demo.ts) and the benchmark
// (test/bench/scale.ts) share: the CRDs on a real API server, test OpenID providers whose client is
// the one connection() in builders.ts names (client ID 'operator', its secret in the Secret 'client',
// the seed of connection X in the Secret 'X-seed'), namespaces with that client Secret, seeded
// connections, and operator processes. close() stops the operators and providers it started.
import type * as k8s from '@kubernetes/client-node';
import { connection, createConnection, createSecret, type ConnectionOverrides } from './builders.ts';
import { applyCRDs, createNamespace, loadKubeConfig } from './kube.ts';
import { canary } from './leaks.ts';
import {
  startTestOidcServer,
  type GrantType,
  type TestOidcServer,
  type TestOidcServerOptions,
} from './oidc/server.ts';
import {
  setupOperatorEnvironment,
  startOperator,
  type OperatorEnvironment,
  type OperatorProcess,
  type StartOperatorOptions,
} from './operator.ts';

export interface ScenarioProviderOptions extends Omit<TestOidcServerOptions, 'clients'> {
  /** Grant types of the client 'operator'; default refresh_token only. */
  grantTypes?: GrantType[];
}

export interface ScenarioOperatorOptions extends StartOperatorOptions {
  /** The namespace, or namespaces, the operator watches (--watch-namespaces); default every namespace. */
  watchNamespace?: string | readonly string[];
}

/** The secret of the provider's client 'operator' (a canary, see Scenario.startProvider). */
export function clientSecretOf(provider: TestOidcServer): string {
  return provider.clients[0]?.clientSecret ?? '';
}

export class Scenario {
  /** Cluster admin on the scenario's API server. */
  readonly admin: k8s.KubeConfig;
  private readonly providers: TestOidcServer[] = [];
  private readonly operators: OperatorProcess[] = [];

  private constructor(admin: k8s.KubeConfig) {
    this.admin = admin;
  }

  /** The API server of `kubeconfigPath`, with the CRDs of crds/ applied. */
  static async open(kubeconfigPath: string): Promise<Scenario> {
    const admin = loadKubeConfig(kubeconfigPath);
    await applyCRDs(admin);
    return new Scenario(admin);
  }

  /**
   * A test OpenID provider with one confidential client, 'operator', whose secret is a canary
   * (leaks.ts) that leak scans can look for.
   */
  async startProvider(options: ScenarioProviderOptions = {}): Promise<TestOidcServer> {
    const { grantTypes = ['refresh_token'], ...serverOptions } = options;
    const provider = await startTestOidcServer({
      ...serverOptions,
      clients: [
        {
          clientId: 'operator',
          clientSecret: canary('client-secret'),
          authMethod: 'client_secret_basic',
          grantTypes,
        },
      ],
    });
    this.providers.push(provider);
    return provider;
  }

  /** A new namespace, `prefix` and a random suffix, holding `clientSecret` in the Secret 'client'. */
  async clientNamespace(prefix: string, clientSecret: string): Promise<string> {
    const namespace = await createNamespace(this.admin, prefix);
    await createSecret(this.admin, namespace, 'client', { client_secret: clientSecret });
    return namespace;
  }

  /**
   * The refresh-token connection `name` of builders.ts's connection(), with a refresh token fresh
   * from `provider` (for `seedAccountId`, default the provider's) in its seed Secret. Returns the
   * seed.
   */
  async seededConnection(
    provider: TestOidcServer,
    namespace: string,
    name: string,
    overrides: ConnectionOverrides = {},
    seedAccountId?: string,
  ): Promise<string> {
    const seed = await provider.seedRefreshToken({ clientId: 'operator', accountId: seedAccountId });
    await createSecret(this.admin, namespace, `${name}-seed`, { refresh_token: seed });
    await createConnection(this.admin, connection(namespace, name, provider.issuer, overrides));
    return seed;
  }

  /** A namespace of its own for operators (their Lease and state), with the chart's RBAC. */
  operatorEnvironment(): Promise<OperatorEnvironment> {
    return setupOperatorEnvironment(this.admin);
  }

  startOperator(options: ScenarioOperatorOptions): OperatorProcess {
    const { watchNamespace, args = [], ...rest } = options;
    const operator = startOperator({
      ...rest,
      args:
        watchNamespace === undefined
          ? args
          : ['--watch-namespaces', [watchNamespace].flat().join(','), ...args],
    });
    this.operators.push(operator);
    return operator;
  }

  /** Stops every operator started here with `signal`, then every provider. */
  async close(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    await Promise.all(this.operators.map((operator) => operator.kill(signal)));
    await Promise.all(this.providers.map((provider) => provider.close()));
  }
}
