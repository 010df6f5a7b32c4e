// The interactive login of the test OpenID provider: Koa middleware on the provider's app that serves
// oidc-provider's interaction URL, /interaction/:uid. The authorization endpoint redirects there; the
// page is an HTML login form (username + password, a hidden CSRF field), then an HTML TOTP form (one
// field), and then the provider finishes the interaction with the authorization response: `?code=`
// for response_type=code (PKCE required) or `#access_token=` for response_type=token (see
// allowPlainTokenResponseType in provider.ts). Consent is granted automatically with the login.
//
// The pages are rendered by login-html.ts and codes checked by totp-verifier.ts, both shared with the
// Keycloak-shaped login server (login-server.ts). A TOTP code is refused when the time step it
// belongs to was already accepted for that user, so the same code never works twice.
import { randomBytes } from 'node:crypto';
import type { KoaLikeContext, KoaLikeMiddleware } from '../fault-proxy.ts';
import { isFormPost, loginPage, messagePage, otpPage, readForm, sendHtml } from '../login-html.ts';
import { checkTotpSecret, TotpVerifier } from '../totp-verifier.ts';
import type { InteractionDetails, Provider, ProviderErrors } from './provider.ts';
import type {
  LoginAttempt,
  TestOidcLoginFields,
  TestOidcLoginOptions,
  TestOidcUser,
  TotpCodeReceived,
} from './types.ts';

const INTERACTION_PATH = /^\/interaction\/([\w-]+)(?:\/(login|otp))?$/;
const CSRF_FIELD = 'csrf';

function resolveFields(fields: TestOidcLoginFields = {}): Required<TestOidcLoginFields> {
  return {
    loginFormId: fields.loginFormId ?? 'login-form',
    usernameField: fields.usernameField ?? 'username',
    passwordField: fields.passwordField ?? 'password',
    otpFormId: fields.otpFormId ?? 'otp-form',
    otpField: fields.otpField ?? 'otp',
  };
}

/** Answers with a page of our own: Koa must not write a response after it. */
function respond(ctx: KoaLikeContext, status: number, html: string): void {
  ctx.respond = false;
  sendHtml(ctx.res, status, html);
}

interface InteractionState {
  csrf: string;
  /** Set once the password was right; the TOTP form is next. */
  user?: TestOidcUser;
}

export class LoginInteraction {
  private readonly provider: Provider;
  private readonly users: Map<string, TestOidcUser>;
  private readonly fields: Required<TestOidcLoginFields>;
  private readonly serverErrors: Error[];
  private readonly sessionNotFound: ProviderErrors['SessionNotFound'];
  private readonly interactions = new Map<string, InteractionState>();
  private readonly totp = new TotpVerifier('same-step');
  readonly codes: TotpCodeReceived[] = [];
  readonly attempts: LoginAttempt[] = [];

  /** Errors of the pages go to `serverErrors`, next to the provider's own. */
  constructor(
    provider: Provider,
    errors: ProviderErrors,
    login: TestOidcLoginOptions,
    serverErrors: Error[],
  ) {
    this.provider = provider;
    this.sessionNotFound = errors.SessionNotFound;
    this.fields = resolveFields(login.fields);
    this.serverErrors = serverErrors;
    this.users = new Map();
    for (const user of login.users) {
      if (this.users.has(user.username)) throw new Error(`login user ${user.username} listed twice`);
      try {
        checkTotpSecret(user.totpSecret);
      } catch (err) {
        throw new Error(`login user ${user.username}: unusable totpSecret`, { cause: err });
      }
      this.users.set(user.username, { ...user });
    }
  }

  middleware(): KoaLikeMiddleware {
    return async (ctx, next) => {
      const match = INTERACTION_PATH.exec(ctx.path);
      if (!match) {
        await next();
        return;
      }
      const uid = match[1] ?? '';
      const step = match[2];
      try {
        await this.handle(ctx, uid, step);
      } catch (err) {
        if (ctx.res.headersSent) throw err;
        if (err instanceof this.sessionNotFound) {
          // No interaction cookie, or the interaction expired or finished already.
          respond(ctx, 400, messagePage('Sign-in failed', 'Your sign-in session expired, start again'));
          return;
        }
        this.serverErrors.push(err instanceof Error ? err : new Error(String(err)));
        respond(ctx, 500, messagePage('Sign-in failed', 'Internal error'));
      }
    };
  }

  private async handle(ctx: KoaLikeContext, uid: string, step: string | undefined): Promise<void> {
    const method = ctx.method;
    if ((step === undefined && method !== 'GET') || (step !== undefined && method !== 'POST')) {
      respond(ctx, 405, messagePage('Method not allowed'));
      return;
    }
    const details = await this.provider.interactionDetails(ctx.req, ctx.res);
    if (details.uid !== uid) {
      respond(ctx, 400, messagePage('Sign-in failed', 'This sign-in page belongs to another session'));
      return;
    }
    let state = this.interactions.get(uid);
    if (!state) {
      state = { csrf: randomBytes(16).toString('base64url') };
      this.interactions.set(uid, state);
    }

    if (details.prompt.name === 'consent') {
      // Already signed in (a session cookie): consent is automatic.
      await this.finishConsent(ctx, details);
      return;
    }
    if (details.prompt.name !== 'login') {
      respond(ctx, 400, messagePage('Sign-in failed', `Unsupported prompt ${details.prompt.name}`));
      return;
    }

    if (step === undefined) {
      respond(ctx, 200, state.user ? this.otpPage(uid, state) : this.loginPage(uid, state));
      return;
    }

    const form = isFormPost(ctx.req) ? await readForm(ctx.req) : new URLSearchParams();
    if (form.get(CSRF_FIELD) !== state.csrf) {
      respond(ctx, 403, messagePage('Sign-in failed', 'Invalid CSRF token'));
      return;
    }
    if (step === 'login') {
      this.postLogin(ctx, uid, state, form);
    } else {
      await this.postOtp(ctx, uid, state, form, details);
    }
  }

  private postLogin(ctx: KoaLikeContext, uid: string, state: InteractionState, form: URLSearchParams): void {
    const username = form.get(this.fields.usernameField) ?? '';
    const password = form.get(this.fields.passwordField) ?? '';
    const user = this.users.get(username);
    const passwordOk = user !== undefined && password === user.password;
    this.attempts.push({ at: Date.now(), username, passwordOk });
    if (!user || !passwordOk) {
      delete state.user;
      respond(ctx, 200, this.loginPage(uid, state, 'Invalid username or password', username));
      return;
    }
    state.user = user;
    respond(ctx, 200, this.otpPage(uid, state));
  }

  private async postOtp(
    ctx: KoaLikeContext,
    uid: string,
    state: InteractionState,
    form: URLSearchParams,
    details: InteractionDetails,
  ): Promise<void> {
    const user = state.user;
    if (!user) {
      respond(ctx, 200, this.loginPage(uid, state, 'Please sign in first'));
      return;
    }
    const code = form.get(this.fields.otpField) ?? '';
    const accepted = this.totp.accept(
      user.accountId,
      code,
      { secret: user.totpSecret, periodSec: user.totpPeriodSec },
      Date.now(),
    );
    this.codes.push({ at: Date.now(), code, accepted });
    if (!accepted) {
      respond(ctx, 200, this.otpPage(uid, state, 'Invalid authenticator code'));
      return;
    }

    // Login and consent in one step: a grant with every requested scope (oidc-provider has already
    // dropped offline_access unless prompt=consent was asked for; refresh tokens are issued anyway).
    const clientId = String(details.params.client_id);
    const grant = new this.provider.Grant({ accountId: user.accountId, clientId });
    const scope = typeof details.params.scope === 'string' ? details.params.scope : '';
    if (scope !== '') grant.addOIDCScope(scope);
    const grantId = await grant.save();
    this.interactions.delete(uid);
    ctx.respond = false;
    await this.provider.interactionFinished(
      ctx.req,
      ctx.res,
      { login: { accountId: user.accountId }, consent: { grantId } },
      { mergeWithLastSubmission: false },
    );
  }

  private async finishConsent(ctx: KoaLikeContext, details: InteractionDetails): Promise<void> {
    const accountId = details.session?.accountId;
    if (accountId === undefined) throw new Error('consent prompt without a session');
    const existing =
      details.grantId === undefined ? undefined : await this.provider.Grant.find(details.grantId);
    const grant =
      existing ?? new this.provider.Grant({ accountId, clientId: String(details.params.client_id) });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = details.prompt.details as {
      missingOIDCScope?: string[];
      missingOIDCClaims?: string[];
      missingResourceScopes?: Record<string, string[]>;
    };
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    this.interactions.delete(details.uid);
    ctx.respond = false;
    await this.provider.interactionFinished(
      ctx.req,
      ctx.res,
      { consent: existing ? {} : { grantId } },
      { mergeWithLastSubmission: true },
    );
  }

  private loginPage(uid: string, state: InteractionState, error?: string, username = ''): string {
    return loginPage({
      formId: this.fields.loginFormId,
      action: `/interaction/${uid}/login`,
      hidden: { [CSRF_FIELD]: state.csrf },
      username: { field: this.fields.usernameField, value: username },
      passwordField: this.fields.passwordField,
      error,
      submit: { label: 'Sign in' },
    });
  }

  private otpPage(uid: string, state: InteractionState, error?: string): string {
    return otpPage({
      formId: this.fields.otpFormId,
      action: `/interaction/${uid}/otp`,
      hidden: { [CSRF_FIELD]: state.csrf },
      otpField: this.fields.otpField,
      error,
      submit: { label: 'Verify' },
    });
  }
}
