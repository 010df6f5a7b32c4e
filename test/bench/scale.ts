// Scale benchmark (failure scenario 10): many connections with staggered expiries plus many unrelated
// Secrets, against the real API server and oidc-provider. Prints its figures; it asserts nothing
// about speed (a loaded CI machine would make that flaky), only that every connection got Ready.
//
//   npm run bench            # 500 connections, 2000 unrelated Secrets
//   BENCH_CONNECTIONS=2000 BENCH_UNRELATED_SECRETS=5000 npm run bench
import * as k8s from '@kubernetes/client-node';
import { readFileSync } from 'node:fs';
import { startControlPlane } from '../harness/controlplane.ts';
import { createNamespace, GROUP, PLURAL, VERSION } from '../harness/kube.ts';
import { clientSecretOf, Scenario } from '../harness/scenario.ts';

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 500);
const UNRELATED = Number(process.env.BENCH_UNRELATED_SECRETS ?? 2000);
const PER_HOST = 4;

function rssMiB(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

async function inBatches<T>(items: T[], size: number, run: (item: T) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(run));
}

async function measureColdStart(scenario: Scenario): Promise<void> {
  const admin = scenario.admin;
  const oidc = await scenario.startProvider({ accessTokenTtlSec: 600 });
  const core = admin.makeApiClient(k8s.CoreV1Api);
  const namespace = await scenario.clientNamespace('bench', clientSecretOf(oidc));
  const unrelated = await createNamespace(admin, 'unrelated');
  const env = await scenario.operatorEnvironment();

  console.log(`creating ${UNRELATED} unrelated Secrets and ${CONNECTIONS} connections…`);
  await inBatches([...Array(UNRELATED).keys()], 50, (i) =>
    core.createNamespacedSecret({
      namespace: unrelated,
      body: { metadata: { name: `noise-${i}` }, stringData: { payload: 'x'.repeat(2048) } },
    }),
  );
  const names = [...Array(CONNECTIONS).keys()].map((i) => `c${i}`);
  await inBatches(names, 25, (name) => scenario.seededConnection(oidc, namespace, name));

  const started = Date.now();
  const operator = scenario.startOperator({
    env,
    identity: 'bench',
    watchNamespace: namespace,
    args: ['--workers', '8', '--max-concurrent-per-host', String(PER_HOST), '--log-level', 'warn'],
  });
  const custom = admin.makeApiClient(k8s.CustomObjectsApi);
  let peakRss = 0;
  let ready = 0;
  while (ready < CONNECTIONS) {
    peakRss = Math.max(peakRss, rssMiB(operator.child.pid));
    const list = (await custom.listNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace,
      plural: PLURAL,
    })) as {
      items: { status?: { conditions?: { type: string; status: string }[] } }[];
    };
    ready = list.items.filter((c) =>
      c.status?.conditions?.some((x) => x.type === 'Ready' && x.status === 'True'),
    ).length;
    if (Date.now() - started > 15 * 60_000)
      throw new Error(`only ${ready}/${CONNECTIONS} Ready after 15 minutes`);
    await new Promise((r) => setTimeout(r, 1000));
  }
  const elapsed = (Date.now() - started) / 1000;
  const log = oidc.refreshLog();
  const perSecond = new Map<number, number>();
  for (const entry of log)
    perSecond.set(Math.floor(entry.at / 1000), (perSecond.get(Math.floor(entry.at / 1000)) ?? 0) + 1);
  const address = operator.lines.map((l) => /"address":"([^"]+)"/.exec(l)?.[1]).find((a) => a !== undefined);
  const metrics = address ? await (await fetch(`http://${address}/metrics`)).text() : '';
  const depth = /^workqueue_depth\{[^}]*\} (\d+)/m.exec(metrics)?.[1] ?? '?';
  console.log('');
  console.log('| figure | value |');
  console.log('| --- | --- |');
  console.log(`| connections | ${CONNECTIONS} |`);
  console.log(`| unrelated Secrets in the cluster | ${UNRELATED} |`);
  console.log(
    `| cold start to all Ready | ${elapsed.toFixed(1)} s (${(CONNECTIONS / elapsed).toFixed(1)} connections/s) |`,
  );
  console.log(`| token requests | ${log.length} |`);
  console.log(`| peak token requests in one second | ${Math.max(...perSecond.values())} |`);
  console.log(`| provider refresh-token reuses | ${oidc.reuseCount()} |`);
  console.log(`| operator peak RSS | ${peakRss.toFixed(0)} MiB |`);
  console.log(`| work queue depth after the cold start | ${depth} |`);
}

async function main(): Promise<void> {
  const controlPlane = await startControlPlane();
  try {
    const scenario = await Scenario.open(controlPlane.kubeconfig);
    try {
      await measureColdStart(scenario);
    } finally {
      await scenario.close();
    }
  } finally {
    await controlPlane.stop();
  }
}

await main();
