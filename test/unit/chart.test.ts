// The Helm chart (charts/oauth-token-operator). Static checks run everywhere; the checks of the
// rendered manifests need `helm` (built from its Go module by
// charts/oauth-token-operator/tests/install-tools.sh) and are skipped, with a note, without it.
// OTO_REQUIRE_TOOLS=1 turns a missing helm into a failure (for CI after the install script ran).
import type {
  V1ClusterRole,
  V1ClusterRoleBinding,
  V1Container,
  V1Deployment,
  V1NetworkPolicy,
  V1PodDisruptionBudget,
  V1PolicyRule,
  V1Role,
  V1RoleBinding,
  V1Service,
} from '@kubernetes/client-node';
import { spawnSync } from 'node:child_process';
import { BlockList, isIPv6 } from 'node:net';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { FLAGS, parseConfig, type OperatorConfig } from '../../src/config.ts';
import { findTool } from '../harness/tools.ts';

const root = resolve(import.meta.dirname, '../..');
const chartDir = join(root, 'charts/oauth-token-operator');
const RELEASE = 'oauth-token-operator';
const NAMESPACE = 'oto';
// Explicit, so that a helm built without its release ldflags (which default to Kubernetes 1.20)
// renders too.
const KUBE_VERSION = '1.33.0';
const INSTALL_HINT =
  'run charts/oauth-token-operator/tests/install-tools.sh helm (builds helm v3.21.4 from its Go module into ~/.cache/oauth-token-operator/tools/bin), or: go install helm.sh/helm/v3/cmd/helm@v3.21.4';

const helm = findTool('helm', 'OTO_HELM');
const requireTools = process.env.OTO_REQUIRE_TOOLS === '1';
if (!helm && !requireTools) {
  console.warn(
    `chart.test.ts: helm not found; the rendering tests are skipped. To run them: ${INSTALL_HINT}`,
  );
}

interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

const scratch = mkdtempSync(join(tmpdir(), 'oto-chart-test-'));
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

let valuesFiles = 0;
function runHelm(
  args: string[],
  values: object = {},
): { status: number | null; stdout: string; stderr: string } {
  if (!helm) throw new Error(`helm not found: ${INSTALL_HINT}`);
  const valuesFile = join(scratch, `values-${String(valuesFiles++)}.json`);
  writeFileSync(valuesFile, JSON.stringify(values));
  const result = spawnSync(helm, [...args, '--kube-version', KUBE_VERSION, '--values', valuesFile], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

const rendered = new Map<string, Manifest[]>();

/** The chart's manifests for these values (memoised: each helm run costs a few hundred ms). */
function render(values: object = {}, options: { chart?: string; extraArgs?: string[] } = {}): Manifest[] {
  const key = JSON.stringify([values, options]);
  const cached = rendered.get(key);
  if (cached) return structuredClone(cached);
  const result = runHelm(
    ['template', RELEASE, options.chart ?? chartDir, '--namespace', NAMESPACE, ...(options.extraArgs ?? [])],
    values,
  );
  if (result.status !== 0) throw new Error(`helm template failed:\n${result.stderr}`);
  const manifests = parseAllDocuments(result.stdout)
    .map((doc) => doc.toJS() as Manifest | null)
    .filter((doc): doc is Manifest => doc !== null);
  rendered.set(key, manifests);
  return structuredClone(manifests);
}

interface ServiceMonitor {
  spec: { endpoints: Record<string, unknown>[]; selector: unknown };
}

/** The object types of the kinds the chart renders. */
interface Kinds {
  ClusterRole: V1ClusterRole;
  ClusterRoleBinding: V1ClusterRoleBinding;
  Deployment: V1Deployment;
  NetworkPolicy: V1NetworkPolicy;
  PodDisruptionBudget: V1PodDisruptionBudget;
  Role: V1Role;
  RoleBinding: V1RoleBinding;
  Service: V1Service;
  ServiceMonitor: ServiceMonitor;
}

function all<K extends keyof Kinds>(manifests: Manifest[], kind: K): Kinds[K][] {
  return manifests.filter((m) => m.kind === kind) as unknown as Kinds[K][];
}

function only<K extends keyof Kinds>(manifests: Manifest[], kind: K): Kinds[K] {
  const found = all(manifests, kind);
  expect(found.length, `exactly one ${kind}`).toBe(1);
  return found[0] as Kinds[K];
}

function operatorContainer(manifests: Manifest[]): V1Container {
  const containers = only(manifests, 'Deployment').spec?.template.spec?.containers ?? [];
  expect(containers.map((c) => c.name)).toEqual(['operator']);
  return containers[0] as V1Container;
}

/** The operator's configuration as parsed from the rendered container args and env. */
function configOf(manifests: Manifest[]): OperatorConfig {
  const container = operatorContainer(manifests);
  const parsed = parseConfig(container.args ?? [], { POD_NAME: 'pod-0', POD_NAMESPACE: NAMESPACE });
  if (parsed === 'help') throw new Error('the chart passes --help');
  return parsed;
}

const rbacRules = parse(readFileSync(join(chartDir, 'files/rbac-rules.yaml'), 'utf8')) as {
  connectionNamespaceRules: V1PolicyRule[];
  operatorNamespaceRules: V1PolicyRule[];
};
const values = parse(readFileSync(join(chartDir, 'values.yaml'), 'utf8')) as {
  operator: Record<string, unknown>;
  securityContext: { runAsUser: number };
};

describe('chart files', () => {
  const topLevel = readdirSync(join(root, 'crds')).sort();

  it('ships the same CRD files as crds/', () => {
    expect(readdirSync(join(chartDir, 'crds')).sort()).toEqual(topLevel);
  });

  it.each(topLevel)('charts/oauth-token-operator/crds/%s is identical to crds/%s', (file) => {
    expect(readFileSync(join(chartDir, 'crds', file), 'utf8')).toBe(
      readFileSync(join(root, 'crds', file), 'utf8'),
    );
  });

  it('has appVersion equal to the package version', () => {
    const chart = parse(readFileSync(join(chartDir, 'Chart.yaml'), 'utf8')) as Record<string, unknown>;
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string };
    expect(chart.apiVersion).toBe('v2');
    expect(chart.appVersion).toBe(pkg.version);
  });

  it('has no wildcard in files/rbac-rules.yaml', () => {
    for (const rule of [...rbacRules.connectionNamespaceRules, ...rbacRules.operatorNamespaceRules]) {
      for (const value of [...rule.verbs, ...(rule.apiGroups ?? []), ...(rule.resources ?? [])]) {
        expect(value).not.toContain('*');
      }
    }
  });

  // Each operator.* value is a flag of src/config.ts, with the operator's own default.
  const flagName = (key: string): string => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
  const operatorValues = Object.entries(values.operator).filter(([key]) => key !== 'extraArgs');
  it.each(operatorValues)('operator.%s is a flag of the operator with its default', (key, value) => {
    const spec = FLAGS[flagName(key)];
    expect(spec, `--${flagName(key)} in src/config.ts`).toBeDefined();
    // The Lease is named after the release by default, so that the default is explicit in the chart.
    if (key === 'leaseName') return;
    const chartDefault = Array.isArray(value) ? value.join(',') : String(value);
    const operatorDefault = spec?.type === 'boolean' ? 'false' : (spec?.default ?? '');
    expect(chartDefault).toBe(operatorDefault);
  });

  it('matches the Dockerfile: Node 24, production dependencies, dist/main.js, user 65532', () => {
    const dockerfile = readFileSync(join(root, 'Dockerfile'), 'utf8');
    expect(dockerfile).toMatch(/^ARG NODE_IMAGE=node:24-bookworm-slim$/m);
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
    expect(dockerfile).toMatch(/npm run build/);
    expect(dockerfile).toMatch(/^ENTRYPOINT \["node", "dist\/main\.js"\]$/m);
    const users = [...dockerfile.matchAll(/^USER (\d+):(\d+)$/gm)];
    expect(users.map((m) => Number(m[1]))).toEqual([values.securityContext.runAsUser]);
  });
});

describe.runIf(helm === undefined && requireTools)('chart rendering (tools required)', () => {
  it('has helm', () => {
    expect.fail(`OTO_REQUIRE_TOOLS=1 but helm was not found: ${INSTALL_HINT}`);
  });
});

describe.skipIf(helm === undefined)('chart rendered by helm template', { timeout: 60_000 }, () => {
  const allOn = {
    serviceMonitor: { enabled: true },
    networkPolicy: { enabled: true, apiServer: { cidrs: ['10.96.0.1/32', '172.18.0.2/32'] } },
    prometheusRule: { enabled: true, runbookBaseURL: 'https://runbooks.example/oto' },
    operator: {
      allowedHosts: ['start.exactonline.nl', '*.concursolutions.com'],
      watchNamespaces: ['apps', 'billing'],
    },
  };

  it.each([
    ['default values', {}],
    ['every option on', allOn],
  ])('passes helm lint --strict with %s', (_name, caseValues) => {
    const result = runHelm(['lint', '--strict', chartDir], caseValues);
    expect(result.status, result.stdout + result.stderr).toBe(0);
  });

  it('renders the expected kinds with default values', () => {
    const kinds = render().map((m) => `${m.kind}/${m.metadata.name}`);
    expect(kinds.sort()).toEqual(
      [
        'ClusterRole',
        'ClusterRoleBinding',
        'Deployment',
        'PodDisruptionBudget',
        'PrometheusRule',
        'Role',
        'RoleBinding',
        'Service',
        'ServiceAccount',
      ].map((kind) => `${kind}/oauth-token-operator`),
    );
  });

  it("puts every namespaced object in the release namespace, but the watched namespaces' Roles", () => {
    const clusterScoped = new Set(['ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition']);
    const inWatched = new Set([
      'Role/oauth-token-operator-connections',
      'RoleBinding/oauth-token-operator-connections',
    ]);
    const watched: string[] = [];
    for (const manifest of render(allOn, { extraArgs: ['--include-crds'] })) {
      const id = `${manifest.kind}/${manifest.metadata.name}`;
      if (clusterScoped.has(manifest.kind)) expect(manifest.metadata.namespace).toBeUndefined();
      else if (inWatched.has(id)) watched.push(`${id} in ${manifest.metadata.namespace ?? ''}`);
      else expect(manifest.metadata.namespace, id).toBe(NAMESPACE);
    }
    expect(watched.sort()).toEqual(
      ['apps', 'billing'].flatMap((ns) => [...inWatched].map((id) => `${id} in ${ns}`)).sort(),
    );
  });

  describe('Deployment', () => {
    const manifests = helm ? render() : [];
    const deployment = (): V1Deployment => only(manifests, 'Deployment');

    it('runs 2 replicas that share one ServiceAccount with its token mounted', () => {
      const spec = deployment().spec;
      expect(spec?.replicas).toBe(2);
      expect(spec?.template.spec?.automountServiceAccountToken).toBe(true);
      expect(spec?.template.spec?.serviceAccountName).toBe('oauth-token-operator');
      expect(spec?.selector.matchLabels).toEqual(
        expect.objectContaining({ 'app.kubernetes.io/name': 'oauth-token-operator' }),
      );
    });

    // The restricted Pod Security Standard, field by field.
    it.each([
      ['pod', 'runAsNonRoot', true],
      ['pod', 'runAsUser', 65532],
      ['pod', 'seccompProfile', { type: 'RuntimeDefault' }],
      ['container', 'runAsNonRoot', true],
      ['container', 'runAsUser', 65532],
      ['container', 'readOnlyRootFilesystem', true],
      ['container', 'allowPrivilegeEscalation', false],
      ['container', 'privileged', false],
      ['container', 'capabilities', { drop: ['ALL'] }],
      ['container', 'seccompProfile', { type: 'RuntimeDefault' }],
    ])('%s securityContext.%s is %j', (level, field, expected) => {
      const context =
        level === 'pod'
          ? deployment().spec?.template.spec?.securityContext
          : operatorContainer(manifests).securityContext;
      expect((context as Record<string, unknown> | undefined)?.[field]).toEqual(expected);
    });

    it('uses no host namespaces, host paths or privileged ports', () => {
      const pod = deployment().spec?.template.spec;
      expect(pod?.hostNetwork ?? false).toBe(false);
      expect(pod?.hostPID ?? false).toBe(false);
      expect(pod?.hostIPC ?? false).toBe(false);
      expect(pod?.volumes?.every((v) => v.hostPath === undefined)).toBe(true);
      expect(operatorContainer(manifests).ports?.every((p) => p.containerPort >= 1024)).toBe(true);
    });

    it('gets POD_NAME and POD_NAMESPACE from the downward API', () => {
      const env = operatorContainer(manifests).env ?? [];
      expect(env.find((e) => e.name === 'POD_NAME')?.valueFrom?.fieldRef?.fieldPath).toBe('metadata.name');
      expect(env.find((e) => e.name === 'POD_NAMESPACE')?.valueFrom?.fieldRef?.fieldPath).toBe(
        'metadata.namespace',
      );
    });

    it('serves metrics on 8080 with liveness on /healthz and readiness on /readyz', () => {
      const container = operatorContainer(manifests);
      expect(container.ports).toEqual([{ name: 'metrics', containerPort: 8080, protocol: 'TCP' }]);
      expect(container.livenessProbe?.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
      expect(container.readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
      expect(configOf(manifests).metricsAddress).toBe(':8080');
    });

    it('sets resource requests and limits', () => {
      const resources = operatorContainer(manifests).resources;
      for (const kind of ['requests', 'limits'] as const) {
        expect(resources?.[kind]?.cpu, kind).toBeTruthy();
        expect(resources?.[kind]?.memory, kind).toBeTruthy();
      }
    });

    it('mounts only a size-limited emptyDir at /tmp', () => {
      expect(operatorContainer(manifests).volumeMounts).toEqual([{ name: 'tmp', mountPath: '/tmp' }]);
      expect(deployment().spec?.template.spec?.volumes).toEqual([
        { name: 'tmp', emptyDir: { sizeLimit: '64Mi' } },
      ]);
    });
  });

  // The rendered args go through the operator's own flag parser.
  it.each<[string, object, Partial<OperatorConfig>]>([
    [
      'default values',
      {},
      {
        namespace: NAMESPACE,
        identity: 'pod-0',
        leaseName: 'oauth-token-operator',
        leaseDurationMs: 15_000,
        renewDeadlineMs: 10_000,
        retryPeriodMs: 2_000,
        workers: 4,
        logLevel: 'info',
        allowInsecureHttp: false,
        allowPrivateNetworks: false,
        allowedHosts: [],
        metricsAddress: ':8080',
        drainTimeoutMs: 20_000,
      },
    ],
    [
      'lease timings, workers and log level',
      {
        operator: {
          leaseDuration: '30s',
          renewDeadline: '20s',
          retryPeriod: '4s',
          workers: 8,
          logLevel: 'debug',
        },
      },
      {
        leaseDurationMs: 30_000,
        renewDeadlineMs: 20_000,
        retryPeriodMs: 4_000,
        workers: 8,
        logLevel: 'debug',
      },
    ],
    [
      'allowed hosts and watch namespaces (a repeat dropped)',
      {
        operator: {
          allowedHosts: ['start.exactonline.nl', '*.concursolutions.com'],
          watchNamespaces: ['apps', 'billing', 'apps'],
        },
      },
      {
        allowedHosts: ['start.exactonline.nl', '*.concursolutions.com'],
        watchNamespaces: ['apps', 'billing'],
      },
    ],
    ['allowInsecureHttp on', { operator: { allowInsecureHttp: true } }, { allowInsecureHttp: true }],
    ['allowPrivateNetworks on', { operator: { allowPrivateNetworks: true } }, { allowPrivateNetworks: true }],
    [
      'a lease name and metrics port',
      { operator: { leaseName: 'oto' }, metrics: { port: 9090 } },
      { leaseName: 'oto', metricsAddress: ':9090' },
    ],
    [
      'request caps',
      { operator: { requestTimeout: '10s', maxResponseBytes: 65536 } },
      { requestTimeoutMs: 10_000, maxResponseBytes: 65536 },
    ],
    [
      'deadlines, a per-namespace cap and a required Secret label',
      {
        operator: {
          loginDeadline: '90s',
          reconcileDeadline: '4m',
          maxInFlightPerNamespace: 2,
          requireSecretLabel: 'oauth.example.com/usable',
        },
      },
      {
        loginDeadlineMs: 90_000,
        reconcileDeadlineMs: 240_000,
        maxInFlightPerNamespace: 2,
        requireSecretLabel: 'oauth.example.com/usable',
      },
    ],
    [
      'a drain timeout within a longer grace period',
      { operator: { drainTimeout: '1m30s' }, terminationGracePeriodSeconds: 120 },
      { drainTimeoutMs: 90_000 },
    ],
    [
      'a fractional drain timeout just below the grace period',
      { operator: { drainTimeout: '29.5s' } },
      { drainTimeoutMs: 29_500 },
    ],
  ])('passes the operator valid flags: %s', (_name, caseValues, expected) => {
    expect(configOf(render(caseValues))).toEqual(expect.objectContaining(expected));
  });

  it('gives a stopping pod 30 s, more than the 20 s drain timeout', () => {
    const manifests = render();
    expect(only(manifests, 'Deployment').spec?.template.spec?.terminationGracePeriodSeconds).toBe(30);
    expect(configOf(manifests).drainTimeoutMs).toBeLessThan(30_000);
  });

  // The leader releases its Lease only after the drain, so the kubelet must not kill it first.
  it.each<[string, object, RegExp]>([
    ['a drain timeout equal to the grace period', { operator: { drainTimeout: '30s' } }, /shorter than/],
    ['a drain timeout beyond the grace period', { operator: { drainTimeout: '1m' } }, /shorter than/],
    [
      'a grace period lowered below the drain timeout',
      { terminationGracePeriodSeconds: 15 },
      /shorter than terminationGracePeriodSeconds/,
    ],
    ['a zero drain timeout', { operator: { drainTimeout: '0s' } }, /greater than zero/],
    ['a drain timeout without a unit', { operator: { drainTimeout: '20' } }, /not a duration/],
  ])('refuses to render %s', (_name, caseValues, message) => {
    const result = runHelm(['template', RELEASE, chartDir, '--namespace', NAMESPACE], caseValues);
    expect(result.status).not.toBe(0);
    expect(result.stderr).toMatch(message);
  });

  describe('RBAC', () => {
    const SA = { kind: 'ServiceAccount', name: 'oauth-token-operator', namespace: NAMESPACE };
    // Default values: every namespace. watchNamespaces: the chart grants nothing cluster-wide.
    const cluster = helm ? render() : [];
    const confined = helm ? render({ operator: { watchNamespaces: ['apps', 'billing'] } }) : [];
    const roleIn = (manifests: Manifest[], namespace: string): V1Role => {
      const found = all(manifests, 'Role').filter((r) => r.metadata?.namespace === namespace);
      expect(found.length, `one Role in ${namespace}`).toBe(1);
      return found[0] as V1Role;
    };
    const bindingIn = (manifests: Manifest[], namespace: string): V1RoleBinding => {
      const found = all(manifests, 'RoleBinding').filter((r) => r.metadata?.namespace === namespace);
      expect(found.length, `one RoleBinding in ${namespace}`).toBe(1);
      return found[0] as V1RoleBinding;
    };
    const verbsOn = (rules: V1PolicyRule[] | undefined, group: string, resource: string): string[] =>
      (rules ?? [])
        .filter((rule) => rule.apiGroups?.includes(group) && rule.resources?.includes(resource))
        .flatMap((rule) => rule.verbs)
        .sort();

    it('without watchNamespaces: connectionNamespaceRules in a ClusterRole bound to the ServiceAccount', () => {
      expect(only(cluster, 'ClusterRole').rules).toEqual(rbacRules.connectionNamespaceRules);
      const binding = only(cluster, 'ClusterRoleBinding');
      expect(binding.roleRef).toEqual({
        apiGroup: 'rbac.authorization.k8s.io',
        kind: 'ClusterRole',
        name: 'oauth-token-operator',
      });
      expect(binding.subjects).toEqual([SA]);
      expect(all(cluster, 'Role').map((r) => r.metadata?.namespace)).toEqual([NAMESPACE]);
    });

    it.each(['apps', 'billing'])(
      'with watchNamespaces: connectionNamespaceRules in a Role of %s, nothing cluster-wide',
      (namespace) => {
        expect(all(confined, 'ClusterRole')).toEqual([]);
        expect(all(confined, 'ClusterRoleBinding')).toEqual([]);
        const role = roleIn(confined, namespace);
        expect(role.metadata?.name).toBe('oauth-token-operator-connections');
        expect(role.rules).toEqual(rbacRules.connectionNamespaceRules);
        const binding = bindingIn(confined, namespace);
        expect(binding.roleRef).toEqual({
          apiGroup: 'rbac.authorization.k8s.io',
          kind: 'Role',
          name: 'oauth-token-operator-connections',
        });
        expect(binding.subjects).toEqual([SA]);
      },
    );

    it('with watchNamespaces: the operator is told the same namespaces the Roles are in', () => {
      const args = only(confined, 'Deployment').spec?.template.spec?.containers[0]?.args ?? [];
      expect(args).toContain('--watch-namespaces=apps,billing');
    });

    it('with the release namespace among watchNamespaces: two Roles there, neither replacing the other', () => {
      const manifests = render({ operator: { watchNamespaces: [NAMESPACE] } });
      const names = all(manifests, 'Role').map(
        (r) => `${r.metadata?.namespace ?? ''}/${r.metadata?.name ?? ''}`,
      );
      expect(names.sort()).toEqual([
        `${NAMESPACE}/oauth-token-operator`,
        `${NAMESPACE}/oauth-token-operator-connections`,
      ]);
    });

    it.each([
      ['without watchNamespaces', () => cluster],
      ['with watchNamespaces', () => confined],
    ])(
      '%s: operatorNamespaceRules (state Secrets, Lease) in a Role of the release namespace only',
      (_name, manifests) => {
        const role = roleIn(manifests(), NAMESPACE);
        expect(role.metadata?.name).toBe('oauth-token-operator');
        expect(role.rules).toEqual(rbacRules.operatorNamespaceRules);
        expect(bindingIn(manifests(), NAMESPACE).subjects).toEqual([SA]);
        expect(verbsOn(role.rules, 'coordination.k8s.io', 'leases')).toEqual(['create', 'get', 'update']);
      },
    );

    // What the audit test (test/integration/rbac-audit.test.ts) found the operator to use.
    it.each<[string, string, string, string[]]>([
      [
        'connections: no update, nothing replaces one',
        'oauth.token-operator.dev',
        'oauthconnections',
        ['get', 'list', 'patch', 'watch'],
      ],
      ['status: merge patches only', 'oauth.token-operator.dev', 'oauthconnections/status', ['patch']],
      ['Events: created, and patched when repeated', '', 'events', ['create', 'patch']],
      [
        'Secrets: referenced, output (metadata informer), seed mark (no delete)',
        '',
        'secrets',
        ['create', 'get', 'list', 'patch', 'update', 'watch'],
      ],
    ])('grants in the connection namespaces %s', (_name, group, resource, verbs) => {
      expect(verbsOn(rbacRules.connectionNamespaceRules, group, resource)).toEqual(verbs);
    });

    it('grants on Secrets in the release namespace what the state store does (no patch)', () => {
      expect(verbsOn(rbacRules.operatorNamespaceRules, '', 'secrets')).toEqual([
        'create',
        'delete',
        'get',
        'list',
        'update',
        'watch',
      ]);
    });

    it.each([
      ['without watchNamespaces', () => cluster, 2],
      ['with watchNamespaces', () => confined, 3],
    ])(
      '%s: no wildcard verb, resource or API group in any Role or ClusterRole',
      (_name, manifests, count) => {
        const roles: (V1Role | V1ClusterRole)[] = [
          ...all(manifests(), 'Role'),
          ...all(manifests(), 'ClusterRole'),
        ];
        expect(roles.length).toBe(count);
        for (const role of roles) {
          for (const rule of role.rules ?? []) {
            expect(rule.verbs.length).toBeGreaterThan(0);
            for (const value of [...rule.verbs, ...(rule.resources ?? []), ...(rule.apiGroups ?? [])]) {
              expect(value, `${role.kind ?? ''} ${JSON.stringify(rule)}`).not.toContain('*');
            }
            expect(rule.nonResourceURLs).toBeUndefined();
          }
        }
      },
    );

    it.each([
      ['a wildcard verb', { apiGroups: [''], resources: ['secrets'], verbs: ['*'] }],
      ['a wildcard resource', { apiGroups: [''], resources: ['*'], verbs: ['get'] }],
      ['a wildcard subresource', { apiGroups: [''], resources: ['pods/*'], verbs: ['get'] }],
      ['a wildcard API group', { apiGroups: ['*'], resources: ['secrets'], verbs: ['get'] }],
    ])('refuses to render with %s in files/rbac-rules.yaml', (_name, rule) => {
      const copy = join(scratch, `chart-${String(valuesFiles++)}`);
      cpSync(chartDir, copy, { recursive: true });
      writeFileSync(
        join(copy, 'files/rbac-rules.yaml'),
        JSON.stringify({
          connectionNamespaceRules: rbacRules.connectionNamespaceRules,
          operatorNamespaceRules: [...rbacRules.operatorNamespaceRules, rule],
        }),
      );
      const result = runHelm(['template', RELEASE, copy, '--namespace', NAMESPACE]);
      expect(result.status).not.toBe(0);
      expect(result.stderr).toMatch(/wildcard/);
    });

    it.each(['Apps', 'apps,billing', 'a_b', '-apps'])(
      'refuses watchNamespaces [%j], which names no namespace',
      (name) => {
        const result = runHelm(['template', RELEASE, chartDir, '--namespace', NAMESPACE], {
          operator: { watchNamespaces: ['apps', name] },
        });
        expect(result.status).not.toBe(0);
        expect(result.stderr).toMatch(/operator.watchNamespaces: .* is not a namespace name/);
      },
    );

    it('accepts an empty leftover operator.watchNamespace from old default values', () => {
      const result = runHelm(['template', RELEASE, chartDir, '--namespace', NAMESPACE], {
        operator: { watchNamespace: '' },
      });
      expect(result.status, result.stderr).toBe(0);
    });

    it('refuses the old operator.watchNamespace, naming its replacement', () => {
      const result = runHelm(['template', RELEASE, chartDir, '--namespace', NAMESPACE], {
        operator: { watchNamespace: 'apps' },
      });
      expect(result.status).not.toBe(0);
      expect(result.stderr).toMatch(/operator.watchNamespace was renamed: set operator.watchNamespaces/);
    });
  });

  it('installs the CRD of crds/ (helm template --include-crds)', () => {
    const crds = render({}, { extraArgs: ['--include-crds'] }).filter(
      (m) => m.kind === 'CustomResourceDefinition',
    );
    const expected = readdirSync(join(root, 'crds')).map(
      (file) => parse(readFileSync(join(root, 'crds', file), 'utf8')) as unknown,
    );
    expect(crds).toEqual(expected);
  });

  // Optional objects: [case, kind, rendered?, values]
  it.each<[string, string, boolean, object]>([
    ['by default', 'ServiceMonitor', false, {}],
    ['by default', 'NetworkPolicy', false, {}],
    ['by default', 'PrometheusRule', true, {}],
    ['by default', 'PodDisruptionBudget', true, {}],
    ['with serviceMonitor.enabled', 'ServiceMonitor', true, { serviceMonitor: { enabled: true } }],
    [
      'with networkPolicy.enabled',
      'NetworkPolicy',
      true,
      { networkPolicy: { enabled: true, apiServer: { cidrs: ['10.0.0.1/32'] } } },
    ],
    ['with prometheusRule.enabled=false', 'PrometheusRule', false, { prometheusRule: { enabled: false } }],
    [
      'with podDisruptionBudget.enabled=false',
      'PodDisruptionBudget',
      false,
      { podDisruptionBudget: { enabled: false } },
    ],
    ['with rbac.create=false', 'ClusterRole', false, { rbac: { create: false } }],
    ['with rbac.create=false', 'Role', false, { rbac: { create: false } }],
    [
      'with serviceAccount.create=false',
      'ServiceAccount',
      false,
      { serviceAccount: { create: false, name: 'existing' } },
    ],
  ])('%s: %s rendered: %s', (_name, kind, present, caseValues) => {
    expect(render(caseValues).some((m) => m.kind === kind)).toBe(present);
  });

  it('uses an existing ServiceAccount when told to', () => {
    const manifests = render({ serviceAccount: { create: false, name: 'existing' } });
    expect(only(manifests, 'Deployment').spec?.template.spec?.serviceAccountName).toBe('existing');
    expect(only(manifests, 'ClusterRoleBinding').subjects?.[0]?.name).toBe('existing');
  });

  it('keeps at least one replica through voluntary disruptions', () => {
    const pdb = only(render(), 'PodDisruptionBudget');
    expect(pdb.spec?.minAvailable).toBe(1);
    expect(pdb.spec?.selector?.matchLabels).toEqual(only(render(), 'Deployment').spec?.selector.matchLabels);
  });

  it('exposes the metrics port in a Service and the ServiceMonitor scrapes it keeping the namespace label', () => {
    const manifests = render({ serviceMonitor: { enabled: true } });
    const service = only(manifests, 'Service');
    expect(service.spec?.ports).toEqual([
      { name: 'metrics', port: 8080, targetPort: 'metrics', protocol: 'TCP' },
    ]);
    const monitor = only(manifests, 'ServiceMonitor');
    expect(monitor.spec.endpoints).toEqual([
      expect.objectContaining({ port: 'metrics', path: '/metrics', honorLabels: true }),
    ]);
    expect(monitor.spec.selector).toEqual({ matchLabels: service.spec?.selector });
  });

  describe('NetworkPolicy', () => {
    const API_SERVER = ['10.96.0.1/32', '172.18.0.2/32'];
    const policyValues = {
      networkPolicy: {
        enabled: true,
        apiServer: { cidrs: API_SERVER },
        tokenEndpoints: { allowedCIDRs: ['10.20.0.0/16'] },
        dns: { cidrs: ['169.254.20.10/32'] },
      },
    };
    const policy = (caseValues: object = policyValues): V1NetworkPolicy =>
      only(render(caseValues), 'NetworkPolicy');

    const familyOf = (address: string): 'ipv4' | 'ipv6' => (isIPv6(address) ? 'ipv6' : 'ipv4');
    function inCidr(address: string, cidr: string): boolean {
      const [network = '', prefix = ''] = cidr.split('/');
      if (familyOf(network) !== familyOf(address)) return false;
      const list = new BlockList();
      list.addSubnet(network, Number(prefix), familyOf(network));
      return list.check(address, familyOf(address));
    }
    /**
     * Whether the policy lets a packet to address:port out through an ipBlock, as the NetworkPolicy
     * API defines it: rules are a union; a peer matches inside its cidr and outside its excepts; a
     * rule without ports allows every port.
     */
    function allows(np: V1NetworkPolicy, address: string, port: number, protocol = 'TCP'): boolean {
      return (np.spec?.egress ?? []).some((rule) => {
        const ports = rule.ports ?? [];
        const portMatches =
          ports.length === 0 || ports.some((p) => p.port === port && (p.protocol ?? 'TCP') === protocol);
        const peerMatches = (rule.to ?? []).some(
          (peer) =>
            peer.ipBlock !== undefined &&
            inCidr(address, peer.ipBlock.cidr) &&
            !(peer.ipBlock.except ?? []).some((blocked) => inCidr(address, blocked)),
        );
        return portMatches && peerMatches;
      });
    }

    it('restricts both directions of the operator pods', () => {
      const spec = policy().spec;
      expect(spec?.policyTypes).toEqual(['Ingress', 'Egress']);
      expect(spec?.podSelector?.matchLabels).toEqual(
        expect.objectContaining({ 'app.kubernetes.io/name': 'oauth-token-operator' }),
      );
    });

    it('lets in only the metrics port', () => {
      expect(policy().spec?.ingress).toEqual([{ ports: [{ port: 'metrics', protocol: 'TCP' }] }]);
    });

    // [what, address, port, protocol, let out?]
    it.each<[string, string, number, string, boolean]>([
      ['cloud instance metadata', '169.254.169.254', 443, 'TCP', false],
      ['cloud instance metadata on port 80', '169.254.169.254', 80, 'TCP', false],
      ['ECS task metadata (link-local)', '169.254.170.2', 443, 'TCP', false],
      ["Azure's WireServer", '168.63.129.16', 443, 'TCP', false],
      ["Alibaba Cloud's metadata (shared address space)", '100.100.100.200', 443, 'TCP', false],
      ["AWS's IPv6 metadata (unique-local)", 'fd00:ec2::254', 443, 'TCP', false],
      ['IPv6 link-local', 'fe80::1', 443, 'TCP', false],
      ['10.0.0.0/8', '10.1.2.3', 443, 'TCP', false],
      ['172.16.0.0/12', '172.31.255.254', 443, 'TCP', false],
      ['192.168.0.0/16', '192.168.1.1', 443, 'TCP', false],
      ['IPv6 unique-local', 'fd12:3456::1', 443, 'TCP', false],
      ['a private address through NAT64', '64:ff9b::a00:1', 443, 'TCP', false],
      ['cloud metadata through NAT64', '64:ff9b::a9fe:a9fe', 443, 'TCP', false],
      ['a public IPv4 token endpoint', '203.0.113.10', 443, 'TCP', true],
      ['a public IPv6 token endpoint', '2001:db8::10', 443, 'TCP', true],
      ['a public IPv4 address through NAT64', '64:ff9b::cb00:710a', 443, 'TCP', true],
      ['a public address on port 80', '203.0.113.10', 80, 'TCP', false],
      ['the API server Service', '10.96.0.1', 443, 'TCP', true],
      ['an API server endpoint on 6443', '172.18.0.2', 6443, 'TCP', true],
      ['the API server on another port', '10.96.0.1', 22, 'TCP', false],
      ['the address next to the API server', '10.96.0.2', 443, 'TCP', false],
      ['an allowed private range (allowedCIDRs)', '10.20.1.1', 443, 'TCP', true],
      ['an allowed private range on another port', '10.20.1.1', 8443, 'TCP', false],
      ['a resolver named in dns.cidrs (NodeLocal DNSCache)', '169.254.20.10', 53, 'UDP', true],
      ['a resolver named in dns.cidrs on another port', '169.254.20.10', 443, 'TCP', false],
      ['port 53 of any other private address', '10.0.0.10', 53, 'UDP', false],
    ])('egress to %s (%s:%i/%s): %s', (_what, address, port, protocol, expected) => {
      expect(allows(policy(), address, port, protocol)).toBe(expected);
    });

    it('reaches DNS at the cluster resolver pods on port 53 only', () => {
      const dns = (policy().spec?.egress ?? []).filter((rule) =>
        rule.to?.some((peer) => peer.podSelector !== undefined),
      );
      expect(dns).toHaveLength(1);
      expect(dns[0]?.to?.[0]).toEqual({
        namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } },
        podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } },
      });
      expect(dns[0]?.ports).toEqual([
        { port: 53, protocol: 'UDP' },
        { port: 53, protocol: 'TCP' },
      ]);
    });

    it('opens the API server ports to the named addresses only', () => {
      const rules = (policy().spec?.egress ?? []).filter((rule) => rule.ports?.some((p) => p.port === 6443));
      expect(rules).toHaveLength(1);
      expect(rules[0]?.to).toEqual(API_SERVER.map((cidr) => ({ ipBlock: { cidr } })));
    });

    it('lets out nothing on ports other than 53, 443 and 6443, and every rule names its ports', () => {
      const rules = policy().spec?.egress ?? [];
      for (const rule of rules) expect(rule.ports?.length).toBeGreaterThan(0);
      expect(new Set(rules.flatMap((rule) => (rule.ports ?? []).map((p) => p.port)))).toEqual(
        new Set([53, 443, 6443]),
      );
    });

    // The API server refuses an except that is not inside its cidr.
    it('carves blocked ranges of its family out of each /0, and nothing out of a narrower CIDR', () => {
      const np = policy({
        networkPolicy: {
          enabled: true,
          apiServer: { cidrs: API_SERVER },
          tokenEndpoints: { cidrs: ['0.0.0.0/0', '::/0', '203.0.113.0/24'] },
        },
      });
      const blocks = (np.spec?.egress ?? [])
        .flatMap((rule) => rule.to ?? [])
        .flatMap((peer) => (peer.ipBlock ? [peer.ipBlock] : []));
      const byCidr = new Map(blocks.map((block) => [block.cidr, block.except]));
      expect(byCidr.get('203.0.113.0/24')).toBeUndefined();
      for (const cidr of ['0.0.0.0/0', '::/0']) {
        const except = byCidr.get(cidr) ?? [];
        expect(except.length, cidr).toBeGreaterThan(0);
        for (const blocked of except) expect(inCidr(blocked.split('/')[0] ?? '', cidr), blocked).toBe(true);
      }
    });

    it.each<[string, object, RegExp]>([
      ['without API server addresses', {}, /networkPolicy.apiServer.cidrs is required/],
      [
        'with 0.0.0.0/0 for the API server',
        { apiServer: { cidrs: ['0.0.0.0/0'] } },
        /networkPolicy.apiServer.cidrs: 0.0.0.0\/0 would open every address/,
      ],
      [
        'with ::/0 in allowedCIDRs',
        { apiServer: { cidrs: API_SERVER }, tokenEndpoints: { allowedCIDRs: ['::/0'] } },
        /networkPolicy.tokenEndpoints.allowedCIDRs: ::\/0 would open every address/,
      ],
      [
        'with 0.0.0.0/0 as a DNS server',
        { apiServer: { cidrs: API_SERVER }, dns: { cidrs: ['0.0.0.0/0'] } },
        /networkPolicy.dns.cidrs: 0.0.0.0\/0/,
      ],
    ])('refuses to render %s', (_name, networkPolicy, message) => {
      const result = runHelm(['template', RELEASE, chartDir, '--namespace', NAMESPACE], {
        networkPolicy: { enabled: true, ...networkPolicy },
      });
      expect(result.status).not.toBe(0);
      expect(result.stderr).toMatch(message);
    });
  });
});
