// The comparison of the API server's audit log with the chart's RBAC rules (test/harness/rbac.ts),
// which test/integration/rbac-audit.test.ts runs on a real audit log: each case a few audit events
// built here and the rules they are held against.
import type { V1PolicyRule } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import {
  accessKey,
  accessOf,
  auditEventsOf,
  compareWithGrants,
  grantedAccesses,
  type Access,
  type AuditEvent,
  type Namespaces,
} from '../harness/rbac.ts';

const USER = 'system:serviceaccount:operator-1:oauth-token-operator';
const NAMESPACES: Namespaces = { operator: 'operator-1', connections: ['apps'] };

let ids = 0;
/** An audit event of USER: `verb resource[/sub] in namespace`, answered with `code`. */
function event(
  verb: string,
  resource: string,
  namespace: string | undefined,
  options: { apiGroup?: string; code?: number; stage?: string; auditID?: string; user?: string } = {},
): AuditEvent {
  const [name, subresource] = resource.split('/');
  return {
    auditID: options.auditID ?? `id-${String(ids++)}`,
    stage: options.stage ?? 'ResponseComplete',
    verb,
    requestURI: `/${namespace ?? ''}/${resource}`,
    user: { username: options.user ?? USER },
    objectRef: {
      resource: name ?? '',
      ...(subresource !== undefined ? { subresource } : {}),
      ...(namespace !== undefined ? { namespace } : {}),
      ...(options.apiGroup !== undefined ? { apiGroup: options.apiGroup } : {}),
    },
    responseStatus: { code: options.code ?? 200 },
    annotations: { 'authorization.k8s.io/decision': options.code === 403 ? 'forbid' : 'allow' },
  };
}

const secretsRule = (verbs: string[]): V1PolicyRule => ({ apiGroups: [''], resources: ['secrets'], verbs });
const key = (scope: Access['scope'], verb: string, apiGroup: string, resource: string): string =>
  accessKey({ scope, verb, apiGroup, resource });

describe('grantedAccesses', () => {
  it('expands every group × resource × verb of each rule', () => {
    const rules: V1PolicyRule[] = [
      {
        apiGroups: ['oauth.token-operator.dev'],
        resources: ['oauthconnections', 'oauthconnections/status'],
        verbs: ['patch'],
      },
      secretsRule(['get', 'list']),
    ];
    expect(grantedAccesses(rules, 'connection namespace').map(accessKey)).toEqual([
      'connection namespace: patch oauth.token-operator.dev/oauthconnections',
      'connection namespace: patch oauth.token-operator.dev/oauthconnections/status',
      'connection namespace: get core/secrets',
      'connection namespace: list core/secrets',
    ]);
  });
});

describe('accessOf', () => {
  it.each<[string, AuditEvent, string | undefined]>([
    [
      'a core resource in the operator namespace',
      event('list', 'secrets', 'operator-1'),
      'operator namespace: list core/secrets',
    ],
    [
      'a subresource in a connection namespace',
      event('patch', 'oauthconnections/status', 'apps', { apiGroup: 'oauth.token-operator.dev' }),
      'connection namespace: patch oauth.token-operator.dev/oauthconnections/status',
    ],
    [
      'another namespace',
      event('get', 'secrets', 'kube-system'),
      'elsewhere (kube-system): get core/secrets',
    ],
    [
      'a cluster-scoped request',
      event('list', 'namespaces', undefined),
      'elsewhere (cluster): list core/namespaces',
    ],
    [
      'a request without a resource (/version)',
      { ...event('get', 'x', undefined), objectRef: undefined },
      undefined,
    ],
  ])('%s', (_name, audit, expected) => {
    const access = accessOf(audit, NAMESPACES);
    expect(access === undefined ? undefined : accessKey(access)).toEqual(expected);
  });
});

describe('compareWithGrants', () => {
  const granted = [
    ...grantedAccesses([secretsRule(['get', 'list', 'watch'])], 'operator namespace'),
    ...grantedAccesses([secretsRule(['get', 'patch'])], 'connection namespace'),
  ];

  it('finds nothing wrong when every grant is used and nothing is refused', () => {
    const result = compareWithGrants(
      [
        event('get', 'secrets', 'operator-1'),
        event('list', 'secrets', 'operator-1'),
        event('watch', 'secrets', 'operator-1'),
        event('get', 'secrets', 'apps'),
        event('patch', 'secrets', 'apps'),
      ],
      granted,
      NAMESPACES,
    );
    expect(result).toEqual(
      expect.objectContaining({ forbidden: [], notGranted: [], unused: [], staleExcuses: [] }),
    );
    expect(result.used.get(key('operator namespace', 'get', '', 'secrets'))).toBe(1);
  });

  it.each<
    [
      string,
      AuditEvent[],
      Record<string, string>,
      Partial<Record<'forbidden' | 'notGranted' | 'unused' | 'staleExcuses', string[]>>,
    ]
  >([
    [
      'a grant never used',
      [
        event('get', 'secrets', 'operator-1'),
        event('list', 'secrets', 'operator-1'),
        event('get', 'secrets', 'apps'),
        event('patch', 'secrets', 'apps'),
      ],
      {},
      { unused: ['operator namespace: watch core/secrets'] },
    ],
    [
      'a grant never used but excused',
      [
        event('get', 'secrets', 'operator-1'),
        event('list', 'secrets', 'operator-1'),
        event('get', 'secrets', 'apps'),
        event('patch', 'secrets', 'apps'),
      ],
      { [key('operator namespace', 'watch', '', 'secrets')]: 'a reason' },
      { unused: [] },
    ],
    [
      'an excuse for a grant that was used after all',
      [
        event('get', 'secrets', 'operator-1'),
        event('list', 'secrets', 'operator-1'),
        event('watch', 'secrets', 'operator-1'),
        event('get', 'secrets', 'apps'),
        event('patch', 'secrets', 'apps'),
      ],
      { [key('operator namespace', 'watch', '', 'secrets')]: 'a reason' },
      { unused: [], staleExcuses: ['operator namespace: watch core/secrets'] },
    ],
    [
      'an excuse for a permission not granted',
      [],
      { [key('connection namespace', 'delete', '', 'secrets')]: 'a reason' },
      { staleExcuses: ['connection namespace: delete core/secrets'] },
    ],
    [
      'a refused request',
      [event('list', 'secrets', 'apps', { code: 403 })],
      {},
      {
        forbidden: ['connection namespace: list core/secrets /apps/secrets'],
        notGranted: ['connection namespace: list core/secrets'],
      },
    ],
    [
      'a request outside the granted namespaces',
      [event('get', 'secrets', 'kube-system', { code: 403 })],
      {},
      { notGranted: ['elsewhere (kube-system): get core/secrets'] },
    ],
  ])('reports %s', (_name, events, excused, expected) => {
    const result = compareWithGrants(events, granted, NAMESPACES, excused);
    for (const [field, value] of Object.entries(expected)) {
      expect(result[field as keyof typeof expected], field).toEqual(value);
    }
  });

  it('counts a watch logged at ResponseStarted and ResponseComplete once', () => {
    const result = compareWithGrants(
      [
        event('watch', 'secrets', 'operator-1', { auditID: 'w', stage: 'ResponseStarted' }),
        event('watch', 'secrets', 'operator-1', { auditID: 'w', stage: 'ResponseComplete' }),
      ],
      granted,
      NAMESPACES,
    );
    expect(result.used.get(key('operator namespace', 'watch', '', 'secrets'))).toBe(1);
  });
});

describe('auditEventsOf', () => {
  it("keeps the user's events and leaves a line still being written", () => {
    const mine = event('get', 'secrets', 'apps');
    const other = event('get', 'secrets', 'apps', { user: `${USER}-2` });
    const text = `${JSON.stringify(mine)}\n${JSON.stringify(other)}\n${JSON.stringify(mine).slice(0, 40)}`;
    expect(auditEventsOf(text, USER)).toEqual([mine]);
  });
});
