// The HTML side of the headless login: find the form the profile names on a page (cheerio, with
// parse5 and encoding sniffing, as a browser would parse it), build the entry list a browser would
// submit (hidden inputs, default values, checked boxes, selected options, the submit button), and
// recognise the error markers providers put on a rejected login.
//
// Both inputs come from tenants: the selectors from the connection's spec, the page from whatever
// host its authorization endpoint names. Parsing and matching run synchronously on the event loop
// shared by every connection (and the leader election's Lease renewal), so both are bounded before
// cheerio sees them:
// - Selectors are held to a small grammar (checkFormSelector): tag names, #id, .class, [attr],
//   [attr=value], [attr^=value], [attr$=value], [attr*=value], compounds of those joined by a space
//   (descendant) or '>' (child), at most MAX_SELECTOR_COMPOUNDS compounds and MAX_SELECTOR_LENGTH
//   characters. Everything else is refused: pseudo-classes (`:has(:has(…))` took a minute of CPU on
//   a 22 KB page), `*`, sibling combinators, selector lists, namespaces, case flags. What stays
//   costs at most elements × depth steps per compound (css-select remembers the ancestors a
//   descendant step already failed on), which the page bounds below keep small.
// - Pages are at most MAX_LOGIN_PAGE_BYTES, and the parse is stopped at MAX_PAGE_DEPTH open
//   elements or MAX_PAGE_ELEMENTS created elements: parse5's scope checks walk the stack of open
//   elements, so 256 KiB of nested <div>s took 19 s to parse, and domutils' recursive text() overflows
//   the call stack a few thousand levels down. Login pages nest a few dozen levels deep.
import { loadBuffer, type Cheerio, type CheerioAPI } from 'cheerio';
import { AttributeAction, parse as parseSelector, SelectorType, type Selector } from 'css-what';
import { adapter as domAdapter } from 'parse5-htmlparser2-tree-adapter';
import { TokenError } from './errors.ts';
import { loginError } from './login-errors.ts';

/** Longest selector accepted (the CRD's maxLength too). */
export const MAX_SELECTOR_LENGTH = 256;
/** Most compounds (`form#login`, `div.box`, …) in one selector. */
export const MAX_SELECTOR_COMPOUNDS = 8;
/** Largest login page parsed (the transport's own cap, 1 MiB, is for every response). */
export const MAX_LOGIN_PAGE_BYTES = 256 * 1024;
/** Deepest element nesting parsed (browsers stop nesting at 512; login pages use a few dozen). */
export const MAX_PAGE_DEPTH = 256;
/** Most elements a login page may create while parsed (a large real one has a few thousand). */
export const MAX_PAGE_ELEMENTS = 20_000;

/** Field names and selectors of a provider's login pages (a preset's profile, or the connection's). */
export interface FormProfile {
  /** CSS selector of the username/password form; default: any form with the password input. */
  loginFormSelector?: string;
  usernameField: string;
  passwordField: string;
  /** CSS selector of the TOTP form; default: any form with the otp input. */
  otpFormSelector?: string;
  /** Name of the TOTP input; without it (and without otpFormSelector) no TOTP page is expected. */
  otpField?: string;
}

export interface HtmlForm {
  /** Where the form submits, resolved against the page (and its <base href>). */
  action: URL;
  method: 'GET' | 'POST';
  /** The entry list a browser would submit, in document order, submit button last. */
  fields: [string, string][];
}

export type PageAnalysis =
  /** The TOTP form. */
  | { kind: 'otp'; form: HtmlForm }
  /** A form with the password input (and usually the username input). */
  | { kind: 'password'; form: HtmlForm; hasUsername: boolean }
  /** A username-first step: the username input without a password input. */
  | { kind: 'username'; form: HtmlForm }
  /** None of the profile's forms; which error markers the page shows. */
  | { kind: 'other'; credentialsError: boolean; totpError: boolean };

const CREDENTIALS_MARKERS =
  /invalid (?:username|user ?name|e-?mail|login)(?: or | and |\s*\/\s*)password|invalid (?:user )?credentials|invalid password|(?:incorrect|wrong) (?:username|user ?name|e-?mail|password|credentials)/i;
const TOTP_MARKERS =
  /(?:invalid|incorrect|wrong) (?:authenticator|otp|one[- ]time|verification|security|2fa|two[- ]factor|totp|authentication) code|invalid code/i;
const CREDENTIALS_MARKER_SELECTOR = '#input-error, #input-error-username, #input-error-password';
const TOTP_MARKER_SELECTOR = '#input-error-otp-code, #input-error-otp, #input-error-totp';
const MAX_TEXT = 100_000;
const NON_SUBMITTING_BUTTON = /cancel|back|reset|abort|forgot|register|sign[-_ ]?up/i;

function formsOf($: CheerioAPI) {
  return $('form');
}
type FormSelection = ReturnType<typeof formsOf>;
type FormElement = FormSelection extends Cheerio<infer T> ? T : never;

const SELECTOR_GRAMMAR =
  'use tag names, #id, .class, [attr], [attr=value], [attr^=value], [attr$=value] or [attr*=value], ' +
  `joined by a space or ">", at most ${MAX_SELECTOR_COMPOUNDS} compounds`;

/** At most 24 printable ASCII characters of the selector: enough to recognise it, no more. */
function selectorPrefix(selector: string): string {
  const shown = selector.slice(0, 24).replace(/[^\x20-\x7e]/g, '?');
  return selector.length > 24 ? `${shown}…` : shown;
}

function invalidSelector(field: string, selector: string, problem: string): TokenError {
  return new TokenError({
    code: 'configuration',
    reason: 'InvalidSelector',
    message: `recovery login: the form profile's ${field} "${selectorPrefix(selector)}" is refused: ${problem}; ${SELECTOR_GRAMMAR}`,
  });
}

const ALLOWED_ATTRIBUTE_ACTIONS: ReadonlySet<AttributeAction> = new Set([
  AttributeAction.Exists,
  AttributeAction.Equals,
  AttributeAction.Start,
  AttributeAction.End,
  AttributeAction.Any,
]);

/** Why a parsed selector token is outside the grammar, or undefined when it is inside. */
function refusedToken(token: Selector): string | undefined {
  switch (token.type) {
    case SelectorType.Tag:
      return token.namespace === null ? undefined : 'namespace prefixes (|) are not supported';
    case SelectorType.Attribute: {
      if (token.namespace !== null) return 'namespace prefixes (|) are not supported';
      // `.class` parses as [class~=value] with the 'quirks' case mode; an explicit ~= does not.
      const isClass =
        token.action === AttributeAction.Element && token.name === 'class' && token.ignoreCase === 'quirks';
      if (!isClass && !ALLOWED_ATTRIBUTE_ACTIONS.has(token.action)) {
        return 'attribute operators other than =, ^=, $= and *= are not supported';
      }
      if (token.ignoreCase === true || token.ignoreCase === false) {
        return 'attribute case flags (i, s) are not supported';
      }
      return undefined;
    }
    case SelectorType.Descendant:
    case SelectorType.Child:
      return undefined;
    case SelectorType.Universal:
      return 'the universal selector * is not supported';
    case SelectorType.Pseudo:
      return `pseudo-classes (:${token.name.replace(/[^a-z-]/gi, '').slice(0, 20)}) are not supported`;
    case SelectorType.PseudoElement:
      return 'pseudo-elements are not supported';
    case SelectorType.Adjacent:
    case SelectorType.Sibling:
    case SelectorType.Parent:
    case SelectorType.ColumnCombinator:
      return 'only the descendant (space) and child (>) combinators are supported';
  }
}

/**
 * Checks a tenant's form selector against the supported grammar (see the top of this file) before
 * cheerio ever sees it. css-what is the parser cheerio itself uses, so what is checked is what
 * would run. Throws TokenError 'configuration' / InvalidSelector naming the field; the message
 * quotes no more than a short prefix of the selector.
 */
export function checkFormSelector(selector: string, field: string): void {
  if (selector.length > MAX_SELECTOR_LENGTH) {
    throw invalidSelector(field, selector, `it is longer than ${MAX_SELECTOR_LENGTH} characters`);
  }
  let groups: Selector[][];
  try {
    groups = parseSelector(selector);
  } catch {
    throw invalidSelector(field, selector, 'it is not a valid CSS selector');
  }
  if (groups.length !== 1) throw invalidSelector(field, selector, 'selector lists (,) are not supported');
  const tokens = groups[0] ?? [];
  let compounds = 1;
  let lastWasCombinator = true;
  for (const token of tokens) {
    const refused = refusedToken(token);
    if (refused !== undefined) throw invalidSelector(field, selector, refused);
    const combinator = token.type === SelectorType.Descendant || token.type === SelectorType.Child;
    if (combinator && lastWasCombinator) {
      throw invalidSelector(field, selector, 'a combinator needs a compound on each side');
    }
    if (combinator) compounds++;
    lastWasCombinator = combinator;
  }
  if (lastWasCombinator) throw invalidSelector(field, selector, 'a combinator needs a compound on each side');
  if (compounds > MAX_SELECTOR_COMPOUNDS) {
    throw invalidSelector(field, selector, `it has more than ${MAX_SELECTOR_COMPOUNDS} compounds`);
  }
}

/** Checks the profile's selectors (checkFormSelector); unset or blank selectors are not used. */
export function checkFormProfile(profile: FormProfile): void {
  for (const field of ['loginFormSelector', 'otpFormSelector'] as const) {
    const selector = profile[field];
    if (selector !== undefined && selector.trim() !== '') checkFormSelector(selector, field);
  }
}

/** The forms a selector names (a matched non-form element stands for the forms inside it). */
function selectForms($: CheerioAPI, selector: string | undefined, what: string): FormElement[] {
  if (selector === undefined || selector.trim() === '') return formsOf($).toArray();
  checkFormSelector(selector, what);
  let matched: FormSelection;
  try {
    matched = $.root().find(selector);
  } catch {
    // The grammar check parses with the same parser; this is a backstop, not a path.
    throw invalidSelector(what, selector, 'it is not a valid CSS selector');
  }
  const out: FormElement[] = [];
  for (const element of matched.toArray()) {
    if (element.tagName.toLowerCase() === 'form') out.push(element);
    else {
      const inner = $(element).find('form').toArray();
      const outer = $(element).parents('form').first().toArray();
      out.push(...inner, ...outer);
    }
  }
  return [...new Set(out)];
}

/** Whether the form has a visible control (not type=hidden, not disabled) with this name. */
function hasControl($: CheerioAPI, form: FormElement, name: string): boolean {
  return $(form)
    .find('input, select, textarea')
    .toArray()
    .some((el) => {
      const control = $(el);
      if (control.attr('name') !== name || control.attr('disabled') !== undefined) return false;
      return el.tagName.toLowerCase() !== 'input' || (control.attr('type') ?? '').toLowerCase() !== 'hidden';
    });
}

function resolveURL(value: string | undefined, base: URL): URL | undefined {
  try {
    return new URL(value ?? '', base);
  } catch {
    return undefined;
  }
}

function isSubmitter(tag: string, type: string): boolean {
  return tag === 'button' ? type === '' || type === 'submit' : type === 'submit' || type === 'image';
}

/** The entry list and target of a form, as a browser would submit it with its first submit button. */
function parseForm($: CheerioAPI, form: FormElement, pageURL: URL): HtmlForm {
  const baseHref = $('base[href]').first().attr('href');
  const base = (baseHref !== undefined ? resolveURL(baseHref, pageURL) : undefined) ?? pageURL;
  const fields: [string, string][] = [];
  let submitter:
    { name: string; value: string; image: boolean; action?: string; method?: string } | undefined;

  for (const el of $(form).find('input, select, textarea, button').toArray()) {
    const control = $(el);
    const tag = el.tagName.toLowerCase();
    const type = (control.attr('type') ?? '').trim().toLowerCase();
    const name = control.attr('name');
    if (control.attr('disabled') !== undefined || control.closest('fieldset[disabled]').length > 0) continue;
    if (isSubmitter(tag, type)) {
      if (submitter === undefined && name !== undefined && name !== '' && !NON_SUBMITTING_BUTTON.test(name)) {
        submitter = {
          name,
          value: control.attr('value') ?? (tag === 'button' ? control.text().trim() : ''),
          image: type === 'image',
          ...(control.attr('formaction') !== undefined ? { action: control.attr('formaction') } : {}),
          ...(control.attr('formmethod') !== undefined ? { method: control.attr('formmethod') } : {}),
        };
      }
      continue;
    }
    if (name === undefined || name === '') continue;
    if (tag === 'button') continue;
    if (tag === 'select') {
      const options = control.find('option').toArray();
      const selected = options.filter((o) => $(o).attr('selected') !== undefined);
      const multiple = control.attr('multiple') !== undefined;
      const chosen = multiple
        ? selected
        : selected.length > 0
          ? selected.slice(-1)
          : options.filter((o) => $(o).attr('disabled') === undefined).slice(0, 1);
      for (const option of chosen) fields.push([name, $(option).attr('value') ?? $(option).text().trim()]);
      continue;
    }
    if (tag === 'textarea') {
      fields.push([name, control.text()]);
      continue;
    }
    if (type === 'button' || type === 'reset' || type === 'file') continue;
    if (type === 'checkbox' || type === 'radio') {
      if (control.attr('checked') !== undefined) fields.push([name, control.attr('value') ?? 'on']);
      continue;
    }
    fields.push([name, control.attr('value') ?? '']);
  }
  if (submitter !== undefined) {
    if (submitter.image) fields.push([`${submitter.name}.x`, '0'], [`${submitter.name}.y`, '0']);
    else fields.push([submitter.name, submitter.value]);
  }

  const actionAttr = submitter?.action ?? $(form).attr('action');
  const action =
    actionAttr === undefined || actionAttr.trim() === ''
      ? new URL(pageURL.href)
      : resolveURL(actionAttr.trim(), base);
  if (action === undefined)
    throw loginError('LoginFormUnexpected', 'a login form has an unusable action URL');
  action.hash = '';
  const method = (submitter?.method ?? $(form).attr('method') ?? 'get').trim().toLowerCase();
  return { action, method: method === 'post' ? 'POST' : 'GET', fields };
}

/**
 * cheerio's parse5 tree adapter with a budget: parse5 reports every push and pop of its stack of
 * open elements to the adapter, so a page that nests too deep or creates too many elements stops
 * the parse at the limit, before the quadratic part starts.
 */
function boundedTreeAdapter(): typeof domAdapter {
  let depth = 0;
  let elements = 0;
  return {
    ...domAdapter,
    createElement(...args: Parameters<typeof domAdapter.createElement>) {
      if (++elements > MAX_PAGE_ELEMENTS) {
        throw loginError('LoginFormUnexpected', `a page has more than ${MAX_PAGE_ELEMENTS} elements`);
      }
      return domAdapter.createElement(...args);
    },
    onItemPush() {
      if (++depth > MAX_PAGE_DEPTH) {
        throw loginError('LoginFormUnexpected', `a page nests elements more than ${MAX_PAGE_DEPTH} deep`);
      }
    },
    onItemPop() {
      depth--;
    },
  };
}

/** Parses a login page within the bounds at the top of this file. */
function loadPage(body: Buffer, charset: string | undefined): CheerioAPI {
  if (body.byteLength > MAX_LOGIN_PAGE_BYTES) {
    throw loginError(
      'LoginFormUnexpected',
      `a page is ${body.byteLength} bytes, over the ${MAX_LOGIN_PAGE_BYTES} bytes a login page may have`,
    );
  }
  return loadBuffer(body, {
    treeAdapter: boundedTreeAdapter(),
    ...(charset !== undefined ? { encoding: { transportLayerEncodingLabel: charset } } : {}),
  });
}

/**
 * Classifies a page against the profile. Throws InvalidSelector for a selector outside the
 * grammar, LoginFormUnexpected for a page over the size, depth or element bounds.
 */
export function analysePage(
  body: Buffer,
  pageURL: URL,
  charset: string | undefined,
  profile: FormProfile,
): PageAnalysis {
  // Selectors first: a refused selector is the tenant's to fix whatever the page looks like.
  checkFormProfile(profile);
  const $ = loadPage(body, charset);

  if (profile.otpField !== undefined && profile.otpField !== '') {
    const otpField = profile.otpField;
    const otpForm = selectForms($, profile.otpFormSelector, 'otpFormSelector').find((form) =>
      hasControl($, form, otpField),
    );
    if (otpForm !== undefined) return { kind: 'otp', form: parseForm($, otpForm, pageURL) };
  }

  const loginForms = selectForms($, profile.loginFormSelector, 'loginFormSelector');
  const passwordForm = loginForms.find((form) => hasControl($, form, profile.passwordField));
  if (passwordForm !== undefined) {
    return {
      kind: 'password',
      form: parseForm($, passwordForm, pageURL),
      hasUsername: hasControl($, passwordForm, profile.usernameField),
    };
  }
  const usernameForm = loginForms.find((form) => hasControl($, form, profile.usernameField));
  if (usernameForm !== undefined) return { kind: 'username', form: parseForm($, usernameForm, pageURL) };

  const text = $('body').text().slice(0, MAX_TEXT);
  return {
    kind: 'other',
    credentialsError: $(CREDENTIALS_MARKER_SELECTOR).length > 0 || CREDENTIALS_MARKERS.test(text),
    totpError: $(TOTP_MARKER_SELECTOR).length > 0 || TOTP_MARKERS.test(text),
  };
}

/** The entry list with the given fields set (the first entry of each name replaced, or appended). */
export function fillForm(form: HtmlForm, values: Readonly<Record<string, string>>): [string, string][] {
  const out: [string, string][] = [];
  const done = new Set<string>();
  for (const [name, value] of form.fields) {
    const wanted = values[name];
    if (wanted === undefined || !Object.hasOwn(values, name)) out.push([name, value]);
    else if (!done.has(name)) {
      out.push([name, wanted]);
      done.add(name);
    }
  }
  for (const [name, value] of Object.entries(values)) if (!done.has(name)) out.push([name, value]);
  return out;
}
