// The operator's RBAC rules, read from the Helm chart's rendered-free rules file so the tests run the
// operator with exactly what the chart grants.
import * as k8s from '@kubernetes/client-node';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { repoRoot } from './kube.ts';

interface RulesFile {
  clusterRules: k8s.V1PolicyRule[];
  namespaceRules: k8s.V1PolicyRule[];
}

function rules(): RulesFile {
  return parse(
    readFileSync(join(repoRoot, 'charts', 'oauth-token-operator', 'files', 'rbac-rules.yaml'), 'utf8'),
  ) as RulesFile;
}

export function operatorClusterRules(): k8s.V1PolicyRule[] {
  return rules().clusterRules;
}

export function operatorNamespaceRules(): k8s.V1PolicyRule[] {
  return rules().namespaceRules;
}
