// The login form's bounds on tenant input: the selector grammar (checkFormSelector) and the size,
// nesting and element count of the pages parsed (analysePage). Both run on the event loop every
// connection shares, so "refused" must also mean "refused fast".
import { describe, expect, it } from 'vitest';
import { TokenError } from '../../src/oauth/errors.ts';
import {
  analysePage,
  checkFormSelector,
  MAX_LOGIN_PAGE_BYTES,
  MAX_PAGE_DEPTH,
  MAX_PAGE_ELEMENTS,
  MAX_SELECTOR_COMPOUNDS,
  MAX_SELECTOR_LENGTH,
  type FormProfile,
} from '../../src/oauth/login-form.ts';

const PAGE_URL = new URL('https://login.example/realms/x/protocol/openid-connect/auth');

const KEYCLOAK_PAGE = `<!doctype html><html><body><div id="kc-content"><div class="card">
  <form id="kc-form-login" class="login form" action="/realms/x/login-actions/authenticate?x=1" method="post">
    <input type="hidden" name="csrf" value="c1"><input name="username"><input name="password" type="password">
    <input type="submit" name="login" value="Sign In">
  </form></div></div>
  <form id="kc-otp-login-form" action="/realms/x/login-actions/otp" method="post"><input name="otp"></form>
</body></html>`;

const PROFILE: FormProfile = { usernameField: 'username', passwordField: 'password' };

/** The 22 KB page of nested <div>s on which `*:has(*:has(x))` used to take a minute. */
const NESTED_22K = Buffer.from(`<html><body>${'<div>'.repeat(4500)}<form><input name=password></form>`);

/** Runs work, returning what it threw (a TokenError expected) and how long it took. */
function timed(work: () => unknown): { err: TokenError; ms: number } {
  const start = performance.now();
  let caught: unknown;
  try {
    work();
  } catch (err) {
    caught = err;
  }
  const ms = performance.now() - start;
  expect(caught).toBeInstanceOf(TokenError);
  return { err: caught as TokenError, ms };
}

describe('checkFormSelector: the grammar tenants may use', () => {
  it.each([
    ['form#kc-form-login'],
    ['form#kc-otp-login-form'],
    ['#login-form'],
    ['form.login'],
    ['.card > form.login.form'],
    ['form[action]'],
    ['form[method=post]'],
    ['form[method="post"]'],
    ["form[data-step='one two']"],
    ['form[action*=login]'],
    ['form[action^="/realms/"]'],
    ['form[action$=authenticate]'],
    ['body div.card form'],
    ['div#kc-content>div.card>form'],
    ['a b c d e f g h'],
    ['FORM#Login'],
    ['#\\31 23'],
  ])('accepts %s', (selector) => {
    expect(() => {
      checkFormSelector(selector, 'loginFormSelector');
    }).not.toThrow();
  });

  it.each([
    ['*:has(*:has(x))', /universal selector/],
    ['form:has(input)', /pseudo-classes \(:has\)/],
    ['form:has(:has(:has(input)))', /pseudo-classes \(:has\)/],
    ['div:not(.x)', /pseudo-classes \(:not\)/],
    ['form:nth-child(2n+1)', /pseudo-classes \(:nth-child\)/],
    ['form:first', /pseudo-classes/],
    ['input::placeholder', /pseudo-elements/],
    ['*', /universal selector/],
    ['div > *', /universal selector/],
    ['h1 ~ form', /descendant \(space\) and child \(>\) combinators/],
    ['h1 + form', /descendant \(space\) and child \(>\) combinators/],
    ['form, div', /selector lists/],
    ['svg|a', /namespace/],
    ['[xlink|href]', /namespace/],
    ['form[method=post i]', /case flags/],
    ['form[method=post s]', /case flags/],
    ['[class~=login]', /attribute operators/],
    ['[lang|=en]', /attribute operators/],
    ['[method!=get]', /attribute operators/],
    ['> form', /combinator needs a compound/],
    ['form >', /combinator needs a compound/],
    ['a b c d e f g h i', /more than 8 compounds/],
    ['form#[', /not a valid CSS selector/],
    ['form[action=', /not a valid CSS selector/],
    [`form.${'x'.repeat(MAX_SELECTOR_LENGTH)}`, /longer than 256 characters/],
  ])('refuses %s as InvalidSelector', (selector, problem) => {
    const { err } = timed(() => {
      checkFormSelector(selector, 'otpFormSelector');
    });
    expect(err).toMatchObject({ code: 'configuration', reason: 'InvalidSelector' });
    expect(err.message).toMatch(problem);
    expect(err.message).toMatch(/^recovery login: the form profile's otpFormSelector "/);
    // Only a short prefix of the tenant's text is quoted.
    if (selector.length > 24) expect(err.message).not.toContain(selector);
    expect(err.message).toContain(selector.slice(0, 24));
  });

  it('bounds the compounds and the length it documents', () => {
    expect(MAX_SELECTOR_COMPOUNDS).toBe(8);
    expect(MAX_SELECTOR_LENGTH).toBe(256);
    expect(() => {
      checkFormSelector(`form.${'x'.repeat(MAX_SELECTOR_LENGTH - 5)}`, 'loginFormSelector');
    }).not.toThrow();
  });

  it('quotes control characters in the prefix as ?', () => {
    const { err } = timed(() => {
      checkFormSelector('form\u0007:has(x)', 'loginFormSelector');
    });
    expect(err.message).toContain('"form?:has(x)"');
  });
});

describe('analysePage: selectors are checked before cheerio sees them', () => {
  it.each([
    ['loginFormSelector', '*:has(*:has(x))'],
    ['loginFormSelector', '*:has(*:has(*:has(x)))'],
    ['otpFormSelector', 'div:has(div:has(div:has(form)))'],
    ['loginFormSelector', 'div:not(:has(span)) div:not(:has(span)) form'],
  ] as const)('%s %s on a 22 KB page of nested divs: refused in well under a second', (field, selector) => {
    const profile: FormProfile = { ...PROFILE, otpField: 'otp', [field]: selector };
    const { err, ms } = timed(() => analysePage(NESTED_22K, PAGE_URL, undefined, profile));
    expect(err).toMatchObject({ code: 'configuration', reason: 'InvalidSelector' });
    expect(err.message).toContain(field);
    expect(ms).toBeLessThan(250);
  });

  it.each([
    ['form#kc-form-login', 'password'],
    ['form[action*=authenticate]', 'password'],
    ['div.card > form.login', 'password'],
    ['#kc-content', 'password'],
    ['form#no-such-form', 'other'],
  ])('loginFormSelector %s still finds the form (%s)', (loginFormSelector, kind) => {
    const page = analysePage(Buffer.from(KEYCLOAK_PAGE), PAGE_URL, 'utf-8', {
      ...PROFILE,
      loginFormSelector,
    });
    expect(page.kind).toBe(kind);
    if (page.kind === 'password') {
      expect(page.form.action.pathname).toBe('/realms/x/login-actions/authenticate');
      expect(page.hasUsername).toBe(true);
    }
  });

  it('otpFormSelector form#kc-otp-login-form still finds the TOTP form', () => {
    const profile = { ...PROFILE, otpField: 'otp', otpFormSelector: 'form#kc-otp-login-form' };
    const page = analysePage(Buffer.from(KEYCLOAK_PAGE), PAGE_URL, undefined, profile);
    expect(page.kind).toBe('otp');
  });
});

describe('analysePage: the pages it parses are bounded', () => {
  const at = (html: string): Buffer => Buffer.from(html, 'latin1');
  const form = '<form id=f><input name=password></form>';

  it.each([
    {
      name: 'a page over the size cap',
      body: at(`<html><body>${form}${' '.repeat(MAX_LOGIN_PAGE_BYTES)}`),
      message: /is 262\d{3} bytes, over the 262144 bytes/,
    },
    {
      name: '256 KiB of nested divs',
      body: at('<div>'.repeat(MAX_LOGIN_PAGE_BYTES / 5)),
      message: /nests elements more than 256 deep/,
    },
    {
      name: 'the 22 KB page of nested divs',
      body: NESTED_22K,
      message: /nests elements more than 256 deep/,
    },
    {
      name: 'nested tables (parse5 adds tbody and tr)',
      body: at('<table><td>'.repeat(200)),
      message: /nests elements more than 256 deep/,
    },
    {
      name: 'unclosed formatting elements parse5 reopens in every paragraph',
      body: at(Array.from({ length: 12_000 }, (_, i) => `<p><b id=${i}></p>`).join('')),
      message: /nests elements more than 256 deep|more than 20000 elements/,
    },
    {
      name: 'more elements than a login page has',
      body: at(`${'<div>'.repeat(200)}${'<i>x</i>'.repeat(MAX_PAGE_ELEMENTS)}`),
      message: /more than 20000 elements/,
    },
  ])('$name: LoginFormUnexpected, fast', ({ body, message }) => {
    expect(body.byteLength).toBeLessThanOrEqual(MAX_LOGIN_PAGE_BYTES + 100);
    const { err, ms } = timed(() => analysePage(body, PAGE_URL, undefined, PROFILE));
    expect(err).toMatchObject({ code: 'configuration', reason: 'LoginFormUnexpected' });
    expect(err.message).toMatch(message);
    expect(ms).toBeLessThan(1000);
  });

  it('reads a page just inside every bound, with the longest selector it allows, fast', () => {
    const depth = MAX_PAGE_DEPTH - 10;
    const filler = '<i>x</i>'.repeat(MAX_PAGE_ELEMENTS - depth - 100);
    const html = `${'<div>'.repeat(depth)}${filler}<form id=f action=/login><input name=password></form>`;
    expect(html.length).toBeLessThan(MAX_LOGIN_PAGE_BYTES);
    const start = performance.now();
    const page = analysePage(at(html), PAGE_URL, undefined, {
      ...PROFILE,
      loginFormSelector: 'div div div div div div div form[action$=login]',
    });
    expect(performance.now() - start).toBeLessThan(1000);
    expect(page.kind).toBe('password');
  });

  it('the text search for error markers survives the deepest page allowed', () => {
    const html = `${'<div>'.repeat(MAX_PAGE_DEPTH - 5)}Invalid username or password.`;
    const page = analysePage(at(html), PAGE_URL, undefined, PROFILE);
    expect(page).toMatchObject({ kind: 'other', credentialsError: true });
  });
});
