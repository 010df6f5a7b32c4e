// The operator's RBAC rules, read from the Helm chart's rules file (charts/oauth-token-operator/
// files/rbac-rules.yaml) so that the tests run the operator with exactly what the chart grants, and
// the comparison of those rules with the API server's audit log of what the operator did
// (test/integration/rbac-audit.test.ts). The comparison is pure and unit-tested
// (test/unit/rbac-audit.test.ts).
import * as k8s from '@kubernetes/client-node';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { createNamespace, repoRoot, serviceAccountKubeConfig } from './kube.ts';
import type { OperatorEnvironment } from './operator.ts';

export interface RulesFile {
  /** Where connections are reconciled: a ClusterRole, or a Role in each watched namespace. */
  connectionNamespaceRules: k8s.V1PolicyRule[];
  /** The operator's own namespace: state Secrets and the Lease. */
  operatorNamespaceRules: k8s.V1PolicyRule[];
}

export function rbacRulesFile(): RulesFile {
  return parse(
    readFileSync(join(repoRoot, 'charts', 'oauth-token-operator', 'files', 'rbac-rules.yaml'), 'utf8'),
  ) as RulesFile;
}

/** The rules of the namespaces holding connections; the chart binds them cluster-wide by default. */
export function operatorClusterRules(): k8s.V1PolicyRule[] {
  return rbacRulesFile().connectionNamespaceRules;
}

export function operatorNamespaceRules(): k8s.V1PolicyRule[] {
  return rbacRulesFile().operatorNamespaceRules;
}

export const SERVICE_ACCOUNT = 'oauth-token-operator';

async function grant(
  rbac: k8s.RbacAuthorizationV1Api,
  namespace: string,
  name: string,
  rules: k8s.V1PolicyRule[],
  subject: k8s.RbacV1Subject,
): Promise<void> {
  await rbac.createNamespacedRole({ namespace, body: { metadata: { name }, rules } });
  await rbac.createNamespacedRoleBinding({
    namespace,
    body: {
      metadata: { name },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name },
      subjects: [subject],
    },
  });
}

/**
 * An operator namespace and ServiceAccount with what the chart grants when operator.watchNamespaces
 * confines it: a Role with the connection rules in each watched namespace, a Role with the
 * operator's own rules in its namespace, nothing cluster-wide.
 */
export async function setupConfinedOperatorEnvironment(
  admin: k8s.KubeConfig,
  watchNamespaces: readonly string[],
): Promise<OperatorEnvironment> {
  const namespace = await createNamespace(admin, 'operator');
  const rbac = admin.makeApiClient(k8s.RbacAuthorizationV1Api);
  const rules = rbacRulesFile();
  const subject = { kind: 'ServiceAccount', name: SERVICE_ACCOUNT, namespace };
  for (const watched of watchNamespaces) {
    await grant(rbac, watched, `${SERVICE_ACCOUNT}-connections`, rules.connectionNamespaceRules, subject);
  }
  await grant(rbac, namespace, SERVICE_ACCOUNT, rules.operatorNamespaceRules, subject);
  const kc = await serviceAccountKubeConfig(admin, namespace, SERVICE_ACCOUNT);
  const kubeconfigPath = join(mkdtempSync(join(tmpdir(), 'oto-operator-')), 'kubeconfig');
  writeFileSync(kubeconfigPath, kc.exportConfig(), { mode: 0o600 });
  return { namespace, kubeconfigPath };
}

/** The fields of an audit.k8s.io/v1 Event the comparison reads (Metadata level). */
export interface AuditEvent {
  auditID: string;
  stage: string;
  verb: string;
  requestURI: string;
  user: { username: string };
  objectRef?: {
    apiGroup?: string;
    resource?: string;
    subresource?: string;
    namespace?: string;
    name?: string;
  };
  responseStatus?: { code?: number };
  annotations?: Record<string, string>;
}

/** Where a request was made, as the chart's two rule sets see it. */
export type Scope = 'operator namespace' | 'connection namespace' | `elsewhere (${string})`;

/** One RBAC permission: a scope, a verb and a resource (with its subresource) in an API group. */
export interface Access {
  scope: Scope;
  verb: string;
  /** '' for the core group. */
  apiGroup: string;
  /** resource or resource/subresource, as RBAC rules name them. */
  resource: string;
}

export function accessKey(access: Access): string {
  return `${access.scope}: ${access.verb} ${access.apiGroup === '' ? 'core' : access.apiGroup}/${access.resource}`;
}

/** Every permission a list of rules grants in `scope` (rules without wildcards, as the chart's). */
export function grantedAccesses(rules: readonly k8s.V1PolicyRule[], scope: Scope): Access[] {
  return rules.flatMap((rule) =>
    (rule.apiGroups ?? []).flatMap((apiGroup) =>
      (rule.resources ?? []).flatMap((resource) =>
        rule.verbs.map((verb) => ({ scope, verb, apiGroup, resource })),
      ),
    ),
  );
}

export interface Namespaces {
  operator: string;
  connections: readonly string[];
}

function scopeOf(namespace: string | undefined, namespaces: Namespaces): Scope {
  if (namespace === undefined || namespace === '') return 'elsewhere (cluster)';
  if (namespace === namespaces.operator) return 'operator namespace';
  if (namespaces.connections.includes(namespace)) return 'connection namespace';
  return `elsewhere (${namespace})`;
}

/** The permission a request needed; undefined for a request that names no resource (e.g. /version). */
export function accessOf(event: AuditEvent, namespaces: Namespaces): Access | undefined {
  const ref = event.objectRef;
  if (ref?.resource === undefined) return undefined;
  return {
    scope: scopeOf(ref.namespace, namespaces),
    verb: event.verb,
    apiGroup: ref.apiGroup ?? '',
    resource: ref.subresource ? `${ref.resource}/${ref.subresource}` : ref.resource,
  };
}

/** A request the API server refused for lack of permission. */
export function isForbidden(event: AuditEvent): boolean {
  return (
    event.responseStatus?.code === 403 || event.annotations?.['authorization.k8s.io/decision'] === 'forbid'
  );
}

/**
 * Parses audit log lines (JSON, one event a line), keeping those of `username`. A last line the API
 * server is still writing is left for the next read.
 */
export function auditEventsOf(text: string, username: string): AuditEvent[] {
  const lines = text.split('\n');
  if (!text.endsWith('\n')) lines.pop();
  return lines
    .filter((line) => line.includes(username))
    .map((line) => JSON.parse(line) as AuditEvent)
    .filter((event) => event.user.username === username);
}

export interface AuditComparison {
  /** Permissions the operator used, with how many requests each. */
  used: Map<string, number>;
  /** Requests refused (403), as "<permission> <requestURI>". */
  forbidden: string[];
  /** Permissions used but not granted (always refused too; listed by permission). */
  notGranted: string[];
  /** Permissions granted but never used, less those `excused` names. */
  unused: string[];
  /** Excuses for permissions that were in fact used or are not granted at all (stale entries). */
  staleExcuses: string[];
}

/**
 * Compares what the audit log shows the operator did with what its rules grant. `excused` maps the
 * key of a granted permission that a short test cannot exercise to the reason why.
 */
export function compareWithGrants(
  events: readonly AuditEvent[],
  granted: readonly Access[],
  namespaces: Namespaces,
  excused: Readonly<Record<string, string>> = {},
): AuditComparison {
  const grantedKeys = new Set(granted.map(accessKey));
  const used = new Map<string, number>();
  const forbidden: string[] = [];
  // A watch is logged at ResponseStarted and again at ResponseComplete: one request, one audit ID.
  const seen = new Set<string>();
  for (const event of events) {
    if (seen.has(event.auditID)) continue;
    seen.add(event.auditID);
    const access = accessOf(event, namespaces);
    if (access === undefined) continue;
    const key = accessKey(access);
    used.set(key, (used.get(key) ?? 0) + 1);
    if (isForbidden(event)) forbidden.push(`${key} ${event.requestURI}`);
  }
  const notGranted = [...used.keys()].filter((key) => !grantedKeys.has(key)).sort();
  const unused = [...grantedKeys].filter((key) => !used.has(key) && !(key in excused)).sort();
  const staleExcuses = Object.keys(excused)
    .filter((key) => used.has(key) || !grantedKeys.has(key))
    .sort();
  return { used, forbidden, notGranted, unused, staleExcuses };
}
