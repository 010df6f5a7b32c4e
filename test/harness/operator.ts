// Runs the operator as real child processes against the real API server, authenticated as its own
// ServiceAccount with exactly the RBAC the Helm chart grants, and collects every log line (for
// assertions and the leak scan).
import * as k8s from '@kubernetes/client-node';
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNamespace, isApiError, repoRoot, serviceAccountKubeConfig } from './kube.ts';
import { operatorClusterRules, operatorNamespaceRules } from './rbac.ts';

export interface OperatorEnvironment {
  namespace: string;
  kubeconfigPath: string;
}

async function ignoreConflict(promise: Promise<unknown>): Promise<void> {
  try {
    await promise;
  } catch (err) {
    if (!isApiError(err, 409)) throw err;
  }
}

/** A namespace for the operator, its ServiceAccount and RBAC, and a kubeconfig with its token. */
export async function setupOperatorEnvironment(admin: k8s.KubeConfig): Promise<OperatorEnvironment> {
  const namespace = await createNamespace(admin, 'operator');
  const rbac = admin.makeApiClient(k8s.RbacAuthorizationV1Api);
  const name = `oauth-token-operator-${namespace}`;
  await ignoreConflict(
    rbac.createClusterRole({ body: { metadata: { name }, rules: operatorClusterRules() } }),
  );
  await rbac.createClusterRoleBinding({
    body: {
      metadata: { name },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name },
      subjects: [{ kind: 'ServiceAccount', name: 'oauth-token-operator', namespace }],
    },
  });
  await rbac.createNamespacedRole({
    namespace,
    body: { metadata: { name: 'oauth-token-operator' }, rules: operatorNamespaceRules() },
  });
  await rbac.createNamespacedRoleBinding({
    namespace,
    body: {
      metadata: { name: 'oauth-token-operator' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'oauth-token-operator' },
      subjects: [{ kind: 'ServiceAccount', name: 'oauth-token-operator', namespace }],
    },
  });
  const kc = await serviceAccountKubeConfig(admin, namespace, 'oauth-token-operator');
  const dir = mkdtempSync(join(tmpdir(), 'oto-operator-'));
  const kubeconfigPath = join(dir, 'kubeconfig');
  writeFileSync(kubeconfigPath, kc.exportConfig(), { mode: 0o600 });
  return { namespace, kubeconfigPath };
}

export interface OperatorProcess {
  identity: string;
  child: ChildProcess;
  /** Every line the process wrote, stdout and stderr. */
  lines: string[];
  /** The exit code (-1 after a signal), once the process has ended and its output was read to the end. */
  exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface StartOperatorOptions {
  env: OperatorEnvironment;
  identity: string;
  args?: string[];
  extraEnv?: Record<string, string>;
  /** Pass --allow-insecure-http (the test providers listen on plain http on loopback). Default true. */
  insecure?: boolean;
  /** Receives every log line as it arrives. */
  onLine?: (line: string, identity: string) => void;
}

export function startOperator(options: StartOperatorOptions): OperatorProcess {
  const args = [
    join(repoRoot, 'src', 'main.ts'),
    '--kubeconfig',
    options.env.kubeconfigPath,
    '--namespace',
    options.env.namespace,
    '--identity',
    options.identity,
    '--metrics-address',
    '127.0.0.1:0',
    '--log-level',
    'debug',
    // Tests compress time: their providers issue tokens that live seconds, so the floor between two
    // token requests of a connection (10 s in production) is lowered with them.
    '--min-request-gap',
    '1s',
    ...(options.insecure === false ? [] : ['--allow-insecure-http']),
    ...(options.args ?? []),
  ];
  const child = spawn(process.execPath, args, {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...options.extraEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  // Kept for reading after a failed run; the leak scan covers these same lines.
  const logDir = join(tmpdir(), 'oto-operator-logs');
  try {
    mkdirSync(logDir, { recursive: true });
  } catch {
    // See below: the on-disk copy is optional.
  }
  const logFile = join(logDir, `${options.identity}-${String(child.pid)}.log`);
  const collect = (line: string): void => {
    if (line.trim() === '') return;
    lines.push(line);
    try {
      appendFileSync(logFile, `${line}\n`);
    } catch {
      // The copy on disk is a convenience; the lines in memory are what tests assert on.
    }
    options.onLine?.(line, options.identity);
  };
  // A chunk read from a pipe can end inside a line (a line over the pipe's atomic write size, 4 KiB,
  // may arrive in parts): the unfinished end waits for the next chunk, so that no JSON record is
  // split into two unparseable halves. The stream's string decoder keeps a multi-byte character
  // whole across chunks in the same way.
  for (const stream of [child.stdout, child.stderr]) {
    let unfinished = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      const parts = (unfinished + chunk).split('\n');
      unfinished = parts.pop() ?? '';
      for (const line of parts) collect(line);
    });
    stream.on('end', () => {
      collect(unfinished);
      unfinished = '';
    });
  }
  // 'close', not 'exit': a process may exit before this process has read what it wrote last (its
  // final log lines), and 'close' comes only once both pipes are drained. A test that reads the
  // lines after awaiting `exited` then sees every one of them.
  const exited = new Promise<number | null>((resolve) => {
    child.on('close', (code, signal) => {
      resolve(code ?? (signal ? -1 : null));
    });
  });
  return {
    identity: options.identity,
    child,
    lines,
    exited,
    kill: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

export const operatorEntryPoint = join(repoRoot, 'src', 'main.ts');

/** The identity holding the operators' Lease in `namespace`, or undefined when none does. */
export async function leaseHolder(kc: k8s.KubeConfig, namespace: string): Promise<string | undefined> {
  try {
    const lease = await kc
      .makeApiClient(k8s.CoordinationV1Api)
      .readNamespacedLease({ name: 'oauth-token-operator', namespace });
    return lease.spec?.holderIdentity || undefined;
  } catch {
    return undefined;
  }
}
