/**
 * Driving the consent page as a browser behind an SSO proxy would: plain HTTP requests carrying
 * the proxy's identity headers and shared secret, the form's hidden fields read from the HTML.
 */
import assert from 'node:assert/strict';

export const PROXY_SECRET = 'proxy-secret-0123456789abcdef0123456789';

/** Headers the SSO proxy (oauth2-proxy) adds for a signed-in person. */
export function personHeaders(user = 'alice', email = `${user}@example.com`, secret = PROXY_SECRET): Record<string, string> {
  return { 'x-forwarded-user': user, 'x-forwarded-email': email, 'x-tessera-proxy-secret': secret };
}

/**
 * An authorization request URL at `endpoint` (`<issuer>/oauth2/authorize`): the tests' client
 * `mcp-app` asking for `api:read` at https://api.test with PKCE S256, with `params` over those
 * defaults (a parameter given as `undefined` is left out).
 */
export function authorizationRequest(endpoint: string, params: Record<string, string | undefined>): string {
  const all: Record<string, string | undefined> = {
    response_type: 'code',
    client_id: 'mcp-app',
    code_challenge_method: 'S256',
    scope: 'api:read',
    resource: 'https://api.test',
    state: 'xyz-state',
    ...params,
  };
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(all)) if (v !== undefined) q.set(k, v);
  return `${endpoint}?${q}`;
}

/** The `authorization` config section the tests use. */
export function authorizationConfig(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { enabled: true, trusted_header: { secret: PROXY_SECRET, allowed_peers: ['127.0.0.1', '::1'], ...extra } };
}

const decode = (s: string) => s.replace(/&#(\d+);/g, (_, n: string) => String.fromCharCode(Number(n))).replace(/&amp;/g, '&');

/** The consent form's hidden fields. */
export function formFields(html: string): { request: string; csrf: string } {
  const field = (name: string) => {
    const m = new RegExp(`<input type="hidden" name="${name}" value="([^"]*)">`).exec(html);
    assert.ok(m, `no ${name} field in the page`);
    return decode(m[1] as string);
  };
  return { request: field('request'), csrf: field('csrf') };
}

/** GET the consent page for `authorizeUrl` as `headers`' person; the page and its form fields. */
export async function openConsent(
  authorizeUrl: string,
  headers: Record<string, string> = personHeaders(),
): Promise<{ res: Response; html: string; fields: { request: string; csrf: string } }> {
  const res = await fetch(authorizeUrl, { headers, redirect: 'manual' });
  const html = await res.text();
  assert.equal(res.status, 200, html);
  return { res, html, fields: formFields(html) };
}

/** POST the consent form; the raw response (a 303 to the client, or an error page). */
export function answerConsent(
  authorizeEndpoint: string,
  form: { request: string; csrf: string; decision: string },
  headers: Record<string, string> = personHeaders(),
): Promise<Response> {
  return fetch(authorizeEndpoint, {
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form).toString(),
    redirect: 'manual',
  });
}

/** Open the page and approve: the redirect URL the browser would follow. */
export async function approve(authorizeUrl: string, headers: Record<string, string> = personHeaders()): Promise<URL> {
  const { fields } = await openConsent(authorizeUrl, headers);
  const res = await answerConsent(authorizeUrl.split('?')[0] as string, { ...fields, decision: 'approve' }, headers);
  assert.equal(res.status, 303, await res.text());
  return new URL(res.headers.get('location') as string);
}
