// The HTML side of the headless login: find the form the profile names on a page (cheerio, with
// parse5 and encoding sniffing, as a browser would parse it), build the entry list a browser would
// submit (hidden inputs, default values, checked boxes, selected options, the submit button), and
// recognise the error markers providers put on a rejected login.
import { loadBuffer, type Cheerio, type CheerioAPI } from 'cheerio';
import { loginError } from './login-errors.ts';

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

function short(text: string): string {
  return text.length > 64 ? `${text.slice(0, 63)}…` : text;
}

/** The forms a selector names (a matched non-form element stands for the forms inside it). */
function selectForms($: CheerioAPI, selector: string | undefined, what: string): FormElement[] {
  if (selector === undefined || selector.trim() === '') return formsOf($).toArray();
  let matched: FormSelection;
  try {
    matched = $.root().find(selector);
  } catch {
    throw loginError('LoginFormUnexpected', `${what} "${short(selector)}" is not a valid CSS selector`);
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

/** Classifies a page against the profile. Throws LoginFormUnexpected for an invalid selector. */
export function analysePage(
  body: Buffer,
  pageURL: URL,
  charset: string | undefined,
  profile: FormProfile,
): PageAnalysis {
  const $ = loadBuffer(
    body,
    charset !== undefined ? { encoding: { transportLayerEncodingLabel: charset } } : {},
  );

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
