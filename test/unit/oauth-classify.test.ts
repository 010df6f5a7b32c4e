import { describe, expect, it } from 'vitest';
import {
  classifyTokenFailure,
  parseRateLimitReset,
  parseRetryAfter,
  type TokenFailureInput,
} from '../../src/oauth/classify.ts';
import { sanitizeDescription, sanitizeErrorCode, TokenError } from '../../src/oauth/errors.ts';

const NOW = Date.parse('2030-01-01T00:00:00Z');

interface Row {
  name: string;
  input: Omit<TokenFailureInput, 'nowMs'>;
  code: string;
  reason: string;
  extra?: Record<string, unknown>;
}

const err = (error: string, error_description?: string, more: Record<string, unknown> = {}): unknown => ({
  error,
  ...(error_description !== undefined ? { error_description } : {}),
  ...more,
});

const rows: Row[] = [
  // Exact Online
  {
    name: 'exact: 401 unauthorized_client "Old refresh token used."',
    input: {
      httpStatus: 401,
      body: err('unauthorized_client', 'Old refresh token used.'),
    },
    code: 'chain_broken',
    reason: 'RefreshTokenReused',
  },
  {
    name: 'exact: 400 variant of "Old refresh token used."',
    input: {
      httpStatus: 400,
      body: err('unauthorized_client', 'Old refresh token used.'),
    },
    code: 'chain_broken',
    reason: 'RefreshTokenReused',
  },
  {
    name: 'exact: 400 invalid_grant invalid or empty chainId',
    input: {
      httpStatus: 400,
      body: err('invalid_grant', 'Token is not allowed, because of invalid or empty chainId'),
    },
    code: 'chain_broken',
    reason: 'ChainInvalid',
  },
  {
    name: 'exact: too early, body and Reason header',
    input: {
      httpStatus: 400,
      headers: { Reason: 'TooEarlyToRefreshTokens 570 seconds' },
      body: err('access_denied', 'Rate limit exceeded: access_token not expired'),
    },
    code: 'too_early',
    reason: 'TooEarly',
    extra: { notBeforeMs: undefined },
  },
  {
    name: 'exact: too early, header only',
    input: { httpStatus: 400, headers: { reason: 'TooEarlyToRefreshTokens' } },
    code: 'too_early',
    reason: 'TooEarly',
  },
  {
    name: 'exact: too early, body only (whatever the dialect)',
    input: {
      httpStatus: 400,
      body: err('access_denied', 'Rate limit exceeded: access_token not expired'),
    },
    code: 'too_early',
    reason: 'TooEarly',
  },
  {
    name: 'exact: unused refresh token expired (invalid_request)',
    input: {
      httpStatus: 400,
      body: err(
        'invalid_request',
        'The refresh token expired at 2029-12-01 10:00:00 and it is now 2030-01-01 00:00:00.',
      ),
    },
    code: 'chain_broken',
    reason: 'RefreshTokenExpired',
  },
  {
    name: 'exact: 429 with the minutely window exhausted (reset in epoch ms)',
    input: {
      httpStatus: 429,
      headers: {
        'X-RateLimit-Remaining': '4000',
        'X-RateLimit-Reset': String(NOW + 3_600_000),
        'X-RateLimit-Minutely-Remaining': '0',
        'X-RateLimit-Minutely-Reset': String(NOW + 42_000),
      },
    },
    code: 'transient',
    reason: 'RateLimited',
    extra: { retryAfterMs: 42_000 },
  },
  {
    name: 'exact: 429 with the daily window exhausted',
    input: {
      httpStatus: 429,
      headers: { 'X-RateLimit-Remaining': '0', 'X-RateLimit-Reset': String(NOW + 3_600_000) },
    },
    code: 'transient',
    reason: 'RateLimited',
    extra: { retryAfterMs: 3_600_000 },
  },
  {
    name: 'exact: unauthorized_client for another reason is configuration',
    input: {
      httpStatus: 401,
      body: err('unauthorized_client', 'Client is not allowed'),
    },
    code: 'configuration',
    reason: 'UnauthorizedClient',
  },
  // SAP Concur
  {
    name: 'concur: code 16 user lives elsewhere → relocate at geolocation',
    input: {
      errorDialect: 'concur',
      httpStatus: 400,
      body: {
        code: 16,
        error: 'invalid_grant',
        error_description: 'User lives elsewhere',
        geolocation: 'https://emea.api.concursolutions.com/some/path',
      },
    },
    code: 'relocate',
    reason: 'Relocated',
    extra: { geolocation: 'https://emea.api.concursolutions.com' },
  },
  {
    name: 'concur: code 16 without a geolocation',
    input: { errorDialect: 'concur', httpStatus: 400, body: { code: 16, error: 'invalid_grant' } },
    code: 'configuration',
    reason: 'RelocatedWithoutGeolocation',
  },
  {
    name: 'concur: code 108 bad or expired refresh token',
    input: {
      errorDialect: 'concur',
      httpStatus: 401,
      body: { code: '108', error: 'invalid_grant', error_description: 'x' },
    },
    code: 'chain_broken',
    reason: 'RefreshTokenInvalid',
  },
  ...(
    [
      [5, 'InvalidCredentials'],
      [10, 'AccountDisabled'],
      [14, 'AccountLocked'],
      [54, 'InvalidScope'],
      [106, 'RefreshTokenMissing'],
      [107, 'RefreshNotAllowed'],
    ] as const
  ).map(([code, reason]): Row => ({
    name: `concur: code ${code} → configuration ${reason}`,
    // invalid_grant would mean a broken chain generically: the Concur code must win.
    input: {
      errorDialect: 'concur',
      httpStatus: 400,
      body: { code, error: 'invalid_grant', error_description: 'x' },
    },
    code: 'configuration',
    reason,
  })),
  {
    name: 'concur: 403 company not authorised for the app',
    input: {
      errorDialect: 'concur',
      httpStatus: 403,
      body: { error: 'forbidden', error_description: 'not authorised' },
    },
    code: 'configuration',
    reason: 'Forbidden',
  },
  {
    name: 'concur codes are not read in the rfc6749 dialect',
    input: { httpStatus: 400, body: { code: 16, error: 'invalid_request' } },
    code: 'configuration',
    reason: 'InvalidRequest',
  },
  // Keycloak
  ...(
    [
      ['Stale token', 'RefreshTokenReused'],
      ['Maximum allowed refresh token reuse exceeded', 'RefreshTokenReused'],
      ['Token is not active', 'RefreshTokenExpired'],
      ['Session not active', 'SessionExpired'],
      ['Offline session not active', 'SessionExpired'],
      ['Offline user session not found', 'SessionExpired'],
      ['Invalid refresh token', 'RefreshTokenInvalid'],
    ] as const
  ).map(([description, reason]): Row => ({
    name: `keycloak: 400 invalid_grant "${description}"`,
    input: { httpStatus: 400, body: err('invalid_grant', description) },
    code: 'chain_broken',
    reason,
  })),
  {
    name: 'keycloak ≤26.5: 401 invalid_grant "Invalid user credentials" on the direct grant',
    input: {
      grant: 'password',
      httpStatus: 401,
      body: err('invalid_grant', 'Invalid user credentials'),
    },
    code: 'configuration',
    reason: 'InvalidCredentials',
  },
  {
    name: 'keycloak ≥26.6: 400 invalid_grant "Invalid user credentials"',
    input: {
      grant: 'password',
      httpStatus: 400,
      body: err('invalid_grant', 'Invalid user credentials'),
    },
    code: 'configuration',
    reason: 'InvalidCredentials',
  },
  {
    name: 'keycloak: 401 unauthorized_client "Invalid client or Invalid client credentials" is a wrong client secret',
    input: {
      httpStatus: 401,
      body: err('unauthorized_client', 'Invalid client or Invalid client credentials'),
    },
    code: 'configuration',
    reason: 'InvalidClient',
  },
  {
    name: 'keycloak: not_allowed "Offline tokens not allowed for the user or client"',
    input: {
      httpStatus: 400,
      body: err('not_allowed', 'Offline tokens not allowed for the user or client'),
    },
    code: 'configuration',
    reason: 'NotAllowed',
  },
  {
    name: 'keycloak: direct grant not enabled for the client',
    input: {
      grant: 'password',
      httpStatus: 400,
      body: err('unauthorized_client', 'Client not allowed for direct access grants'),
    },
    code: 'configuration',
    reason: 'UnauthorizedClient',
  },
  // Generic RFC 6749 servers
  {
    name: 'auth0: 403 invalid_grant "Unknown or invalid refresh token."',
    input: {
      httpStatus: 403,
      body: err('invalid_grant', 'Unknown or invalid refresh token.'),
    },
    code: 'chain_broken',
    reason: 'RefreshTokenInvalid',
  },
  {
    name: 'generic: invalid_grant without description',
    input: { httpStatus: 400, body: err('invalid_grant') },
    code: 'chain_broken',
    reason: 'RefreshTokenRejected',
  },
  {
    name: 'generic: invalid_grant "refresh token revoked"',
    input: { httpStatus: 400, body: err('invalid_grant', 'Refresh token revoked') },
    code: 'chain_broken',
    reason: 'RefreshTokenRevoked',
  },
  {
    name: 'generic: invalid_grant on an authorization_code exchange',
    input: {
      grant: 'authorization_code',
      httpStatus: 400,
      body: err('invalid_grant', 'code used'),
    },
    code: 'chain_broken',
    reason: 'AuthorizationCodeRejected',
  },
  {
    name: 'generic: invalid_grant on a password grant stops (no lockout)',
    input: { grant: 'password', httpStatus: 400, body: err('invalid_grant') },
    code: 'configuration',
    reason: 'InvalidCredentials',
  },
  {
    name: 'generic: 401 invalid_client',
    input: { httpStatus: 401, body: err('invalid_client', 'Invalid client credentials') },
    code: 'configuration',
    reason: 'InvalidClient',
  },
  {
    name: 'generic: invalid_scope',
    input: { httpStatus: 400, body: err('invalid_scope') },
    code: 'configuration',
    reason: 'InvalidScope',
  },
  {
    name: 'generic: unsupported_grant_type',
    input: { httpStatus: 400, body: err('unsupported_grant_type') },
    code: 'configuration',
    reason: 'UnsupportedGrantType',
  },
  {
    name: 'generic: other invalid_request',
    input: {
      httpStatus: 400,
      body: err('invalid_request', 'Missing parameter: code_verifier'),
    },
    code: 'configuration',
    reason: 'InvalidRequest',
  },
  {
    name: 'generic: 403 without invalid_grant',
    input: { httpStatus: 403, body: '<html>Forbidden</html>' },
    code: 'configuration',
    reason: 'Forbidden',
  },
  {
    name: 'generic: 401 without a body',
    input: { httpStatus: 401 },
    code: 'configuration',
    reason: 'InvalidClient',
  },
  {
    name: 'generic: 404',
    input: { httpStatus: 404, body: 'Not Found' },
    code: 'configuration',
    reason: 'EndpointNotFound',
  },
  {
    name: 'generic: 400 server_error in the body is transient',
    input: { httpStatus: 400, body: err('temporarily_unavailable') },
    code: 'transient',
    reason: 'ProviderUnavailable',
  },
  {
    name: 'generic: 500',
    input: { httpStatus: 500, body: 'oops' },
    code: 'transient',
    reason: 'ProviderUnavailable',
  },
  {
    name: 'generic: 503 with Retry-After seconds',
    input: { httpStatus: 503, headers: { 'Retry-After': '120' } },
    code: 'transient',
    reason: 'ProviderUnavailable',
    extra: { retryAfterMs: 120_000 },
  },
  {
    name: 'generic: 429 with Retry-After seconds',
    input: { httpStatus: 429, headers: { 'retry-after': '30' } },
    code: 'transient',
    reason: 'RateLimited',
    extra: { retryAfterMs: 30_000 },
  },
  {
    name: 'generic: 429 with Retry-After HTTP-date',
    input: {
      httpStatus: 429,
      headers: { 'Retry-After': new Date(NOW + 90_000).toUTCString() },
    },
    code: 'transient',
    reason: 'RateLimited',
    extra: { retryAfterMs: 90_000 },
  },
  {
    name: 'generic: 429 without hints',
    input: { httpStatus: 429 },
    code: 'transient',
    reason: 'RateLimited',
    extra: { retryAfterMs: undefined },
  },
  {
    name: 'generic: 302 redirect',
    input: {
      httpStatus: 302,
      headers: { location: 'https://login.example.com/?token=x' },
    },
    code: 'configuration',
    reason: 'UnexpectedRedirect',
  },
  {
    name: 'generic: error wrapped in a 200',
    input: { httpStatus: 200, body: err('invalid_grant', 'Token is not active') },
    code: 'chain_broken',
    reason: 'RefreshTokenExpired',
  },
  {
    name: 'raw JSON text bodies are parsed',
    input: {
      httpStatus: 400,
      body: '{"error":"invalid_grant","error_description":"Stale token"}',
    },
    code: 'chain_broken',
    reason: 'RefreshTokenReused',
  },
  // Network and malformed answers
  {
    name: 'network: connection refused before sending is transient',
    input: { networkError: 'connection' },
    code: 'transient',
    reason: 'ConnectionFailed',
  },
  {
    name: 'network: timeout after sending a refresh is in doubt',
    input: { networkError: 'timeout' },
    code: 'in_doubt',
    reason: 'ResponseLost',
  },
  {
    name: 'network: reset after sending a refresh is in doubt',
    input: { grant: 'refresh_token', networkError: 'reset' },
    code: 'in_doubt',
    reason: 'ResponseLost',
  },
  {
    name: 'network: response lost mid-body on a code exchange is in doubt',
    input: { grant: 'authorization_code', networkError: 'lost-response', httpStatus: 200 },
    code: 'in_doubt',
    reason: 'ResponseLost',
  },
  {
    name: 'network: timeout on client_credentials is only transient',
    input: { grant: 'client_credentials', networkError: 'timeout' },
    code: 'transient',
    reason: 'Timeout',
  },
  {
    name: 'network: reset on a password grant is only transient',
    input: { grant: 'password', networkError: 'reset' },
    code: 'transient',
    reason: 'ConnectionReset',
  },
  {
    name: 'network: body lost after a 503 status line is judged by the status',
    input: { networkError: 'lost-response', httpStatus: 503 },
    code: 'transient',
    reason: 'ProviderUnavailable',
  },
  {
    name: 'malformed: unparseable 200 on a refresh is in doubt',
    input: { httpStatus: 200, body: '{"access_token": "abc", trunc' },
    code: 'in_doubt',
    reason: 'MalformedResponse',
  },
  {
    name: 'malformed: 200 without access_token on a refresh is in doubt',
    input: { httpStatus: 200, body: { token_type: 'bearer' } },
    code: 'in_doubt',
    reason: 'MalformedResponse',
  },
  {
    name: 'malformed: unparseable 200 on client_credentials is transient',
    input: { grant: 'client_credentials', httpStatus: 200, body: '<html>' },
    code: 'transient',
    reason: 'MalformedResponse',
  },
  {
    name: 'too large: 200 on a refresh is in doubt',
    input: { httpStatus: 200, bodyTooLarge: true },
    code: 'in_doubt',
    reason: 'ResponseTooLarge',
  },
  {
    name: 'too large: error status is transient',
    input: { httpStatus: 500, bodyTooLarge: true },
    code: 'transient',
    reason: 'ResponseTooLarge',
  },
  {
    name: 'no status and no network detail is transient',
    input: {},
    code: 'transient',
    reason: 'ProviderUnavailable',
  },
];

describe('classifyTokenFailure', () => {
  it.each(rows)('$name', ({ input, code, reason, extra }) => {
    const failure = classifyTokenFailure({ ...input, nowMs: NOW });
    expect(failure.code).toBe(code);
    expect(failure.reason).toBe(reason);
    for (const [key, value] of Object.entries(extra ?? {})) {
      expect(failure[key as keyof typeof failure]).toEqual(value);
    }
    expect(failure.message.length).toBeGreaterThan(0);
    expect(failure.message.length).toBeLessThanOrEqual(400);
  });

  it('puts the error code and a sanitised description into the message, nothing else of the body', () => {
    const refreshToken = 'rt-0123456789abcdefghij';
    const failure = classifyTokenFailure({
      httpStatus: 400,
      nowMs: NOW,
      redact: [refreshToken],
      body: {
        error: 'invalid_grant',
        error_description: `Token ${refreshToken} is not active`,
        access_token: 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl',
        secret_stuff: 'hunter2-hunter2',
      },
    });
    expect(failure.message).toBe(
      'refresh token has expired (chain broken) (HTTP 400, error=invalid_grant: Token [redacted] is not active)',
    );
    expect(failure.message).not.toContain('hunter2');
    expect(failure.message).not.toContain('eyJ');
  });

  it('names the Concur error code in the message, in the concur dialect only', () => {
    const body = { code: 108, error: 'invalid_grant', error_description: 'bad or expired refresh token' };
    expect(classifyTokenFailure({ errorDialect: 'concur', httpStatus: 400, nowMs: NOW, body }).message).toBe(
      'refresh token was rejected as invalid or expired (chain broken) (HTTP 400, code 108, error=invalid_grant: bad or expired refresh token)',
    );
    expect(classifyTokenFailure({ httpStatus: 400, nowMs: NOW, body }).message).not.toContain('code 108');
  });

  it('keeps Retry-After in the message and the fields', () => {
    const failure = classifyTokenFailure({
      httpStatus: 429,
      headers: { 'Retry-After': '5' },
      nowMs: NOW,
    });
    expect(failure.message).toBe('token endpoint rate limit reached (HTTP 429, retry after 5s)');
  });

  it('names the host in a network failure, so the status says which endpoint did not answer', () => {
    const timeout = (host?: string): string =>
      classifyTokenFailure({
        grant: 'client_credentials',
        networkError: 'timeout',
        nowMs: NOW,
        ...(host !== undefined ? { host } : {}),
      }).message;
    expect(timeout('tarpit.example:8443')).toBe(
      'token endpoint did not answer in time (host tarpit.example:8443)',
    );
    expect(timeout()).toBe('token endpoint did not answer in time');
    // An answer with a status is judged by it; the host adds nothing there.
    expect(
      classifyTokenFailure({ httpStatus: 503, networkError: 'lost-response', host: 'h.example', nowMs: NOW })
        .message,
    ).not.toContain('h.example');
  });

  it('replaces an error code that is not a plain OAuth word', () => {
    const failure = classifyTokenFailure({
      httpStatus: 400,
      nowMs: NOW,
      body: { error: 'bad <script>alert(1)</script> refresh_token=abc' },
    });
    expect(failure.oauthError).toBe('unrecognised_error');
    expect(failure.message).not.toContain('script');
  });

  it('honours Retry-After on a too-early answer as notBefore', () => {
    const failure = classifyTokenFailure({
      httpStatus: 400,
      headers: { reason: 'TooEarlyToRefreshTokens', 'retry-after': '30' },
      nowMs: NOW,
    });
    expect(failure).toMatchObject({ code: 'too_early', notBeforeMs: NOW + 30_000 });
  });
});

describe('Retry-After and rate-limit reset parsing', () => {
  it.each([
    ['120', 120_000],
    ['0', undefined],
    [new Date(NOW + 10_000).toUTCString(), 10_000],
    [new Date(NOW - 10_000).toUTCString(), undefined],
    ['soon', undefined],
    [undefined, undefined],
  ])('Retry-After %s', (value, expected) => {
    expect(parseRetryAfter(value, NOW)).toBe(expected);
  });

  it.each([
    [String(NOW + 5_000), 5_000], // epoch ms (Exact)
    [String(Math.floor((NOW + 60_000) / 1000)), 60_000], // epoch seconds
    ['30', 30_000], // delta seconds
    [String(NOW - 1), undefined],
    ['x', undefined],
  ])('X-RateLimit-Reset %s', (value, expected) => {
    expect(parseRateLimitReset(value, NOW)).toBe(expected);
  });
});

describe('sanitising upstream text', () => {
  it('removes JWTs, credentials, query strings, e-mail addresses and long opaque runs', () => {
    const text = sanitizeDescription(
      'jwt eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjMifQ.sig; password=hunter2 Bearer abc.def ' +
        'see https://idp.example.com/cb?code=SECRETCODE#frag user alice@example.com ' +
        'opaque 8xK2mQ9pL4vR7tY1 host us2.api.concursolutions.com at 2030-01-01T00:00:00Z',
    );
    expect(text).toBe(
      'jwt [redacted]; password=[redacted] Bearer [redacted] see https://idp.example.com user [redacted] ' +
        'opaque [redacted] host us2.api.concursolutions.com at 2030-01-01T00:00:00Z',
    );
  });

  it('redacts given secrets, also URL-encoded', () => {
    expect(sanitizeDescription('bad value a+b/c== or a%2Bb%2Fc%3D%3D', ['a+b/c=='])).toBe(
      'bad value [redacted] or [redacted]',
    );
  });

  it('flattens control characters and truncates to 200 characters', () => {
    const text = sanitizeDescription(`line1\r\nline2\u0000 ${'word '.repeat(100)}`);
    expect(text?.startsWith('line1 line2 word')).toBe(true);
    expect(text?.length).toBe(200);
    expect(text?.endsWith('…')).toBe(true);
  });

  // The work bound cuts hostile input at 800 characters; padding that collapses (spaces, control
  // characters) puts whatever was cut right into the 200 characters shown.
  it.each([
    { name: 'a known secret', sensitive: 'hunter2-Secret-Value', secrets: ['hunter2-Secret-Value'] },
    {
      name: 'a known secret with spaces',
      sensitive: 'correct horse battery staple',
      secrets: ['correct horse battery staple'],
    },
    { name: 'a known secret, URL-encoded', sensitive: 'p%40ss%2Fw0rd%3D%3D', secrets: ['p@ss/w0rd=='] },
    { name: 'an unknown opaque token', sensitive: 'tok8xK2mQ9pL4vR7tY1zzQ', secrets: [] },
    { name: 'an unknown JWT', sensitive: 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjMifQ.sig', secrets: [] },
  ])('redacts before it truncates: $name across the cut', ({ sensitive, secrets }) => {
    for (const offset of [1, 4, 9]) {
      const text = sanitizeDescription(`denied ${' '.repeat(800 - 7 - offset)}${sensitive} end`, secrets);
      const fragments = Array.from({ length: sensitive.length - 3 }, (_, i) => sensitive.slice(i, i + 4));
      expect(fragments.filter((fragment) => text?.includes(fragment))).toEqual([]);
    }
  });

  it('returns undefined for non-strings and blanks', () => {
    expect(sanitizeDescription(42)).toBeUndefined();
    expect(sanitizeDescription('   ')).toBeUndefined();
    expect(sanitizeErrorCode(undefined)).toBeUndefined();
    expect(sanitizeErrorCode('invalid_grant')).toBe('invalid_grant');
  });
});

describe('TokenError', () => {
  it('serialises only safe fields and carries no cause', () => {
    const error = new TokenError({
      code: 'chain_broken',
      reason: 'RefreshTokenReused',
      message: 'refresh token was rejected',
      httpStatus: 401,
      oauthError: 'unauthorized_client',
      description: 'Old refresh token used.',
    });
    expect(error).toBeInstanceOf(Error);
    expect(error.name).toBe('TokenError');
    expect(error.cause).toBeUndefined();
    expect(JSON.parse(JSON.stringify(error))).toEqual({
      name: 'TokenError',
      code: 'chain_broken',
      reason: 'RefreshTokenReused',
      message: 'refresh token was rejected',
      httpStatus: 401,
      oauthError: 'unauthorized_client',
    });
  });
});
