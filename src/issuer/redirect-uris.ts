/**
 * Redirect URIs of the authorization code grant: which ones may be registered (https, or http on a
 * loopback address only, RFC 8252 §7.3 and §8.3) and how a request's is matched (exact string
 * comparison, OAuth 2.1 §4.1.1 and RFC 9700 §4.1.3: no prefix, wildcard or normalisation; only the
 * port of a loopback IP literal may differ, RFC 8252 §7.3).
 *
 * @module
 */
import { quoted } from '../core/errors.ts';

/** Hosts where a plain-http redirect URI is acceptable: the loopback interface of the user's own machine. */
const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);
const MAX_LENGTH = 2000;
/**
 * The characters of an RFC 3986 URI. The WHATWG parser also takes whitespace and control
 * characters (dropping or escaping them) and non-ASCII, while the raw string is what is stored,
 * matched and printed (`tessera clients show`), so a registrant could hide a terminal escape or
 * what reads as a second URI in it.
 */
const URI_CHARS = /^[A-Za-z0-9\-._~:/?#[\]@!$&'()*+,;=%]+$/;
/**
 * A host as a DNS name (ASCII, as the URL parser gives an internationalised one) or an IP literal.
 * WHATWG hosts may also hold `,` `;` `'` `*` `$`, which no DNS name has and which would end up in
 * the consent page's Content-Security-Policy (form-action names the redirect URI's origin).
 */
const HOST = /^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.?|\[[0-9a-f:.]+\])$/;

/** The parameters an authorization response adds to the redirect URI's query. */
const RESPONSE_PARAMETERS = new Set(['code', 'state', 'iss', 'error', 'error_description', 'error_uri']);

/**
 * Why `uri` cannot be registered as a redirect URI, or `undefined` when it can. The message quotes
 * nothing but the URI, and that as {@link quoted} does (a token pasted into the wrong option is
 * described by its length), never one that carries a password.
 */
export function redirectUriProblem(uri: string): string | undefined {
  if (uri.length === 0 || uri.length > MAX_LENGTH) return `a redirect URI must be 1-${MAX_LENGTH} characters`;
  if (!URI_CHARS.test(uri)) return 'a redirect URI must be an RFC 3986 URI (no whitespace, control or non-ASCII characters)';
  const shown = quoted(uri);
  if (!URL.canParse(uri)) return `redirect URI ${shown} is not an absolute URL`;
  const u = new URL(uri);
  // Credentials in a redirect URI would be handed to every browser; never quoted back.
  if (u.username !== '' || u.password !== '') return 'a redirect URI must not carry a user name or password';
  if (!HOST.test(u.hostname)) return `redirect URI ${shown} must name a DNS host or an IP address`;
  // The host the browser goes to must be the one written, after "//": the URL parser also reads a
  // host into "https:///evil.test/cb" or "https:/evil.test/cb" (no authority in RFC 3986, a path
  // to whoever reads the registration) and decodes "evil%2etest" or "127.1"; what is stored, shown
  // and matched would then not say where codes are sent.
  const written = uri.slice(u.protocol.length);
  const authority = written.startsWith('//') ? /^[^/?#]*/.exec(written.slice(2))?.[0] : undefined;
  // The whole host as written (`127.0.0.1.` is not `127.0.0.1`), an explicit port aside.
  if (authority === undefined || authority.toLowerCase().replace(/:\d*$/, '') !== u.hostname) {
    return `redirect URI ${shown} must spell its host as it is reached (//host, no percent-encoding, a canonical IP address)`;
  }
  // Likewise the path: the parser removes dot segments ("/app/../cb", "/app/%2e%2e/cb"), so
  // "https://shared.test/victim/%2e%2e/attacker/cb" would be matched and shown while codes went to
  // "/attacker/cb", another tenant's on a host shared by path. No path at all reads as "/".
  const path = /^[^?#]*/.exec(written.slice(2 + authority.length))?.[0] ?? '';
  if ((path === '' ? '/' : path) !== u.pathname) return `redirect URI ${shown} must not have dot segments ("." or "..") in its path`;
  // RFC 6749 §3.1.2: no fragment.
  if (uri.includes('#')) return `redirect URI ${shown} must not have a fragment`;
  // The answer appends these (RFC 6749 §4.1.2, RFC 9207): a registered `?iss=…&state=…` would make
  // every answer carry two of each, and a client reading the first would read the registration's.
  for (const name of u.searchParams.keys()) {
    if (RESPONSE_PARAMETERS.has(name)) return `redirect URI ${shown} must not set the response parameter "${name}" in its query`;
  }
  if (u.protocol === 'https:') return undefined;
  if (u.protocol === 'http:' && LOOPBACK_HOSTS.has(u.hostname)) return undefined;
  return `redirect URI ${shown} must be https (http only on 127.0.0.1, [::1] or localhost)`;
}

/** Longest origin a client may list (`scheme://host:port`). */
const MAX_ORIGIN_LENGTH = 300;

/**
 * Why `origin` cannot be one of a client's allowed origins (CORS, Hydra's `allowed_cors_origins`),
 * or `undefined` when it can: an origin exactly as a browser sends `Origin` (RFC 6454 §6.2:
 * `scheme://host[:port]`, lower-case host, no default port, no path, no trailing slash), https, or
 * http on a loopback host, as redirect URIs are. No wildcard: each origin is listed. The message
 * quotes nothing but the origin, which is not a secret.
 */
export function allowedOriginProblem(origin: string): string | undefined {
  if (origin.length === 0 || origin.length > MAX_ORIGIN_LENGTH) return `an origin must be 1-${MAX_ORIGIN_LENGTH} characters`;
  if (!URI_CHARS.test(origin)) return 'an origin must be an RFC 3986 URI (no whitespace, control or non-ASCII characters)';
  if (origin.includes('*')) return `origin "${origin}" is a pattern: list each origin exactly, e.g. https://app.example.com`;
  // Not quoted: what does not parse may be anything pasted in the wrong place (a token).
  if (!URL.canParse(origin)) return 'an origin is scheme://host[:port], e.g. https://app.example.com';
  const u = new URL(origin);
  if (u.username !== '' || u.password !== '') return 'an origin must not carry a user name or password';
  if (u.protocol !== 'https:' && !(u.protocol === 'http:' && LOOPBACK_HOSTS.has(u.hostname))) {
    return `origin "${origin}" must be https (http only on 127.0.0.1, [::1] or localhost)`;
  }
  if (!HOST.test(u.hostname)) return `origin "${origin}" must name a DNS host or an IP address`;
  // Compared with the Origin header as a string: an entry spelled otherwise would never match.
  if (u.origin !== origin) return `origin "${origin}" is not an origin as browsers send it; write ${u.origin} (no path, no trailing slash)`;
  return undefined;
}

/**
 * Whether `uri` is a plain-http URI on the loopback interface: the person's own machine, where a
 * redirect cannot carry them off to another site.
 */
export function isLoopbackRedirectUri(uri: string): boolean {
  if (!URL.canParse(uri)) return false;
  const u = new URL(uri);
  return u.protocol === 'http:' && LOOPBACK_HOSTS.has(u.hostname);
}

/** Loopback IP literals, where a native app listens on whatever port it was given (RFC 8252 §7.3). */
const LOOPBACK_IPS = new Set(['127.0.0.1', '[::1]']);

/** A loopback-IP http URI without its port, or `undefined` for any other URI or a non-canonical one. */
function loopbackWithoutPort(uri: string): string | undefined {
  if (!URL.canParse(uri)) return undefined;
  const u = new URL(uri);
  // Only the canonical spelling: "/a/../cb" would otherwise match "/cb" by normalisation.
  if (u.href !== uri || u.protocol !== 'http:' || !LOOPBACK_IPS.has(u.hostname) || u.username !== '' || u.password !== '') return undefined;
  if (u.hash !== '' || uri.includes('#')) return undefined;
  return `http://${u.hostname}${u.pathname}${u.search}`;
}

/**
 * The redirect URI to use for a request naming `requested`, or `undefined` when no registered one
 * matches: an exact match, or for an http URI on a loopback IP literal, a registered one that
 * differs only in its port (RFC 8252 §7.3, OAuth 2.1 §8.4.2: a native app gets an ephemeral port
 * at run time). `localhost` gets no such leeway (RFC 8252 §8.3). The URI returned is the
 * requested one, port included: the code is bound to it and the token request must repeat it.
 */
export function matchRedirectUri(registered: readonly string[], requested: string): string | undefined {
  if (registered.includes(requested)) return requested;
  const bare = loopbackWithoutPort(requested);
  if (bare === undefined) return undefined;
  return registered.some((r) => loopbackWithoutPort(r) === bare) ? requested : undefined;
}
