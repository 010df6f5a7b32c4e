// A standalone simulator of Exact Online's OAuth 2.0 server and one API call, for tests of the
// operator's exact-online preset (plain HTTP on loopback; the operator runs with
// --allow-insecure-http against it).
//
// What it reproduces, from Exact's OAuth documentation
// (https://support.exactonline.com/community/s/knowledge-base#All-All-DNO-Content-oauth-eol-oauth-devstep4),
// its API limits (https://support.exactonline.com/community/s/knowledge-base#All-All-DNO-Content-api-limits)
// and what its users report (e.g. https://github.com/picqer/exact-php-client/issues/300 and #549):
// - POST /api/oauth2/token, form-encoded, client_secret_post; grants authorization_code and
//   refresh_token. expires_in is a string ("600"). Every refresh returns a new refresh token.
// - Rotation: the predecessor of a refresh token stays usable until its successor is used, i.e.
//   presented at the token endpoint, or the access token issued with it presented at the API. A
//   reuse after that answers 401 unauthorized_client "Old refresh token used." (400 on option). A
//   client whose answer got lost can therefore retry with the predecessor, and gets yet another
//   successor; the successor it never saw is then dead.
// - A broken (revoked) chain, or a token the server never issued, answers 400 invalid_grant
//   "Token is not allowed, because of invalid or empty chainId".
// - A new access token within 570 s of the previous one (per app and user) answers 400
//   access_denied with the header `Reason: TooEarlyToRefreshTokens`. Whether that also kills the
//   chain is not documented: option tooEarlyKillsChain.
// - A refresh token unused for 30 days answers 400 invalid_request "The refresh token expired at
//   <date> and it is now <date>." (dates as Exact's .NET servers write them, UTC).
// - Limits: 200 token requests per app and day; 60 API calls a minute and 5,000 a day per company
//   and app (429 past them) with X-RateLimit-* and X-RateLimit-Minutely-* headers whose resets are
//   epoch milliseconds; 10 error answers (400/401/403/404) in an hour on an endpoint block the app
//   key there for an hour (answered 401 or 429: option blockedStatus).
// - GET /api/oauth2/auth redirects, as Exact's does, to a login page (/docs/Login.aspx?ReturnUrl=…):
//   a username + password form, then a TOTP form (RFC 6238) on the same URL; a right code sends the
//   browser back to the authorization request with a one-time login cookie, which answers with a
//   redirect to redirect_uri carrying code and state (response_type=code) or #access_token
//   (response_type=token, no refresh token). Exact's field names are not public: this simulator
//   picks its own and takes others as options. Codes live 3 minutes and are single use; PKCE (S256
//   or plain) is optional.
// - GET /api/v1/current/Me: authenticated by the access token (401 when unknown, expired or of a
//   revoked chain: option revokeEndsAccessTokens); it counts towards the API limits and marks the
//   token's generation as used.
//
// Every token request and API call is logged without tokens or secrets (requests()): the refresh
// token a request presented is named by its generation (issue order) and by how many times it had
// been presented, so a test can tell a client that never presents a token twice from one that
// retries, and when.
//
// Every provider duration is compressed by timeScale and judged on an injectable clock; the TOTP
// step is not (an authenticator's codes would not match).
import { createHash, randomUUID } from 'node:crypto';
import { loginPage, messagePage, otpPage } from '../harness/login-html.ts';
import { TotpVerifier, type ReplayRule } from '../harness/totp-verifier.ts';
import {
  bearerOf,
  cookiesOf,
  FaultInjector,
  formOf,
  htmlReply,
  isFormPost,
  jsonReply,
  randomToken,
  redirectReply,
  credentialsOf,
  simTime,
  startSimServer,
  textReply,
  wholeSeconds,
  type FaultControls,
  type Reply,
  type SimCredentials,
  type SimRequest,
  type SimTimeOptions,
} from './sim-server.ts';

export const EXACT_TOKEN_PATH = '/api/oauth2/token';
export const EXACT_AUTH_PATH = '/api/oauth2/auth';
export const EXACT_LOGIN_PATH = '/docs/Login.aspx';
export const EXACT_ME_PATH = '/api/v1/current/Me';

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const ACCESS_TOKEN_LIFETIME = 600 * SECOND;
const MIN_REFRESH_INTERVAL = 570 * SECOND;
/** Exact's floor between two access tokens of an app and user, unscaled (the simulator's own figure). */
export const EXACT_FLOOR_MS = MIN_REFRESH_INTERVAL;
/** The lifetime of Exact's access tokens, unscaled. */
export const EXACT_ACCESS_TOKEN_LIFETIME_MS = ACCESS_TOKEN_LIFETIME;
const CODE_LIFETIME = 3 * MINUTE;
const TICKET_COOKIE = 'EolLoginTicket';
const ERROR_STATUSES = new Set([400, 401, 403, 404]);
/** Base32, 20 bytes: test data. */
const DEFAULT_TOTP_SECRET = 'GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ';

/** Names of the login pages' inputs (Exact's own are not public). */
export interface ExactLoginFields {
  username: string;
  password: string;
  totp: string;
  /** Hidden input carrying the login state between the two pages. */
  state: string;
}

export interface ExactLimits {
  tokenRequestsPerDay: number;
  apiCallsPerMinute: number;
  apiCallsPerDay: number;
  errorsPerHour: number;
}

/** Who the simulator knows; fixed for its life. */
export interface ExactOnlineIdentity extends Partial<SimCredentials> {
  /** Base32 TOTP secret (SHA-1, 6 digits, 30 s); a fixed test secret by default. */
  totpSecret?: string;
  /** How a replayed TOTP code is refused. Default 'after-last-step'. */
  totpReplay?: ReplayRule;
  fields?: Partial<ExactLoginFields>;
  /** The company (division) of the user. */
  division?: number;
}

/** What configure() may change while the simulator runs. */
export interface ExactOnlineBehaviour {
  /** Registered redirect URIs; without them any http(s) URL is accepted. */
  redirectUris?: string[];
  /** Status of "Old refresh token used.": 401 as mostly reported, 400 as sometimes reported. */
  oldTokenStatus?: 400 | 401;
  /** Whether a too-early refresh also breaks the chain (not documented by Exact). Default false. */
  tooEarlyKillsChain?: boolean;
  /** Status of answers to a blocked app key (not documented by Exact). Default 429. */
  blockedStatus?: 401 | 429;
  /**
   * Whether the access tokens of a revoked chain stop working at the API at once (an app whose
   * access was revoked; how fast Exact applies it is not documented). Default true.
   */
  revokeEndsAccessTokens?: boolean;
  /** Lifetime of an unused refresh token, in provider days (30; it used to be 180). */
  refreshTokenLifetimeDays?: number;
  limits?: Partial<ExactLimits>;
}

export type ExactOnlineSimulatorOptions = ExactOnlineIdentity & ExactOnlineBehaviour & SimTimeOptions;

export interface ExactOnlineStats {
  /** Requests that reached the token endpoint (injected gateway errors do not). */
  tokenRequests: number;
  /** Access + refresh token pairs issued by the token endpoint. */
  tokensIssued: number;
  /**
   * Refresh requests that presented a token presented before, whatever the answer (a retry after a
   * too-early or lost answer, or a reuse): a client that never presents a token twice keeps it 0.
   */
  repeatedPresentations: number;
  /** "Old refresh token used." answers. */
  reuses: number;
  /** "Rate limit exceeded: access_token not expired" answers. */
  tooEarly: number;
  /** "The refresh token expired at …" answers. */
  expired: number;
  /** "invalid or empty chainId" answers. */
  brokenChain: number;
  /** Answers refused because the app key was blocked. */
  blockedAnswers: number;
  /** Error answers (400/401/403/404) on both endpoints. */
  errors: number;
  apiCalls: number;
  apiRateLimited: number;
  logins: number;
  failedPasswords: number;
  failedTotpCodes: number;
}

export type ExactEndpoint = 'token' | 'api';

/** What the simulator made of a request. */
export type ExactOutcome =
  | 'issued'
  | 'too-early'
  | 'reused'
  | 'broken-chain'
  | 'expired'
  | 'blocked'
  | 'rate-limited'
  | 'refused'
  | 'ok'
  | 'unauthorized';

/** One request to the token endpoint or the API, as answered; no token, no secret. */
export interface ExactRequest {
  /** Clock ms when it arrived. */
  at: number;
  endpoint: ExactEndpoint;
  /** grant_type of a token request ('' when none). */
  grantType?: string;
  /**
   * Which token the request carried: the refresh token of a refresh request or the access token at
   * the API, named by its generation (1 for the first pair issued, in issue order). Undefined for a
   * token the simulator never issued, an implicit-flow access token, or none.
   */
  generation?: number;
  /** For a refresh request: how many times that refresh token had been presented, this one included. */
  presentation?: number;
  /** The generation this request issued. */
  issued?: number;
  status: number;
  outcome: ExactOutcome;
}

export interface ExactOnlineSimulator extends Readonly<SimCredentials> {
  /** http://127.0.0.1:port */
  readonly origin: string;
  readonly tokenEndpoint: string;
  readonly authorizationEndpoint: string;
  readonly meEndpoint: string;
  /** Base32. */
  readonly totpSecret: string;
  readonly fields: ExactLoginFields;
  readonly faults: FaultControls;
  stats(): ExactOnlineStats;
  /** Every token request and API call so far, in order of arrival (injected gateway errors excluded). */
  requests(): ExactRequest[];
  /** Refresh tokens the token endpoint would accept now (a chain's head, and its predecessor while the head is unused). */
  validRefreshTokens(): string[];
  /** Until when (epoch ms) the app key is blocked on an endpoint; undefined when it is not. */
  blockedUntil(endpoint: ExactEndpoint, clientId?: string): number | undefined;
  /** Breaks the chain holding this refresh token, or every chain; returns how many were broken. */
  revoke(refreshToken?: string): number;
  /** Starts a chain as a completed login and code exchange would (counts as a token issue). */
  seedChain(): { accessToken: string; refreshToken: string };
  /** Changes behaviour options for the following requests. */
  configure(changes: ExactOnlineBehaviour): void;
  close(): Promise<void>;
}

interface Chain {
  id: string;
  clientId: string;
  revoked: boolean;
  /** The latest generation; undefined only while the chain is being created. */
  head: Generation | undefined;
}

/** The refresh token and access token of one token response. */
interface Generation {
  refreshToken: string;
  accessToken: string;
  chain: Chain;
  parent: Generation | undefined;
  issuedAt: number;
  /** Whether the refresh token was presented or the access token used at the API. */
  used: boolean;
  /** Issue order, from 1: how the request log names this pair. */
  n: number;
  /** How many refresh requests presented this refresh token. */
  presentations: number;
}

interface AccessGrant {
  clientId: string;
  expiresAt: number;
  generation: Generation | undefined;
}

interface CodeGrant {
  clientId: string;
  redirectUri: string;
  expiresAt: number;
  used: boolean;
  challenge: string | undefined;
  challengeMethod: string | undefined;
}

interface LoginSession {
  returnUrl: string;
  passwordOK: boolean;
}

/** "10/28/2022 4:15:50 PM", as in Exact's expiry message (UTC). */
function dotnetDate(ms: number): string {
  const d = new Date(ms);
  const pad = (n: number): string => String(n).padStart(2, '0');
  const hours = d.getUTCHours();
  const h12 = hours % 12 === 0 ? 12 : hours % 12;
  return `${d.getUTCMonth() + 1}/${d.getUTCDate()}/${d.getUTCFullYear()} ${h12}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} ${hours < 12 ? 'AM' : 'PM'}`;
}

/** An OAuth error as Exact's .NET serializer writes it (slashes escaped). */
function oauthError(
  status: number,
  error: string,
  description: string,
  headers: Record<string, string> = {},
): Reply {
  const reply = jsonReply(status, { error, error_description: description }, headers);
  return { ...reply, body: reply.body?.replaceAll('/', '\\/') };
}

/** Counts per key in fixed windows aligned to the epoch (a day, a minute), as rate-limit headers report them. */
class WindowCounter {
  private readonly counts = new Map<string, { start: number; count: number }>();

  hit(key: string, now: number, periodMs: number): { count: number; resetAt: number } {
    const start = Math.floor(now / periodMs) * periodMs;
    const entry = this.counts.get(key);
    const count = entry?.start === start ? entry.count + 1 : 1;
    this.counts.set(key, { start, count });
    return { count, resetAt: Math.ceil(start + periodMs) };
  }
}

export async function startExactOnlineSimulator(
  initial: ExactOnlineSimulatorOptions = {},
): Promise<ExactOnlineSimulator> {
  let opts: ExactOnlineBehaviour = { ...initial };
  const time = simTime(initial);
  const faults = new FaultInjector();
  const credentials = credentialsOf(initial, 'exact');
  const { clientId, clientSecret, username, password } = credentials;
  const totpSecret = initial.totpSecret ?? DEFAULT_TOTP_SECRET;
  const fields: ExactLoginFields = {
    username: initial.fields?.username ?? 'UserNameField',
    password: initial.fields?.password ?? 'PasswordField',
    totp: initial.fields?.totp ?? 'VerificationCodeField',
    state: initial.fields?.state ?? 'LoginState',
  };
  const division = initial.division ?? 123456;
  const totp = new TotpVerifier(initial.totpReplay ?? 'after-last-step');
  const limits = (): ExactLimits => ({
    tokenRequestsPerDay: 200,
    apiCallsPerMinute: 60,
    apiCallsPerDay: 5000,
    errorsPerHour: 10,
    ...opts.limits,
  });
  const userId = randomUUID();

  const stats: ExactOnlineStats = {
    tokenRequests: 0,
    tokensIssued: 0,
    repeatedPresentations: 0,
    reuses: 0,
    tooEarly: 0,
    expired: 0,
    brokenChain: 0,
    blockedAnswers: 0,
    errors: 0,
    apiCalls: 0,
    apiRateLimited: 0,
    logins: 0,
    failedPasswords: 0,
    failedTotpCodes: 0,
  };
  const chains: Chain[] = [];
  const generations = new Map<string, Generation>();
  const requestLog: ExactRequest[] = [];
  const accessTokens = new Map<string, AccessGrant>();
  const codes = new Map<string, CodeGrant>();
  const sessions = new Map<string, LoginSession>();
  const tickets = new Set<string>();
  const lastIssuedAt = new Map<string, number>();
  const dailyTokenRequests = new WindowCounter();
  const apiDaily = new WindowCounter();
  const apiMinutely = new WindowCounter();
  const errorLog = new Map<string, number[]>();
  const blocked = new Map<string, number>();

  const refreshLifetime = (): number => time.scaled((opts.refreshTokenLifetimeDays ?? 30) * DAY);

  const issueImplicit = (client: string): string => {
    const accessToken = randomToken(48);
    const expiresAt = time.now() + time.scaled(ACCESS_TOKEN_LIFETIME);
    accessTokens.set(accessToken, { clientId: client, expiresAt, generation: undefined });
    return accessToken;
  };

  const issue = (chain: Chain, parent?: Generation): Generation => {
    const now = time.now();
    const generation: Generation = {
      refreshToken: randomToken(48),
      accessToken: randomToken(48),
      chain,
      parent,
      issuedAt: now,
      used: false,
      n: generations.size + 1,
      presentations: 0,
    };
    chain.head = generation;
    generations.set(generation.refreshToken, generation);
    accessTokens.set(generation.accessToken, {
      clientId: chain.clientId,
      expiresAt: now + time.scaled(ACCESS_TOKEN_LIFETIME),
      generation,
    });
    lastIssuedAt.set(chain.clientId, now);
    stats.tokensIssued++;
    return generation;
  };

  const startChain = (client: string): Generation => {
    const chain: Chain = { id: randomUUID(), clientId: client, revoked: false, head: undefined };
    chains.push(chain);
    return issue(chain);
  };

  const tokenResponse = (generation: Generation): Reply =>
    jsonReply(200, {
      access_token: generation.accessToken,
      token_type: 'bearer',
      expires_in: String(wholeSeconds(time.scaled(ACCESS_TOKEN_LIFETIME))),
      refresh_token: generation.refreshToken,
    });

  /** The head of its chain, or the head's predecessor while the head is unused. */
  const usable = (generation: Generation): boolean => {
    const head = generation.chain.head;
    return head !== undefined && (generation === head || (generation === head.parent && !head.used));
  };

  const brokenChain = (): Reply => {
    stats.brokenChain++;
    return oauthError(400, 'invalid_grant', 'Token is not allowed, because of invalid or empty chainId');
  };

  const refreshGrant = (form: URLSearchParams, client: string): Reply => {
    const presented = form.get('refresh_token') ?? '';
    if (presented === '')
      return oauthError(400, 'invalid_request', 'The refresh_token parameter is missing.');
    const generation = generations.get(presented);
    if (generation === undefined || generation.chain.revoked || generation.chain.clientId !== client) {
      return brokenChain();
    }
    if (!usable(generation)) {
      stats.reuses++;
      return oauthError(opts.oldTokenStatus ?? 401, 'unauthorized_client', 'Old refresh token used.');
    }
    const now = time.now();
    const expiresAt = generation.issuedAt + refreshLifetime();
    if (now >= expiresAt) {
      stats.expired++;
      return oauthError(
        400,
        'invalid_request',
        `The refresh token expired at ${dotnetDate(expiresAt)} and it is now ${dotnetDate(now)}.`,
      );
    }
    // Presenting the successor is its first use: from now on its predecessor is dead, whatever
    // the outcome of this request.
    generation.used = true;
    const last = lastIssuedAt.get(client);
    if (last !== undefined && now - last < time.scaled(MIN_REFRESH_INTERVAL)) {
      stats.tooEarly++;
      if (opts.tooEarlyKillsChain === true) generation.chain.revoked = true;
      return oauthError(400, 'access_denied', 'Rate limit exceeded: access_token not expired', {
        Reason: 'TooEarlyToRefreshTokens',
      });
    }
    return tokenResponse(issue(generation.chain, generation));
  };

  const codeGrant = (form: URLSearchParams, client: string): Reply => {
    const code = codes.get(form.get('code') ?? '');
    const now = time.now();
    if (code === undefined || code.used || now >= code.expiresAt || code.clientId !== client) {
      return oauthError(400, 'invalid_grant', 'The authorization code is invalid or expired.');
    }
    code.used = true;
    if (form.get('redirect_uri') !== code.redirectUri) {
      return oauthError(400, 'invalid_grant', 'The redirect_uri does not match the authorization request.');
    }
    if (code.challenge !== undefined) {
      const verifier = form.get('code_verifier') ?? '';
      const derived =
        code.challengeMethod === 'S256'
          ? createHash('sha256').update(verifier).digest('base64url')
          : verifier;
      if (verifier === '' || derived !== code.challenge) {
        return oauthError(400, 'invalid_grant', 'The code_verifier does not match the code_challenge.');
      }
    }
    return tokenResponse(startChain(client));
  };

  /** Counts an error answer towards the hourly allowance; the tenth blocks the key for an hour. */
  const noteError = (key: string, status: number): void => {
    if (!ERROR_STATUSES.has(status)) return;
    stats.errors++;
    const now = time.now();
    const hour = time.scaled(HOUR);
    const recent = (errorLog.get(key) ?? []).filter((at) => at > now - hour);
    recent.push(now);
    if (recent.length >= limits().errorsPerHour) {
      blocked.set(key, now + hour);
      errorLog.delete(key);
    } else errorLog.set(key, recent);
  };

  const blockedAnswer = (key: string): Reply | undefined => {
    const until = blocked.get(key);
    if (until === undefined) return undefined;
    if (time.now() >= until) {
      blocked.delete(key);
      return undefined;
    }
    stats.blockedAnswers++;
    return textReply(opts.blockedStatus ?? 429, 'Too many errors: the app key is blocked for an hour.');
  };

  const rateHeaders = (
    prefix: string,
    limit: number,
    count: number,
    resetAt: number,
  ): Record<string, string> => ({
    [`X-RateLimit-${prefix}Limit`]: String(limit),
    [`X-RateLimit-${prefix}Remaining`]: String(Math.max(0, limit - count)),
    [`X-RateLimit-${prefix}Reset`]: String(resetAt),
  });

  /** What a token endpoint answer says, for the request log. */
  const tokenOutcome = (reply: Reply): ExactOutcome => {
    if (reply.status === 200) return 'issued';
    if (reply.headers?.Reason === 'TooEarlyToRefreshTokens') return 'too-early';
    const description = reply.body ?? '';
    if (description.includes('Old refresh token used.')) return 'reused';
    if (description.includes('invalid or empty chainId')) return 'broken-chain';
    if (description.includes('The refresh token expired at')) return 'expired';
    return reply.status === 429 ? 'rate-limited' : 'refused';
  };

  const tokenEndpoint = (req: SimRequest): Reply => {
    const at = time.now();
    const form = isFormPost(req) ? formOf(req) : new URLSearchParams();
    const grantType = form.get('grant_type') ?? '';
    const presented =
      grantType === 'refresh_token' ? generations.get(form.get('refresh_token') ?? '') : undefined;
    // A presentation is a token sent, whatever the answer: one refused as blocked or too early
    // was presented all the same.
    if (presented !== undefined) {
      presented.presentations++;
      if (presented.presentations > 1) stats.repeatedPresentations++;
    }
    const blockedBefore = stats.blockedAnswers;
    const reply = tokenAnswer(req);
    const issued = reply.status === 200 ? (JSON.parse(reply.body ?? '{}') as { refresh_token?: string }) : {};
    const record: ExactRequest = {
      at,
      endpoint: 'token',
      grantType,
      status: reply.status,
      outcome: stats.blockedAnswers > blockedBefore ? 'blocked' : tokenOutcome(reply),
    };
    if (presented !== undefined) {
      record.generation = presented.n;
      record.presentation = presented.presentations;
    }
    const issuedGeneration = generations.get(issued.refresh_token ?? '');
    if (issuedGeneration !== undefined) record.issued = issuedGeneration.n;
    requestLog.push(record);
    return reply;
  };

  const tokenAnswer = (req: SimRequest): Reply => {
    stats.tokenRequests++;
    if (!isFormPost(req)) return oauthError(400, 'invalid_request', 'Expected a form-encoded POST.');
    const form = formOf(req);
    const client = form.get('client_id') ?? '';
    const key = `token|${client}`;
    const refused = blockedAnswer(key);
    if (refused !== undefined) return refused;
    const daily = dailyTokenRequests.hit(client, time.now(), time.scaled(DAY));
    const headers = rateHeaders('', limits().tokenRequestsPerDay, daily.count, daily.resetAt);
    let reply: Reply;
    if (daily.count > limits().tokenRequestsPerDay) {
      reply = textReply(429, 'Too many token requests today.');
    } else if (client !== clientId || form.get('client_secret') !== clientSecret) {
      reply = oauthError(400, 'invalid_client', 'The client credentials are invalid.');
    } else {
      const grantType = form.get('grant_type');
      if (grantType === 'refresh_token') reply = refreshGrant(form, client);
      else if (grantType === 'authorization_code') reply = codeGrant(form, client);
      else reply = oauthError(400, 'unsupported_grant_type', 'The grant type is not supported.');
    }
    noteError(key, reply.status);
    return { ...reply, headers: { ...reply.headers, ...headers } };
  };

  const meEndpoint = (req: SimRequest): Reply => {
    const at = time.now();
    const generation = accessTokens.get(bearerOf(req) ?? '')?.generation;
    const blockedBefore = stats.blockedAnswers;
    const reply = meAnswer(req);
    const outcome: ExactOutcome =
      stats.blockedAnswers > blockedBefore
        ? 'blocked'
        : reply.status === 200
          ? 'ok'
          : reply.status === 401
            ? 'unauthorized'
            : 'rate-limited';
    requestLog.push({
      at,
      endpoint: 'api',
      status: reply.status,
      outcome,
      ...(generation !== undefined ? { generation: generation.n } : {}),
    });
    return reply;
  };

  const meAnswer = (req: SimRequest): Reply => {
    const grant = accessTokens.get(bearerOf(req) ?? '');
    if (grant === undefined) return textReply(401, 'Unauthorized', { 'WWW-Authenticate': 'Bearer' });
    const key = `api|${grant.clientId}`;
    const refused = blockedAnswer(key);
    if (refused !== undefined) return refused;
    const revoked = grant.generation?.chain.revoked === true && opts.revokeEndsAccessTokens !== false;
    if (revoked || time.now() >= grant.expiresAt) {
      noteError(key, 401);
      return textReply(401, 'Unauthorized', { 'WWW-Authenticate': 'Bearer' });
    }
    stats.apiCalls++;
    const now = time.now();
    const company = `${grant.clientId}|${division}`;
    const day = apiDaily.hit(company, now, time.scaled(DAY));
    const minute = apiMinutely.hit(company, now, time.scaled(MINUTE));
    const headers = {
      ...rateHeaders('', limits().apiCallsPerDay, day.count, day.resetAt),
      ...rateHeaders('Minutely-', limits().apiCallsPerMinute, minute.count, minute.resetAt),
    };
    if (day.count > limits().apiCallsPerDay || minute.count > limits().apiCallsPerMinute) {
      stats.apiRateLimited++;
      return textReply(429, 'Too many requests.', headers);
    }
    if (grant.generation !== undefined) grant.generation.used = true;
    return jsonReply(
      200,
      {
        d: {
          results: [
            {
              __metadata: { uri: `${EXACT_ME_PATH}(guid'${userId}')`, type: 'Exact.Web.Api.System.Me' },
              CurrentDivision: division,
              UserID: userId,
              UserName: username,
            },
          ],
        },
      },
      headers,
    );
  };

  const authorize = (req: SimRequest): Reply => {
    const q = req.url.searchParams;
    const redirectUri = q.get('redirect_uri') ?? '';
    let target: URL;
    try {
      target = new URL(redirectUri);
    } catch {
      return htmlReply(400, messagePage('Exact Online', 'The redirect_uri is invalid.'));
    }
    const registered = opts.redirectUris;
    if (
      q.get('client_id') !== clientId ||
      !['http:', 'https:'].includes(target.protocol) ||
      (registered !== undefined && !registered.includes(redirectUri))
    ) {
      return htmlReply(400, messagePage('Exact Online', 'The client_id or redirect_uri is invalid.'));
    }
    const responseType = q.get('response_type');
    const state = q.get('state');
    if (responseType !== 'code' && responseType !== 'token') {
      target.searchParams.set('error', 'unsupported_response_type');
      if (state !== null) target.searchParams.set('state', state);
      return redirectReply(target.href);
    }
    const ticket = cookiesOf(req).find(([name, value]) => name === TICKET_COOKIE && tickets.has(value))?.[1];
    if (ticket === undefined) {
      const returnUrl = `${req.url.pathname}${req.url.search}`;
      return redirectReply(`${EXACT_LOGIN_PATH}?ReturnUrl=${encodeURIComponent(returnUrl)}`);
    }
    tickets.delete(ticket);
    const clearTicket = { 'set-cookie': `${TICKET_COOKIE}=; Path=/; Max-Age=0` };
    if (responseType === 'token') {
      const fragment = new URLSearchParams({
        access_token: issueImplicit(clientId),
        token_type: 'bearer',
        expires_in: String(wholeSeconds(time.scaled(ACCESS_TOKEN_LIFETIME))),
      });
      if (state !== null) fragment.set('state', state);
      target.hash = fragment.toString();
      return redirectReply(target.href, clearTicket);
    }
    const code = randomToken(32);
    const challenge = q.get('code_challenge') ?? undefined;
    codes.set(code, {
      clientId,
      redirectUri,
      expiresAt: time.now() + time.scaled(CODE_LIFETIME),
      used: false,
      challenge,
      challengeMethod: challenge === undefined ? undefined : (q.get('code_challenge_method') ?? 'plain'),
    });
    target.searchParams.set('code', code);
    if (state !== null) target.searchParams.set('state', state);
    return redirectReply(target.href, clearTicket);
  };

  /** The username + password page, or with `totp` the verification-code page, of a login session. */
  const loginStep = (id: string, action: string, totp: boolean, error?: string): Reply => {
    const common = { action, hidden: { [fields.state]: id }, error };
    return htmlReply(
      200,
      totp
        ? otpPage({
            ...common,
            formId: 'TotpForm',
            otpField: fields.totp,
            submit: { label: 'Verify', name: 'Verify' },
          })
        : loginPage({
            ...common,
            formId: 'LoginForm',
            username: { field: fields.username, value: '' },
            passwordField: fields.password,
            submit: { label: 'Log in', name: 'LogIn' },
          }),
    );
  };

  const login = (req: SimRequest): Reply => {
    const returnUrl = req.url.searchParams.get('ReturnUrl') ?? '';
    if (!returnUrl.startsWith(`${EXACT_AUTH_PATH}?`)) {
      return htmlReply(400, messagePage('Exact Online', 'Invalid return URL.'));
    }
    const action = `Login.aspx?ReturnUrl=${encodeURIComponent(returnUrl)}`;
    if (req.method === 'GET') {
      const id = randomToken(16);
      sessions.set(id, { returnUrl, passwordOK: false });
      return loginStep(id, action, false);
    }
    const form = formOf(req);
    const id = form.get(fields.state) ?? '';
    const session = sessions.get(id);
    if (!isFormPost(req) || session?.returnUrl !== returnUrl) {
      return htmlReply(400, messagePage('Exact Online', 'Your session has expired. Please log in again.'));
    }
    if (!session.passwordOK) {
      if (form.get(fields.username) !== username || form.get(fields.password) !== password) {
        stats.failedPasswords++;
        return loginStep(id, action, false, 'Invalid username or password.');
      }
      session.passwordOK = true;
      return loginStep(id, action, true);
    }
    const code = form.get(fields.totp) ?? '';
    if (!totp.accept(username, code, { secret: totpSecret }, time.now())) {
      stats.failedTotpCodes++;
      return loginStep(id, action, true, 'Invalid verification code.');
    }
    sessions.delete(id);
    stats.logins++;
    const ticket = randomToken(24);
    tickets.add(ticket);
    return redirectReply(session.returnUrl, {
      'set-cookie': `${TICKET_COOKIE}=${ticket}; Path=/; HttpOnly; SameSite=Lax`,
    });
  };

  const handle = (req: SimRequest): Reply => {
    const path = req.url.pathname;
    if (path === EXACT_TOKEN_PATH && req.method === 'POST') return tokenEndpoint(req);
    if (path === EXACT_ME_PATH && req.method === 'GET') return meEndpoint(req);
    if (path === EXACT_AUTH_PATH && req.method === 'GET') return authorize(req);
    if (path === EXACT_LOGIN_PATH && (req.method === 'GET' || req.method === 'POST')) return login(req);
    return textReply(404, 'Not Found');
  };

  const server = await startSimServer(handle, faults);
  const origin = server.origin;

  return {
    origin,
    tokenEndpoint: `${origin}${EXACT_TOKEN_PATH}`,
    authorizationEndpoint: `${origin}${EXACT_AUTH_PATH}`,
    meEndpoint: `${origin}${EXACT_ME_PATH}`,
    ...credentials,
    totpSecret,
    fields,
    faults,
    stats: () => ({ ...stats }),
    requests: () => requestLog.map((r) => ({ ...r })),
    validRefreshTokens() {
      const now = time.now();
      return [...generations.values()]
        .filter((g) => !g.chain.revoked && usable(g) && now < g.issuedAt + refreshLifetime())
        .map((g) => g.refreshToken);
    },
    blockedUntil(endpoint, client = clientId) {
      const until = blocked.get(`${endpoint}|${client}`);
      return until !== undefined && time.now() < until ? until : undefined;
    },
    revoke(refreshToken) {
      const targets =
        refreshToken === undefined
          ? chains
          : chains.filter((c) => generations.get(refreshToken)?.chain === c);
      const live = targets.filter((c) => !c.revoked);
      for (const chain of live) chain.revoked = true;
      return live.length;
    },
    seedChain() {
      const generation = startChain(clientId);
      return { accessToken: generation.accessToken, refreshToken: generation.refreshToken };
    },
    configure(changes) {
      opts = { ...opts, ...changes };
    },
    close: () => server.close(),
  };
}
