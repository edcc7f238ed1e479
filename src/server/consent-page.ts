/**
 * The consent page and the authorization endpoint's error page: server-rendered HTML with every
 * interpolated value escaped, no script, one inline style allowed by a per-response nonce, and
 * headers that keep it out of frames (clickjacking an "Approve" button, RFC 6749 §10.13), out of
 * caches and out of Referer headers sent anywhere else than this server.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';

/** Escape text for HTML element content and quoted attribute values. */
export function escapeHtml(value: string): string {
  return value.replace(/[&<>"'`=]/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** What the consent page shows. */
export interface ConsentView {
  readonly clientName: string;
  readonly clientId: string;
  /**
   * The redirect URI, whole (path and query too): where the person's approval and its code will
   * be sent. Shown escaped; `code` breaks it anywhere, so a long one wraps.
   */
  readonly redirectUri: string;
  /**
   * The client registered itself (RFC 7591, a `dcr_` id): its name is its own claim, and may be an
   * operator client's. The page says so (RFC 6749 §10.2; MCP security best practices, confused deputy).
   */
  readonly selfRegistered: boolean;
  readonly scopes: readonly string[];
  readonly resources: readonly string[];
  /**
   * The client may exchange what is approved for tokens to its other audiences (registered with
   * `--allow-retarget` and token exchange): those audiences; `undefined` when it may not.
   */
  readonly retargetTo?: readonly string[] | undefined;
  readonly person: string;
  /** The authorization request's query string, posted back verbatim. */
  readonly request: string;
  readonly csrf: string;
  /** Absolute URL the form posts to (the authorization endpoint). */
  readonly action: string;
  /** The sign-out endpoint, when the person signed in here (a login session) and can sign out. */
  readonly signOut?: string;
}

const STYLE = `body{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#1b1b1b}
h1{font-size:1.3rem}code{background:#f2f2f2;padding:0 .25rem;border-radius:3px;word-break:break-all}
ul{padding-left:1.2rem}.actions{display:flex;gap:1rem;margin-top:1.5rem}button{font:inherit;padding:.5rem 1.2rem;border-radius:4px;border:1px solid #888;background:#fff;cursor:pointer}
button[value=approve]{background:#1a56db;color:#fff;border-color:#1a56db}.muted{color:#555;font-size:.9rem}`;

/**
 * A page whose forms post to this server sends Referer to it alone (`same-origin`), and so its
 * posts carry their real `Origin`: under `no-referrer` a browser sends `Origin: null`, which a
 * browser without Fetch Metadata also sends from a sandboxed frame or a `data:` page elsewhere
 * (the cross-site post check then could not tell them apart). Any other page sends no Referer.
 */
const FORM_REFERRER = 'same-origin';

/**
 * Security headers for a page; `formTargets` are the origins a form may post to (and redirect to
 * after posting): with any, the page is sent with {@link FORM_REFERRER} (its HTML says so too:
 * `layout(…, true)`).
 */
export function pageHeaders(nonce: string, formTargets: readonly string[] = []): Record<string, string> {
  const formAction = formTargets.length === 0 ? "'none'" : formTargets.join(' ');
  return {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    pragma: 'no-cache',
    // No script at all; the one style block by nonce; forms only to this server (and, because
    // browsers apply form-action to the redirect that answers the post, the client's redirect origin).
    'content-security-policy': `default-src 'none'; style-src 'nonce-${nonce}'; form-action ${formAction}; frame-ancestors 'none'; base-uri 'none'`,
    'x-frame-options': 'DENY',
    'x-content-type-options': 'nosniff',
    'referrer-policy': formTargets.length === 0 ? 'no-referrer' : FORM_REFERRER,
    'cross-origin-opener-policy': 'same-origin',
  };
}

export function newNonce(): string {
  return randomBytes(16).toString('base64url');
}

function layout(title: string, nonce: string, body: string, forms = false): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="${forms ? FORM_REFERRER : 'no-referrer'}"><title>${escapeHtml(title)}</title><style nonce="${nonce}">${STYLE}</style></head>
<body>${body}</body></html>
`;
}

/**
 * The consent page: who asks (and whether the operator registered it), for what, where the answer
 * goes; Approve and Deny post the CSRF-bound form.
 */
export function renderConsent(view: ConsentView, nonce: string): string {
  const item = (v: string) => `<li><code>${escapeHtml(v)}</code></li>`;
  const scopes = view.scopes.length === 0 ? '<li class="muted">no scopes</li>' : view.scopes.map(item).join('');
  const named = view.clientName === view.clientId ? '' : ` <span class="muted">(client <code>${escapeHtml(view.clientId)}</code>)</span>`;
  return layout(
    'Authorize access',
    nonce,
    `<h1><strong>${escapeHtml(view.clientName)}</strong>${named} wants to act for you</h1>${
      view.selfRegistered
        ? '\n<p>This client registered itself with this server and has not been reviewed by the operator: its name is what it says about itself.</p>'
        : ''
    }
<p>Signed in as <strong>${escapeHtml(view.person)}</strong>.</p>
<p>It asks for these scopes:</p><ul>${scopes}</ul>
<p>on these resources:</p><ul>${view.resources.map(item).join('')}</ul>${
      view.retargetTo === undefined
        ? ''
        : `\n<p>The operator allows this client to re-target tokens: it may also exchange what you approve for tokens to these other resources:</p><ul>${
            view.retargetTo.length === 0 ? '<li class="muted">none besides those above</li>' : view.retargetTo.map(item).join('')
          }</ul>`
    }
<p>If you approve, you will be sent back to <code>${escapeHtml(view.redirectUri)}</code>.</p>
<form method="post" action="${escapeHtml(view.action)}">
<input type="hidden" name="request" value="${escapeHtml(view.request)}">
<input type="hidden" name="csrf" value="${escapeHtml(view.csrf)}">
<div class="actions"><button type="submit" name="decision" value="approve">Approve</button>
<button type="submit" name="decision" value="deny">Deny</button></div>
</form>${view.signOut === undefined ? '' : signOutForm(view.signOut, 'Not you? Sign out')}`,
    true,
  );
}

function signOutForm(action: string, label: string): string {
  return `<form method="post" action="${escapeHtml(action)}"><p class="muted"><button type="submit">${escapeHtml(label)}</button></p></form>`;
}

/** The sign-out endpoint's GET: a button, so that a link or an image cannot sign anyone out. */
export function renderSignOut(action: string, nonce: string): string {
  return layout(
    'Sign out',
    nonce,
    `<h1>Sign out</h1><p>End your sign-in at this authorization server.</p>${signOutForm(action, 'Sign out')}`,
    true,
  );
}

/** An error shown to the person (never sent to an unverified redirect URI). */
export function renderError(title: string, description: string, nonce: string): string {
  return layout(title, nonce, `<h1>${escapeHtml(title)}</h1><p>${escapeHtml(description)}</p>`);
}
