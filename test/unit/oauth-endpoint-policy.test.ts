import { describe, expect, it } from 'vitest';
import {
  checkURL,
  classifyAddress,
  hostMatches,
  type EndpointPolicy,
} from '../../src/oauth/endpoint-policy.ts';
import type { HostResolver } from '../../src/oauth/resolve.ts';
import { TokenError } from '../../src/oauth/errors.ts';
import { LookupRefusal, Transport } from '../../src/oauth/transport.ts';

const strict: EndpointPolicy = { allowInsecureHttp: false };
const PUBLIC = '203.0.113.10';

/** A resolver from a fixed table; records what it was asked. */
function table(entries: Record<string, string[]>): HostResolver & { asked: string[] } {
  const asked: string[] = [];
  const resolve = (host: string): Promise<string[]> => {
    asked.push(host);
    const found = entries[host];
    return found ? Promise.resolve(found) : Promise.reject(new Error('ENOTFOUND'));
  };
  return Object.assign(resolve, { asked });
}

/**
 * The whole policy for one URL, as the Transport applies it: the URL rules first, then, for a name,
 * the look-up a new connection would make (resolution with a time limit, every address checked).
 */
async function checkEndpoint(
  url: string,
  policy: EndpointPolicy,
  resolve: HostResolver,
): Promise<{ url: URL; hostname: string; addresses: string[] }> {
  const checked = checkURL(url, policy);
  if (checked.isAddress) return { ...checked, addresses: [checked.hostname] };
  const transport = new Transport({ policy, resolve });
  try {
    return { ...checked, addresses: await transport.lookup(checked.hostname) };
  } catch (err) {
    throw err instanceof LookupRefusal ? err.refusal : err;
  } finally {
    await transport.close();
  }
}

async function refusal(promise: Promise<unknown>): Promise<TokenError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(TokenError);
  return error as TokenError;
}

describe('classifyAddress', () => {
  it.each([
    ['8.8.8.8', 'public'],
    ['203.0.113.10', 'public'],
    ['127.0.0.1', 'loopback'],
    ['127.8.9.10', 'loopback'],
    ['::1', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['172.32.0.1', 'public'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'private'],
    ['fd12:3456::1', 'private'],
    ['169.254.169.254', 'metadata'],
    ['100.100.100.200', 'metadata'],
    ['168.63.129.16', 'metadata'],
    ['168.63.129.17', 'public'],
    ['fd00:ec2::254', 'metadata'],
    ['169.254.10.10', 'link-local'],
    ['fe80::1', 'link-local'],
    ['fe80::1%eth0', 'link-local'],
    ['0.0.0.0', 'unspecified'],
    ['::', 'unspecified'],
    ['::ffff:169.254.169.254', 'metadata'],
    ['::ffff:a9fe:a9fe', 'metadata'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['64:ff9b::10.0.0.1', 'private'],
    ['224.0.0.1', 'multicast'],
    ['ff02::1', 'multicast'],
    ['255.255.255.255', 'reserved'],
    ['240.0.0.1', 'reserved'],
    ['192.0.0.8', 'reserved'],
    ['198.18.0.1', 'private'],
    ['198.19.255.255', 'private'],
    ['198.20.0.1', 'public'],
    ['fec0::1', 'private'],
    // IPv4-compatible (::/96, deprecated) is not IPv4-mapped, whichever way it is written.
    ['::8.8.8.8', 'reserved'],
    ['::808:808', 'reserved'],
    ['::127.0.0.1', 'reserved'],
    ['::ffff:8.8.8.8', 'public'],
    ['::ffff:100.64.0.1', 'private'],
    ['64:ff9b::a9fe:a9fe', 'metadata'],
    ['64:ff9b::127.0.0.1', 'loopback'],
    ['64:ff9b::8.8.8.8', 'public'],
    ['[::1]', 'loopback'],
    ['fe80::1%en-0.1', 'link-local'],
    ['192.0.2.1', 'public'],
    ['2001:db8::1', 'public'],
    ['2606:4700::1111', 'public'],
    ['example.com', undefined],
    ['127.1', undefined],
    ['0x7f.0.0.1', undefined],
    ['::1::1', undefined],
  ])('%s is %s', (address, expected) => {
    expect(classifyAddress(address)).toBe(expected);
  });
});

describe('hostMatches', () => {
  it.each([
    ['idp.example.com', 'idp.example.com', true],
    ['IDP.example.com'.toLowerCase(), 'IDP.EXAMPLE.COM', true],
    ['a.example.com', '*.example.com', true],
    ['a.b.example.com', '*.example.com', true],
    ['example.com', '*.example.com', false],
    ['badexample.com', '*.example.com', false],
    ['example.com.evil.net', 'example.com', false],
  ])('%s vs %s → %s', (host, pattern, expected) => {
    expect(hostMatches(host, pattern)).toBe(expected);
  });
});

describe('checkEndpoint', () => {
  it('accepts an https URL whose addresses are all public', async () => {
    const resolve = table({ 'idp.example.com': [PUBLIC, '2606:4700::1111'] });
    const checked = await checkEndpoint('https://idp.example.com/token?x=1', strict, resolve);
    expect(checked.hostname).toBe('idp.example.com');
    expect(checked.addresses).toEqual([PUBLIC, '2606:4700::1111']);
    expect(resolve.asked).toEqual(['idp.example.com']);
  });

  it('refuses http unless allowInsecureHttp, naming the host but not the query', async () => {
    const resolve = table({ 'idp.example.com': [PUBLIC] });
    const error = await refusal(checkEndpoint('http://idp.example.com/token?secret=abc', strict, resolve));
    expect(error.code).toBe('insecure_endpoint');
    expect(error.message).toContain('idp.example.com');
    expect(error.message).not.toContain('secret');
    expect(resolve.asked).toEqual([]);
    await expect(
      checkEndpoint('http://idp.example.com/token', { allowInsecureHttp: true }, resolve),
    ).resolves.toBeDefined();
  });

  it.each(['ftp://idp.example.com/', 'file:///etc/passwd', 'not a url', 'javascript:alert(1)'])(
    'refuses %s',
    async (url) => {
      expect((await refusal(checkEndpoint(url, strict, table({})))).code).toBe('insecure_endpoint');
    },
  );

  it('refuses credentials in the URL without repeating them', async () => {
    const error = await refusal(checkEndpoint('https://user:pa55@idp.example.com/', strict, table({})));
    expect(error.message).not.toContain('pa55');
  });

  it('enforces the allow-list before resolving', async () => {
    const resolve = table({ 'evil.example.net': [PUBLIC], 'kc.example.com': [PUBLIC] });
    const policy: EndpointPolicy = {
      allowInsecureHttp: false,
      allowedHosts: ['*.example.com', 'login.example.org'],
    };
    const error = await refusal(checkEndpoint('https://evil.example.net/', policy, resolve));
    expect(error.message).toContain('allowed hosts');
    expect(resolve.asked).toEqual([]);
    await expect(checkEndpoint('https://kc.example.com/', policy, resolve)).resolves.toBeDefined();
  });

  it.each([
    'https://169.254.169.254/latest/meta-data/',
    'https://[fd00:ec2::254]/',
    'https://100.100.100.200/',
    'https://metadata.google.internal/computeMetadata/v1/',
    'https://169.254.1.1/',
    'https://[fe80::1]/',
    'https://0.0.0.0/',
    'https://[::]/',
    'https://[::ffff:169.254.169.254]/',
    'https://2852039166/', // 169.254.169.254 spelled as one number
  ])('always refuses %s, whatever the flags', async (url) => {
    const lenient: EndpointPolicy = { allowInsecureHttp: true, allowPrivateNetworks: true };
    expect((await refusal(checkEndpoint(url, lenient, table({})))).code).toBe('insecure_endpoint');
  });

  it('allows loopback only with allowInsecureHttp', async () => {
    await refusal(checkEndpoint('https://127.0.0.1:8443/token', strict, table({})));
    await refusal(checkEndpoint('https://localhost/token', strict, table({ localhost: ['127.0.0.1'] })));
    await expect(
      checkEndpoint('http://127.0.0.1:8080/token', { allowInsecureHttp: true }, table({})),
    ).resolves.toMatchObject({ addresses: ['127.0.0.1'] });
  });

  it('allows private addresses and cluster-internal names only with allowPrivateNetworks', async () => {
    const resolve = table({
      'keycloak.auth.svc': ['10.96.0.12'],
      'keycloak.auth.svc.cluster.local': ['10.96.0.12'],
      keycloak: ['10.96.0.12'],
      'intranet.example.com': ['192.168.10.5'],
    });
    for (const url of [
      'https://keycloak.auth.svc/realms/x',
      'https://keycloak.auth.svc.cluster.local/realms/x',
      'https://keycloak/realms/x',
      'https://intranet.example.com/token',
      'https://10.0.0.5/token',
    ]) {
      const error = await refusal(checkEndpoint(url, strict, resolve));
      expect(error.message).toMatch(/allow-private-networks/);
    }
    const onPrem: EndpointPolicy = { allowInsecureHttp: false, allowPrivateNetworks: true };
    await expect(checkEndpoint('https://keycloak.auth.svc/realms/x', onPrem, resolve)).resolves.toBeDefined();
    await expect(checkEndpoint('https://intranet.example.com/token', onPrem, resolve)).resolves.toBeDefined();
  });

  it('checks every resolved address (DNS rebinding to metadata)', async () => {
    const resolve = table({ 'rebind.example.com': [PUBLIC, '169.254.169.254'] });
    const error = await refusal(checkEndpoint('https://rebind.example.com/token', strict, resolve));
    expect(error.message).toBe(
      'host rebind.example.com (resolves to 169.254.169.254) is a cloud metadata address',
    );
  });

  it('refuses a public name that resolves to loopback without allowInsecureHttp', async () => {
    const resolve = table({ 'sneaky.example.com': ['127.0.0.1'] });
    await refusal(checkEndpoint('https://sneaky.example.com/', strict, resolve));
  });

  it('reports a name that does not resolve as transient', async () => {
    const error = await refusal(checkEndpoint('https://nowhere.example.com/', strict, table({})));
    expect(error.code).toBe('transient');
    expect(error.reason).toBe('DNSFailure');
  });
});
