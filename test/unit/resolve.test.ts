import { describe, expect, it } from 'vitest';
import { dnsFirstResolver, parseHostsFile, type DnsFirstOptions } from '../../src/oauth/resolve.ts';

type Answer = string[] | string; // addresses, or an error code

function dnsError(code: string): Error {
  return Object.assign(new Error(`query failed: ${code}`), { code });
}

/** Sources built from tables; each records what it was asked. */
function sources(rows: {
  hosts?: Record<string, string[]>;
  dns?: Record<string, { A: Answer; AAAA: Answer }>;
  system?: Record<string, string[]>;
}) {
  const asked = { hosts: [] as string[], dns: [] as string[], system: [] as string[] };
  const options: DnsFirstOptions = {
    pinned: (host) => {
      asked.hosts.push(host);
      return Promise.resolve(rows.hosts?.[host]);
    },
    query: (host, type) => {
      asked.dns.push(`${type} ${host}`);
      const row = rows.dns?.[host];
      if (row === undefined) return Promise.reject(dnsError('ENOTFOUND'));
      const answer = row[type];
      return typeof answer === 'string' ? Promise.reject(dnsError(answer)) : Promise.resolve(answer);
    },
    systemLookup: (host) => {
      asked.system.push(host);
      const addresses = rows.system?.[host];
      return addresses !== undefined ? Promise.resolve(addresses) : Promise.reject(dnsError('ENOTFOUND'));
    },
  };
  return { options, asked };
}

describe('dnsFirstResolver', () => {
  const cases: {
    name: string;
    host?: string;
    hosts?: string[];
    dns?: [Answer, Answer];
    system?: string[];
    addresses?: string[];
    error?: RegExp;
    dnsAsked: boolean;
    systemAsked: boolean;
  }[] = [
    {
      name: 'a name pinned in /etc/hosts (hostAliases): the pinned address, DNS not asked',
      hosts: ['10.1.2.3'],
      dns: [['203.0.113.10'], 'ENODATA'],
      addresses: ['10.1.2.3'],
      dnsAsked: false,
      systemAsked: false,
    },
    {
      name: 'a name DNS knows: its A and AAAA records, no system look-up',
      dns: [['203.0.113.10'], ['2001:db8::10']],
      addresses: ['203.0.113.10', '2001:db8::10'],
      dnsAsked: true,
      systemAsked: false,
    },
    {
      name: 'A records only (AAAA: no data)',
      dns: [['203.0.113.10'], 'ENODATA'],
      addresses: ['203.0.113.10'],
      dnsAsked: true,
      systemAsked: false,
    },
    {
      name: 'a name DNS does not know: the system look-up',
      dns: ['ENOTFOUND', 'ENOTFOUND'],
      system: ['198.51.100.7'],
      addresses: ['198.51.100.7'],
      dnsAsked: true,
      systemAsked: true,
    },
    {
      name: 'no DNS server to ask: the system look-up',
      dns: ['ECONNREFUSED', 'ECONNREFUSED'],
      system: ['198.51.100.7'],
      addresses: ['198.51.100.7'],
      dnsAsked: true,
      systemAsked: true,
    },
    {
      name: 'a DNS that timed out: failed, without a system look-up that would wait again on a pool thread',
      dns: ['ETIMEOUT', 'ENOTFOUND'],
      system: ['203.0.113.10'],
      error: /DNS did not answer for h\.example \(ETIMEOUT\)/,
      dnsAsked: true,
      systemAsked: false,
    },
    {
      name: 'SERVFAIL: failed, no system look-up',
      dns: ['ESERVFAIL', 'ESERVFAIL'],
      error: /ESERVFAIL/,
      dnsAsked: true,
      systemAsked: false,
    },
    {
      name: 'a Service short name DNS alone cannot answer (timed out): the system look-up, which applies the search domains',
      host: 'keycloak.auth.svc',
      dns: ['ETIMEOUT', 'ETIMEOUT'],
      system: ['10.96.0.20'],
      addresses: ['10.96.0.20'],
      dnsAsked: true,
      systemAsked: true,
    },
  ];
  it.each(cases)(
    '$name',
    async ({ host = 'h.example', hosts, dns, system, addresses, error, dnsAsked, systemAsked }) => {
      const { options, asked } = sources({
        ...(hosts !== undefined ? { hosts: { [host]: hosts } } : {}),
        ...(dns !== undefined ? { dns: { [host]: { A: dns[0], AAAA: dns[1] } } } : {}),
        ...(system !== undefined ? { system: { [host]: system } } : {}),
      });
      const result = dnsFirstResolver(options)(host);
      if (error !== undefined) await expect(result).rejects.toThrow(error);
      else await expect(result).resolves.toEqual(addresses);
      expect(asked.hosts).toEqual([host]);
      expect(asked.dns.length > 0).toBe(dnsAsked);
      expect(asked.system.length > 0).toBe(systemAsked);
    },
  );

  it('holds at most two system look-ups at once, lets a few wait, and refuses the rest at once', async () => {
    const releases: (() => void)[] = [];
    let running = 0;
    let most = 0;
    const resolve = dnsFirstResolver({
      pinned: () => Promise.resolve(undefined),
      query: () => Promise.reject(dnsError('ENOTFOUND')),
      systemLookup: (host) => {
        running += 1;
        most = Math.max(most, running);
        return new Promise((done) => {
          releases.push(() => {
            running -= 1;
            done([`198.51.100.${String(host.length)}`]);
          });
        });
      },
      systemLookupsAtOnce: 2,
      systemLookupsWaiting: 3,
    });
    const settled: string[] = [];
    const pending = Array.from({ length: 7 }, (_, i) =>
      resolve(`short-${'x'.repeat(i)}`).then(
        () => settled.push(`ok ${String(i)}`),
        (err: unknown) => settled.push(`refused ${String(i)}: ${(err as Error).message}`),
      ),
    );
    await new Promise((r) => setTimeout(r, 10));
    expect(running).toBe(2);
    // Two running, three waiting: the sixth and seventh are refused without waiting.
    expect(settled).toEqual([
      'refused 5: too many system look-ups waiting; short-xxxxx not looked up',
      'refused 6: too many system look-ups waiting; short-xxxxxx not looked up',
    ]);
    while (releases.length > 0) {
      releases.shift()?.();
      await new Promise((r) => setTimeout(r, 1));
    }
    await Promise.all(pending);
    expect(settled.filter((s) => s.startsWith('ok'))).toHaveLength(5);
    expect(most).toBe(2);
  });

  it('does not start a waiting look-up whose caller has given up', async () => {
    let nowMs = 0;
    let release: (() => void) | undefined;
    const started: string[] = [];
    const resolve = dnsFirstResolver({
      pinned: () => Promise.resolve(undefined),
      query: () => Promise.reject(dnsError('ENOTFOUND')),
      systemLookup: (host) => {
        started.push(host);
        return new Promise((done) => {
          release = () => {
            done(['198.51.100.1']);
          };
        });
      },
      systemLookupsAtOnce: 1,
      now: () => nowMs,
    });
    const first = resolve('first');
    const second = resolve('second');
    await new Promise((r) => setTimeout(r, 5));
    nowMs = 6_000; // the first look-up held the thread past the caller's 5 s limit
    release?.();
    await expect(first).resolves.toEqual(['198.51.100.1']);
    await expect(second).rejects.toThrow('the look-up of second waited too long');
    expect(started).toEqual(['first']);
  });
});

describe('parseHostsFile', () => {
  it('reads addresses, names and aliases; skips comments and lines without an address', () => {
    const table = parseHostsFile(
      [
        '# kubelet-managed',
        '127.0.0.1\tlocalhost',
        '::1 localhost ip6-localhost',
        '10.0.0.9 Login.Example.COM. login # pinned by hostAliases',
        'not-an-address name',
        '',
      ].join('\n'),
    );
    expect(table.get('localhost')).toEqual(['127.0.0.1', '::1']);
    expect(table.get('ip6-localhost')).toEqual(['::1']);
    expect(table.get('login.example.com')).toEqual(['10.0.0.9']);
    expect(table.get('login')).toEqual(['10.0.0.9']);
    expect(table.has('name')).toBe(false);
  });
});
