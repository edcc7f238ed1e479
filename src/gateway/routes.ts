/**
 * Route matching: host (exact or `*.suffix`), path (segment-wise prefix or a pattern) and method.
 * Routes are tried in configuration order; the first match wins; no match is 404 `route_not_found`.
 *
 * @module
 */

import type { ConfigIssue } from '../core/errors.ts';
import { asciiReadingOf, compilePolicy, methodSet } from '../core/policy.ts';
import type { ScopeModel } from '../core/scopes.ts';

export interface RouteMatch {
  readonly host?: string | undefined;
  readonly path_prefix?: string | undefined;
  readonly path?: string | undefined;
  readonly methods?: readonly string[] | undefined;
}

export type Matcher = (host: string, path: string, method: string) => boolean;

/** True when `path` equals `prefix` or continues it with a new segment (a trailing slash on
 * either does not matter). With `caseInsensitive`, letters compare without case. */
export function hasPathPrefix(path: string, prefix: string, caseInsensitive = false): boolean {
  let p = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  if (p === '') return true;
  let q = path;
  if (caseInsensitive) {
    p = p.toLowerCase();
    q = path.toLowerCase();
  }
  return q === p || (q.startsWith(p) && q.charCodeAt(p.length) === 0x2f);
}

/** True when `host` matches `pattern` (exact, or `*.example.com` for any subdomain). */
export function hostMatches(pattern: string, host: string): boolean {
  if (pattern.startsWith('*.')) return host.length > pattern.length - 1 && host.endsWith(pattern.slice(1));
  return host === pattern;
}

/**
 * A prefix of unreserved characters and `/` has one spelling in a normalized path (an escaped
 * unreserved character is decoded there). Any other character (`@`, `:`, `é`) may come literally
 * or percent-encoded (`/%40internal` is `/@internal` to the upstream, which decodes it), so such a
 * prefix is compared with the decoded path, as rules are.
 */
const ONE_SPELLING = /^[A-Za-z0-9._~/-]*$/;

/** `value` percent-decoded, or itself when it cannot be (a literal `%` in a configured prefix). */
function decoded(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/**
 * Where the part of the normalized path that `prefix` matches ends, or -1 when it does not match:
 * the prefix is compared as a route's `path_prefix` is (decoded when it has a character of two
 * spellings, without case with `caseInsensitive`), so `/%40x/y` continues `/@x` after `/%40x` and
 * `strip_prefix` removes what the route matched, however it was spelled. Made once per route.
 */
export function prefixEnd(prefix: string, caseInsensitive = false): (path: string) => number {
  const decodedPrefix = ONE_SPELLING.test(prefix) ? undefined : decoded(prefix);
  return (path) => endOf(path, prefix, decodedPrefix, caseInsensitive);
}

function endOf(path: string, prefix: string, decodedPrefix: string | undefined, caseInsensitive: boolean): number {
  if (decodedPrefix === undefined) {
    if (!hasPathPrefix(path, prefix, caseInsensitive)) return -1;
    return prefix.endsWith('/') ? prefix.length - 1 : prefix.length;
  }
  // The path is normalized: no encoded `/`, well-formed escapes. Decoding keeps its segments, so the
  // match ends where the segment that ends the prefix ends in the path as sent.
  if (!hasPathPrefix(decoded(path), decodedPrefix, caseInsensitive)) return -1;
  const p = decodedPrefix.endsWith('/') ? decodedPrefix.slice(0, -1) : decodedPrefix;
  if (p === '') return 0;
  // Both start with `/`: step over as many segments of the path as the prefix has.
  let end = 0;
  for (let i = p.indexOf('/', 1); i >= 0 && end >= 0; i = p.indexOf('/', i + 1)) end = path.indexOf('/', end + 1);
  const next = end < 0 ? -1 : path.indexOf('/', end + 1);
  return next < 0 ? path.length : next;
}

/** A percent-encoded byte of a character outside ASCII. */
const NON_ASCII_ESCAPE = /%[89A-Fa-f][0-9A-Fa-f]/;

/** What a character read as ASCII may not become: it would change the path’s shape (`／` → `/`,
 * `．` → `.`, `﹪` → `%`, `；` → `;`), which a route’s matcher cannot be asked about (asciiFoldedPath). */
const RESHAPES = /[/\\.%;?#]/g;

/**
 * Whether `reading`, what asciiReadingOf made of `text` (decoded), has a character that RESHAPES
 * the path where `text` has none: ASCII is read as itself and a default-ignorable character as
 * nothing, so only a character outside ASCII read as one of them adds one. Counted, not read again
 * character by character: a path of 8 KB costs one pass over each.
 */
function reshapes(text: string, reading: string): boolean {
  return (reading.match(RESHAPES)?.length ?? 0) > (text.match(RESHAPES)?.length ?? 0);
}

/**
 * `path` (normalized: a character outside ASCII comes percent-encoded) as an upstream that ignores
 * case or normalizes Unicode (NFKC, NFKC_Casefold) may read it: each segment with a character that
 * a case mapping or NFKC makes ASCII (`ı`, `ſ`, `K`, `ß`, `ﬁ`, fullwidth `ａ`, `ĳ`, `𝐚`, `²`), or a
 * default-ignorable one in an otherwise ASCII segment (soft hyphen), written as so read (see
 * asciiReadingOf): `/adm%C4%B1n` and `/%EF%BD%81dmin` are `/admin`, while `toLowerCase` leaves them
 * alone. A route matching paths without case that matches this path refuses the request rather
 * than let it pass to a later route (findRoute). `undefined` when the path has no such character
 * (one without an escape of a byte outside ASCII costs one search for `%` and one scan);
 * `false` when it does not decode (a normalized path does; one that does not is not guessed at) or
 * a segment so read changes the path’s shape (`／`, `．`, `；`: `/x%EF%BC%8Fadmin` is `/x/admin`
 * read so, `/%EF%BC%8E%EF%BC%8E` is `/..`), which no route’s matcher is asked about: every
 * case-insensitive route the request reaches refuses it.
 */
export function asciiFoldedPath(path: string): string | false | undefined {
  if (!path.includes('%') || !NON_ASCII_ESCAPE.test(path)) return undefined;
  const segments = path.split('/');
  let folded = false;
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i] as string;
    if (!NON_ASCII_ESCAPE.test(segment)) continue;
    let text: string;
    try {
      text = decodeURIComponent(segment);
    } catch {
      return false;
    }
    const reading = asciiReadingOf(text);
    if (reading === undefined) continue;
    if (reading === '' || reshapes(text, reading)) return false;
    segments[i] = encodeURIComponent(reading);
    folded = true;
  }
  return folded ? segments.join('/') : undefined;
}

/** A route's match block without its path: whether a request to `host` with `method` is one it may take. */
export function compileReach(match: RouteMatch): (host: string, method: string) => boolean {
  const { host } = match;
  // HEAD goes where GET does (see methodSet): not past a GET-only route to a laxer one after it.
  const methods = match.methods ? methodSet(match.methods) : undefined;
  return (h, method) => (methods === undefined || methods.has(method)) && (host === undefined || hostMatches(host, h));
}

/** Compile a route's match block. Pattern errors are reported under `at`. */
export function compileMatcher(match: RouteMatch, scopes: ScopeModel, at: string, issues: ConfigIssue[], caseInsensitive = false): Matcher {
  const { path_prefix: prefix } = match;
  const reach = compileReach(match);
  let pattern: ((path: string) => boolean) | undefined;
  if (match.path !== undefined) {
    const compiled = compilePolicy([{ path: match.path }], scopes, `${at}.path`, { caseInsensitivePaths: caseInsensitive });
    for (const i of compiled.issues) issues.push({ path: `${at}.path`, message: i.message });
    const policy = compiled.policy;
    pattern = (path) => policy.match({ method: 'GET', path, tool: null }) !== undefined;
  }
  const end = prefix === undefined ? undefined : prefixEnd(prefix, caseInsensitive);
  return (h, path, method) => {
    if (!reach(h, method)) return false;
    if (end !== undefined && end(path) < 0) return false;
    if (pattern !== undefined && !pattern(path)) return false;
    return true;
  };
}

/** The host a request was sent to: lower case, without port or a trailing dot (`api.example.com.`
 * is the same name, and servers such as nginx read it so), `[::1]` keeping its brackets. */
export function hostOf(value: string | undefined): string {
  if (value === undefined || value === '') return '';
  let v = value;
  const comma = v.indexOf(',');
  if (comma >= 0) v = v.slice(0, comma);
  v = v.trim().toLowerCase();
  if (v.startsWith('[')) {
    const end = v.indexOf(']');
    return end < 0 ? v : v.slice(0, end + 1);
  }
  const colon = v.indexOf(':');
  if (colon >= 0) v = v.slice(0, colon);
  return v.charCodeAt(v.length - 1) === 0x2e ? v.slice(0, -1) : v;
}
