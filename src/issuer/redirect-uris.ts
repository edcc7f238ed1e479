/**
 * Redirect URIs of the authorization code grant: which ones may be registered (https, or http on a
 * loopback address only, RFC 8252 §7.3 and §8.3) and how a request's is matched (exact string
 * comparison, OAuth 2.1 §4.1.1 and RFC 9700 §4.1.3: no prefix, wildcard or normalisation).
 *
 * @module
 */

/** Hosts where a plain-http redirect URI is acceptable: the loopback interface of the user's own machine. */
const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);
const MAX_LENGTH = 2000;

/**
 * Why `uri` cannot be registered as a redirect URI, or `undefined` when it can. The message quotes
 * nothing but the URI, which is not a secret.
 */
export function redirectUriProblem(uri: string): string | undefined {
  if (uri.length === 0 || uri.length > MAX_LENGTH) return `a redirect URI must be 1-${MAX_LENGTH} characters`;
  if (!URL.canParse(uri)) return `redirect URI "${uri}" is not an absolute URL`;
  const u = new URL(uri);
  // RFC 6749 §3.1.2: no fragment. Credentials in a redirect URI would be handed to every browser.
  if (uri.includes('#')) return `redirect URI "${uri}" must not have a fragment`;
  if (u.username !== '' || u.password !== '') return `redirect URI "${uri}" must not carry a user name or password`;
  if (u.protocol === 'https:') return undefined;
  if (u.protocol === 'http:' && LOOPBACK_HOSTS.has(u.hostname)) return undefined;
  return `redirect URI "${uri}" must be https (http only on 127.0.0.1, [::1] or localhost)`;
}

/** The registered URI the request names, by exact match; `undefined` when none matches. */
export function matchRedirectUri(registered: readonly string[], requested: string): string | undefined {
  return registered.find((r) => r === requested);
}
