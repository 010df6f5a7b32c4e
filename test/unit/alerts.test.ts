// The alerts the chart ships (charts/oauth-token-operator/templates/prometheusrule.yaml).
//  - Always: every metric an alert reads is one the operator exports.
//  - With helm: each alert has a severity, summary, description and runbook hint, and the values
//    reach the rules.
//  - With helm and promtool: the rule unit tests of charts/oauth-token-operator/tests/alerts-test.yaml
//    run against the rendered rules, one vitest case per promtool test group.
// helm and promtool are built from their Go modules by charts/oauth-token-operator/tests/install-tools.sh;
// without them those parts are skipped with a note, or fail when OTO_REQUIRE_TOOLS=1.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { OperatorMetrics } from '../../src/observability/metrics.ts';
import { findTool } from '../harness/tools.ts';

const root = resolve(import.meta.dirname, '../..');
const chartDir = join(root, 'charts/oauth-token-operator');
const testFile = join(chartDir, 'tests/alerts-test.yaml');
const INSTALL_HINT =
  'run charts/oauth-token-operator/tests/install-tools.sh (builds helm and promtool from their Go modules into ~/.cache/oauth-token-operator/tools/bin)';

const ALERTS = [
  'OAuthConnectionNotReady',
  'OAuthRefreshFailing',
  'OAuthAccessTokenExpired',
  'OAuthRefreshTokenExpiringSoon',
  'OAuthChainBroken',
  'OAuthRecoveryLoginsTooFrequent',
  'OAuthOperatorNoLeader',
  'OAuthOperatorAbsent',
  'OAuthOperatorStalled',
];

const helm = findTool('helm', 'OTO_HELM');
const promtool = findTool('promtool', 'OTO_PROMTOOL');
const requireTools = process.env.OTO_REQUIRE_TOOLS === '1';
const missing = [helm ? undefined : 'helm', promtool ? undefined : 'promtool'].filter(Boolean);
if (missing.length > 0 && !requireTools) {
  console.warn(
    `alerts.test.ts: ${missing.join(' and ')} not found; tests that need them are skipped. To run them: ${INSTALL_HINT}`,
  );
}

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface RuleGroup {
  name: string;
  rules: Rule[];
}

const scratch = mkdtempSync(join(tmpdir(), 'oto-alerts-test-'));
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

let runs = 0;
/** The rule groups of the PrometheusRule that helm renders with these values. */
function renderRules(values: object = {}): RuleGroup[] {
  if (!helm) throw new Error(`helm not found: ${INSTALL_HINT}`);
  const valuesFile = join(scratch, `values-${String(runs++)}.json`);
  writeFileSync(valuesFile, JSON.stringify(values));
  const result = spawnSync(
    helm,
    [
      'template',
      'oauth-token-operator',
      chartDir,
      '--namespace',
      'oto',
      '--kube-version',
      '1.33.0',
      '--values',
      valuesFile,
    ],
    { encoding: 'utf8', timeout: 60_000 },
  );
  if (result.status !== 0) throw new Error(`helm template failed:\n${result.stderr}`);
  const rules = parseAllDocuments(result.stdout)
    .map((doc) => doc.toJS() as { kind?: string; spec?: { groups: RuleGroup[] } } | null)
    .filter((doc) => doc?.kind === 'PrometheusRule');
  return rules.flatMap((doc) => doc?.spec?.groups ?? []);
}

const allRules = (groups: RuleGroup[]): Rule[] => groups.flatMap((group) => group.rules);

describe('alert expressions', () => {
  const template = readFileSync(join(chartDir, 'templates/prometheusrule.yaml'), 'utf8');

  it('define exactly the expected alerts', () => {
    const names = [...template.matchAll(/^\s*- alert: (\w+)$/gm)].map((m) => m[1]);
    expect(names).toEqual(ALERTS);
  });

  // Every series an alert reads must exist: a renamed metric would leave an alert silent forever.
  const exported = new Set(
    new OperatorMetrics({ defaultMetrics: false }).registry.getMetricsAsArray().map((metric) => metric.name),
  );
  const used = [
    ...new Set(
      [
        ...template.matchAll(
          /\b(oauth_token_operator_\w+|leader_election_\w+|workqueue_\w+|controller_runtime_\w+)\b/g,
        ),
      ].map((m) => m[1] ?? ''),
    ),
  ].sort();

  it('read some metrics', () => {
    expect(used.length).toBeGreaterThan(10);
  });

  it.each(used)('read %s, which the operator exports', (name) => {
    expect(exported.has(name), `${name} is not registered in src/observability/metrics.ts`).toBe(true);
  });
});

describe.runIf(requireTools && missing.length > 0)('alerts (tools required)', () => {
  it('has helm and promtool', () => {
    expect.fail(`OTO_REQUIRE_TOOLS=1 but ${missing.join(' and ')} not found: ${INSTALL_HINT}`);
  });
});

describe.skipIf(helm === undefined)('rendered alerts', { timeout: 60_000 }, () => {
  const rules = helm ? allRules(renderRules()) : [];

  it('are all there with default values', () => {
    expect(rules.map((rule) => rule.alert)).toEqual(ALERTS);
  });

  it.each(ALERTS)('%s has a severity, a summary, a description and a runbook hint', (name) => {
    const rule = rules.find((r) => r.alert === name);
    expect(['warning', 'critical']).toContain(rule?.labels?.severity);
    for (const annotation of ['summary', 'description', 'runbook']) {
      expect(rule?.annotations?.[annotation]?.trim().length ?? 0, annotation).toBeGreaterThan(10);
    }
  });

  it('link runbooks when runbookBaseURL is set', () => {
    const linked = allRules(
      renderRules({ prometheusRule: { runbookBaseURL: 'https://runbooks.example/oto/' } }),
    );
    for (const rule of linked) {
      expect(rule.annotations?.runbook_url).toBe(`https://runbooks.example/oto#${rule.alert.toLowerCase()}`);
    }
    expect(rules.some((rule) => rule.annotations?.runbook_url !== undefined)).toBe(false);
  });

  it.each<[string, object, string, RegExp]>([
    [
      'recovery login limit',
      { prometheusRule: { thresholds: { recoveryLoginsPerHour: 5 } } },
      'OAuthRecoveryLoginsTooFrequent',
      /\) > 5$/,
    ],
    [
      'expiry warning',
      { prometheusRule: { thresholds: { refreshTokenExpiringSoonSeconds: 86400 } } },
      'OAuthRefreshTokenExpiringSoon',
      /< 86400$/,
    ],
    [
      'stall threshold',
      { prometheusRule: { thresholds: { stalledAfter: '1h30m' } } },
      'OAuthOperatorStalled',
      /> 5400\n[^]*\[1h30m\]/,
    ],
    [
      'job selector',
      { prometheusRule: { jobSelector: 'job="oto"' } },
      'OAuthOperatorAbsent',
      /^absent\(up\{job="oto"\} == 1\)$/,
    ],
    [
      'empty job selector',
      { prometheusRule: { jobSelector: '' } },
      'OAuthOperatorStalled',
      /workqueue_depth\{name="oauthconnection"\}/,
    ],
  ])('take the %s from the values', (_name, values, alert, pattern) => {
    const rule = allRules(renderRules(values)).find((r) => r.alert === alert);
    expect(rule?.expr).toMatch(pattern);
  });

  it.each([
    ['severities', { prometheusRule: { severities: { operatorStalled: 'page' } } }, { severity: 'page' }],
    [
      'extra labels',
      { prometheusRule: { additionalRuleLabels: { team: 'platform' } } },
      { severity: 'critical', team: 'platform' },
    ],
  ])('take %s from the values', (_name, values, labels) => {
    const stalled = allRules(renderRules(values)).find((r) => r.alert === 'OAuthOperatorStalled');
    expect(stalled?.labels).toEqual(labels);
  });

  it('refuse a threshold that is not a Prometheus duration', () => {
    expect(() => renderRules({ prometheusRule: { thresholds: { stalledAfter: '30 minutes' } } })).toThrow(
      /not a Prometheus duration/,
    );
  });
});

// promtool rule unit tests: each test group of alerts-test.yaml is one case here.
const testGroups = (
  parse(readFileSync(testFile, 'utf8')) as {
    tests: { name: string; alert_rule_test?: { alertname: string; exp_alerts?: unknown[] }[] }[];
  }
).tests;

describe('promtool rule tests (alerts-test.yaml)', () => {
  it('cover every alert firing at least once', () => {
    const firing = new Set(
      testGroups.flatMap((group) =>
        (group.alert_rule_test ?? []).filter((t) => (t.exp_alerts ?? []).length > 0).map((t) => t.alertname),
      ),
    );
    expect([...firing].sort()).toEqual([...ALERTS].sort());
  });

  it.each([
    /^not ready fires/,
    /^stalled fires when nothing succeeds/,
    /^stalled stays quiet when reconciles fail/,
    /^chain broken fires/,
    /^no leader fires/,
  ])('include a test group matching %s', (pattern) => {
    expect(testGroups.some((group) => pattern.test(group.name))).toBe(true);
  });

  it('have unique group names', () => {
    const names = testGroups.map((group) => group.name);
    expect(new Set(names).size).toBe(names.length);
  });
});

describe.skipIf(helm === undefined || promtool === undefined)(
  'promtool test rules against the rendered alerts',
  { timeout: 60_000 },
  () => {
    const workDir = join(scratch, 'promtool');

    beforeAll(() => {
      // The static hints are checked above; promtool compares every annotation, so only the ones
      // whose templates depend on the series (summary, description) stay.
      const groups = renderRules().map((group) => ({
        ...group,
        rules: group.rules.map((rule) => {
          const annotations = { ...rule.annotations };
          delete annotations.runbook;
          delete annotations.runbook_url;
          return { ...rule, annotations };
        }),
      }));
      rmSync(workDir, { recursive: true, force: true });
      mkdirSync(workDir, { recursive: true });
      writeFileSync(join(workDir, 'rules.yaml'), stringify({ groups }, { lineWidth: 0 }));
      copyFileSync(testFile, join(workDir, 'alerts-test.yaml'));
    });

    const run = (args: string[]): { status: number | null; output: string } => {
      if (!promtool) throw new Error(`promtool not found: ${INSTALL_HINT}`);
      const result = spawnSync(promtool, args, { cwd: workDir, encoding: 'utf8', timeout: 60_000 });
      return { status: result.status, output: `${result.stdout}${result.stderr}` };
    };

    it('promtool check rules accepts the rendered rules', () => {
      const result = run(['check', 'rules', 'rules.yaml']);
      expect(result.status, result.output).toBe(0);
      expect(result.output).toContain(`SUCCESS: ${String(ALERTS.length)} rules found`);
    });

    const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    it.each(testGroups.map((group) => group.name))('%s', (name) => {
      const junit = join(workDir, `junit-${String(runs++)}.xml`);
      const result = run([
        'test',
        'rules',
        '--junit',
        junit,
        '--run',
        `^${escape(name)}$`,
        'alerts-test.yaml',
      ]);
      expect(result.status, result.output).toBe(0);
      // Exactly this group ran (a --run that matches nothing would pass silently).
      const report = readFileSync(junit, 'utf8');
      const cases = [...report.matchAll(/<testcase name="([^"]*)"/g)].map((m) => m[1]);
      expect(cases.length, report).toBe(1);
      expect(report).toMatch(/failures="0"/);
    });
  },
);
