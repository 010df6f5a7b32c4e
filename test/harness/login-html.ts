// The HTML of the test login pages, shared by the oidc-provider interaction pages
// (oidc/interaction.ts) and the Keycloak-shaped login server (login-server.ts): a login form
// (username and password, or one of them in a username-first flow), a TOTP form, and message pages,
// plus reading the posted forms.
//
// Error messages carry the ids of Keycloak's login theme (input-error for the credentials,
// input-error-otp-code for the code), which src/oauth/login-form.ts looks for on a page without the
// forms it expects.
import type { IncomingMessage, ServerResponse } from 'node:http';

const MAX_FORM_BYTES = 64 * 1024;

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function htmlPage(title: string, body: string): string {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body>
<h1>${escapeHtml(title)}</h1>
${body}
</body>
</html>
`;
}

const ERROR_IDS = { credentials: 'input-error', code: 'input-error-otp-code' } as const;

function errorMessage(text: string | undefined, about?: keyof typeof ERROR_IDS): string {
  if (text === undefined) return '';
  const id = about === undefined ? '' : ` id="${ERROR_IDS[about]}"`;
  return `<p class="error" role="alert"${id}>${escapeHtml(text)}</p>\n`;
}

function hiddenInputs(hidden: Record<string, string>): string {
  return Object.entries(hidden)
    .map(
      ([name, value]) => `  <input type="hidden" name="${escapeHtml(name)}" value="${escapeHtml(value)}">\n`,
    )
    .join('');
}

/** A submit button; with a name it is part of what the form submits, as `name=value`. */
export interface SubmitButton {
  label: string;
  name?: string;
}

function submitButton(button: SubmitButton): string {
  const named =
    button.name === undefined ? '' : ` name="${escapeHtml(button.name)}" value="${escapeHtml(button.label)}"`;
  return `  <button type="submit"${named}>${escapeHtml(button.label)}</button>\n`;
}

export interface LoginPageView {
  formId: string;
  /** Where the form posts to, as written into the page (relative URLs stay relative). */
  action: string;
  /** Hidden fields, such as the CSRF token. */
  hidden: Record<string, string>;
  /**
   * The username input, pre-filled with `value`, or on the password step of a username-first flow
   * the user it is for, shown as text.
   */
  username: { field: string; value: string } | { known: string };
  /** The password input; none on the username step of a username-first flow. */
  passwordField?: string;
  /** Why the previous post failed (wrong credentials). */
  error?: string;
  /** Further controls inside the form, before the submit button (HTML). */
  controls?: string;
  /** Markup before the form, such as another form (HTML). */
  before?: string;
  submit: SubmitButton;
}

export function loginPage(view: LoginPageView): string {
  const username =
    'known' in view.username
      ? `  <p>${escapeHtml(view.username.known)}</p>\n`
      : `  <label>Username <input type="text" name="${escapeHtml(view.username.field)}" value="${escapeHtml(view.username.value)}" autocomplete="username" autofocus></label>\n`;
  const password =
    view.passwordField === undefined
      ? ''
      : `  <label>Password <input type="password" name="${escapeHtml(view.passwordField)}" autocomplete="current-password"></label>\n`;
  return htmlPage(
    'Sign in',
    `${view.before ?? ''}${errorMessage(view.error, 'credentials')}<form id="${escapeHtml(view.formId)}" method="post" action="${escapeHtml(view.action)}">
${hiddenInputs(view.hidden)}${username}${password}${view.controls ?? ''}${submitButton(view.submit)}</form>`,
  );
}

export interface OtpPageView {
  formId: string;
  /** Where the form posts to, as written into the page. */
  action: string;
  hidden: Record<string, string>;
  otpField: string;
  /** Why the previous code was refused. */
  error?: string;
  submit: SubmitButton;
}

export function otpPage(view: OtpPageView): string {
  return htmlPage(
    'Two-factor authentication',
    `${errorMessage(view.error, 'code')}<form id="${escapeHtml(view.formId)}" method="post" action="${escapeHtml(view.action)}">
${hiddenInputs(view.hidden)}  <label>Authenticator code <input type="text" name="${escapeHtml(view.otpField)}" inputmode="numeric" autocomplete="one-time-code" autofocus></label>
${submitButton(view.submit)}</form>`,
  );
}

/** A page that only says something (an error, mostly). */
export function messagePage(title: string, message?: string): string {
  return htmlPage(title, errorMessage(message));
}

export function sendHtml(
  res: ServerResponse,
  status: number,
  html: string,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': String(Buffer.byteLength(html)),
    ...headers,
  });
  res.end(html);
}

/** Whether a request says its body is a form (application/x-www-form-urlencoded). */
export function isFormPost(req: IncomingMessage): boolean {
  return (req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded');
}

/** The request body parsed as a form, whatever its content type says (see isFormPost). */
export async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) throw new Error('form body too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}
