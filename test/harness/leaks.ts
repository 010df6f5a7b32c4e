// The leak scan: canary secret values must never appear in what the operator emits — its log lines
// (at debug level), the Events it records, the status it writes, or its metrics.
import * as k8s from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import { GROUP, PLURAL, VERSION } from './kube.ts';

/** A recognisable secret value; long and random so that a hit cannot be a coincidence. */
export function canary(label: string): string {
  return `canary-${label}-${randomBytes(12).toString('hex')}`;
}

export interface LeakSources {
  lines: readonly string[];
  kubeConfig: k8s.KubeConfig;
  namespaces: readonly string[];
  metricsText?: string;
}

/** Returns a description of every place a secret value was found (empty when clean). */
export async function findLeaks(secrets: readonly string[], sources: LeakSources): Promise<string[]> {
  const values = secrets.filter((s) => s.length >= 8);
  const hits: string[] = [];
  const scan = (where: string, text: string): void => {
    for (const value of values) {
      if (text.includes(value)) hits.push(`${where} contains a secret value (${value.slice(0, 6)}…)`);
    }
  };
  sources.lines.forEach((line, i) => {
    scan(`log line ${i}`, line);
  });
  const core = sources.kubeConfig.makeApiClient(k8s.CoreV1Api);
  const custom = sources.kubeConfig.makeApiClient(k8s.CustomObjectsApi);
  for (const namespace of sources.namespaces) {
    const events = await core.listNamespacedEvent({ namespace });
    for (const event of events.items) scan(`event ${event.metadata.name ?? ''}`, JSON.stringify(event));
    const connections = (await custom.listNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace,
      plural: PLURAL,
    })) as {
      items: { metadata: { name: string }; status?: unknown }[];
    };
    for (const item of connections.items)
      scan(`status of ${item.metadata.name}`, JSON.stringify(item.status ?? {}));
  }
  if (sources.metricsText !== undefined) scan('metrics', sources.metricsText);
  return hits;
}
