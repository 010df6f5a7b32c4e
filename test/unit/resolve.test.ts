import { describe, expect, it } from 'vitest';
import { dnsFirstResolver } from '../../src/oauth/resolve.ts';

type Answer = string[] | string; // addresses, or an error code

function dnsError(code: string): Error {
  return Object.assign(new Error(`query failed: ${code}`), { code });
}

/** A DNS from a table of A and AAAA answers; a name it has no row for never answers. */
function dns(table: Record<string, { A: Answer; AAAA: Answer }>) {
  const asked: string[] = [];
  const query = (host: string, type: 'A' | 'AAAA'): Promise<string[]> => {
    asked.push(`${type} ${host}`);
    const row = table[host];
    if (row === undefined) return new Promise<string[]>(() => undefined);
    const answer = row[type];
    return typeof answer === 'string' ? Promise.reject(dnsError(answer)) : Promise.resolve(answer);
  };
  return { query, asked };
}

/** A system look-up (getaddrinfo) that records its calls and answers from /etc/hosts-like rows. */
function system(hosts: Record<string, string[]>) {
  const asked: string[] = [];
  const lookup = (host: string): Promise<string[]> => {
    asked.push(host);
    const addresses = hosts[host];
    return addresses !== undefined ? Promise.resolve(addresses) : Promise.reject(dnsError('ENOTFOUND'));
  };
  return { lookup, asked };
}

describe('dnsFirstResolver', () => {
  const cases: {
    name: string;
    dns: Answer[];
    system?: string[];
    addresses?: string[];
    error?: RegExp;
    systemAsked: boolean;
  }[] = [
    {
      name: 'a name DNS knows: its A and AAAA records, no system look-up',
      dns: [['203.0.113.10'], ['2001:db8::10']],
      addresses: ['203.0.113.10', '2001:db8::10'],
      systemAsked: false,
    },
    {
      name: 'A records only (AAAA: no data)',
      dns: [['203.0.113.10'], 'ENODATA'],
      addresses: ['203.0.113.10'],
      systemAsked: false,
    },
    {
      name: 'a name DNS does not know (localhost, a short Service name): the system look-up',
      dns: ['ENOTFOUND', 'ENOTFOUND'],
      system: ['127.0.0.1'],
      addresses: ['127.0.0.1'],
      systemAsked: true,
    },
    {
      name: 'no DNS server to ask: the system look-up (/etc/hosts)',
      dns: ['ECONNREFUSED', 'ECONNREFUSED'],
      system: ['10.0.0.5'],
      addresses: ['10.0.0.5'],
      systemAsked: true,
    },
    {
      name: 'a DNS that timed out: failed, without a system look-up that would wait again on a pool thread',
      dns: ['ETIMEOUT', 'ENOTFOUND'],
      system: ['203.0.113.10'],
      error: /DNS did not answer for h\.example \(ETIMEOUT\)/,
      systemAsked: false,
    },
    {
      name: 'SERVFAIL: failed, no system look-up',
      dns: ['ESERVFAIL', 'ESERVFAIL'],
      error: /ESERVFAIL/,
      systemAsked: false,
    },
  ];
  it.each(cases)('$name', async ({ dns: [a, aaaa], system: hosts, addresses, error, systemAsked }) => {
    const server = dns({ 'h.example': { A: a ?? 'ENOTFOUND', AAAA: aaaa ?? 'ENOTFOUND' } });
    const sys = system(hosts !== undefined ? { 'h.example': hosts } : {});
    const resolve = dnsFirstResolver(server.query, sys.lookup);
    const result = resolve('h.example');
    if (error !== undefined) await expect(result).rejects.toThrow(error);
    else await expect(result).resolves.toEqual(addresses);
    expect(server.asked).toEqual(['A h.example', 'AAAA h.example']);
    expect(sys.asked.length > 0).toBe(systemAsked);
  });

  it('holds at most the given number of system look-ups at once; the others wait their turn', async () => {
    const server = dns({});
    const releases: (() => void)[] = [];
    let running = 0;
    let most = 0;
    const slowSystem = (host: string): Promise<string[]> => {
      running += 1;
      most = Math.max(most, running);
      return new Promise((resolve) => {
        releases.push(() => {
          running -= 1;
          resolve([`198.51.100.${String(host.length)}`]);
        });
      });
    };
    const known = (host: string, type: 'A' | 'AAAA'): Promise<string[]> =>
      host.startsWith('short') ? Promise.reject(dnsError('ENOTFOUND')) : server.query(host, type);
    const resolve = dnsFirstResolver(known, slowSystem, 2);
    const pending = ['short-a', 'short-bb', 'short-ccc', 'short-dddd'].map((host) => resolve(host));
    await new Promise((r) => setTimeout(r, 10));
    expect(running).toBe(2);
    while (releases.length > 0) {
      releases.shift()?.();
      await new Promise((r) => setTimeout(r, 1));
    }
    await expect(Promise.all(pending)).resolves.toHaveLength(4);
    expect(most).toBe(2);
  });
});
