/**
 * Request-target normalization (RFC 3986 §6.2.2) for a gateway that authorizes by path.
 *
 * The path the gateway matches routes and rules against must be the path the upstream acts on;
 * any form two parsers could read differently is refused rather than guessed at:
 *
 * - dot segments (`.`, `..`), also percent-encoded (`%2e%2e`, `.%2E`): 400;
 * - an encoded slash (`%2F`) or a backslash (raw or `%5C`): 400 (servers disagree on whether they
 *   separate segments);
 * - an encoded control character (`%00`-`%1F`, `%7F`): an upstream that drops, trims or splits at
 *   them would read `/admin%0A/x` as `/admin/x`, which the gateway never matched;
 * - whitespace at either end of a segment (`admin%20`, `%20admin`, `admin%C2%A0`, also behind
 *   trailing dots: `admin%20.`, also double-encoded: `admin%2520`): Windows and IIS drop a trailing
 *   space, and frameworks that trim segments read `admin`. A trailing dot (`admin.`) is kept: it is part of real names
 *   (`Washington,_D.C.`, `example.com.`), see docs/gateway.md;
 * - `;` (Tomcat/Jetty strip `;params` from segments, so `/admin;x/secret` would reach `/admin/secret`),
 *   also encoded, and an encoded `?` or `#` (`/admin%3Fx` is `/admin?x` to an upstream that decodes
 *   once and parses again, as behind nginx's `proxy_pass http://app$uri`: the path `/admin`);
 * - empty segments (`//`), which some routers merge and others do not;
 * - double-encoded traversal (`%252e`) that a second decode would turn into the above, and any
 *   other double-encoded character but a space (`%2561dmin`, which a second decode, or nginx's
 *   `proxy_pass http://app$uri`, turns into `admin`, a path the rules never matched; bytes outside
 *   ASCII too: `stra%25C3%259Fe` is `straße`, and `%25EF%25BD%2581dmin` is `ａdmin`, which NFKC
 *   reads as `admin`);
 * - percent-encoded bytes that are not well-formed UTF-8: overlong forms (`%c0%ae`, `%c0%af`),
 *   which lenient decoders read as `.` and `/`, surrogates, stray or truncated sequences;
 * - malformed percent-encoding, control characters, non-ASCII bytes, fragments.
 *
 * Percent-encoded unreserved characters are decoded (`%61dmin` → `admin`) and other escapes are
 * upper-cased, so one resource has one spelling and an encoding cannot dodge a rule.
 *
 * @module
 */
import { keysWithoutSecrets, type SecretIndex, withoutSecrets, withoutTokens } from '../../core/secret-shape.ts';

/** A normalized request target. */
export interface RequestTarget {
  /** Normalized absolute path, no query. */
  readonly path: string;
  /** The query to forward, `''` or starting with `?`, without any `access_token` or `_method` parameter. */
  readonly query: string;
  /** True when the original query carried `access_token` (stripped from {@link query}). */
  readonly queryToken: boolean;
}

const HEX = '0123456789ABCDEF';

/** Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF). */
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** True when the percent-encoded bytes of a normalized path decode as well-formed UTF-8. */
function wellFormedUtf8(path: string): boolean {
  const bytes: number[] = [];
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c === 0x25) {
      bytes.push(hexValue(path.charCodeAt(i + 1)) * 16 + hexValue(path.charCodeAt(i + 2)));
      i += 2;
    } else bytes.push(c);
  }
  try {
    UTF8.decode(new Uint8Array(bytes));
    return true;
  } catch {
    return false;
  }
}

/**
 * Whitespace at the start or end of a decoded segment: what String.prototype.trim, Python's
 * str.strip, .NET's Trim and Go's TrimSpace remove (`\s` plus NEL and U+180E), controls aside.
 */
const EDGE_SPACE = /^[\s\u0085\u180e]|[\s\u0085\u180e]$/u;

/**
 * Whether the segment `out[start, end)` opens or closes on whitespace once decoded (once or twice:
 * `admin%2520`), also behind trailing dots (Windows and IIS drop trailing dots and spaces alike:
 * `admin%20.` is `admin`). Only a segment that opens or closes (before its trailing dots) on an
 * escape, `%XX` or `%25XX`, can.
 */
function edgeSpace(out: string, start: number, end: number): boolean {
  let last = end;
  while (last > start && out.charCodeAt(last - 1) === 0x2e) last--;
  const closesOnEscape =
    (last - start >= 3 && out.charCodeAt(last - 3) === 0x25) || (last - start >= 5 && out.charCodeAt(last - 5) === 0x25);
  if (out.charCodeAt(start) !== 0x25 && !closesOnEscape) return false;
  const once = decodeURIComponent(out.slice(start, last));
  if (EDGE_SPACE.test(once)) return true;
  // Double-encoded (`admin%2520`): an upstream that decodes twice reads the space. (Other
  // double-encoded characters, `%25C2%25A0`, are refused before this.)
  if (once.indexOf('%') < 0) return false;
  try {
    return EDGE_SPACE.test(decodeURIComponent(once));
  } catch {
    return false; // not an escape on the second pass either: nothing there to trim
  }
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  if (l >= 0x61 && l <= 0x66) return l - 0x61 + 10;
  return -1;
}

function isUnreserved(c: number): boolean {
  return (
    (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e
  );
}

/** Characters that may appear literally in a path (RFC 3986 pchar plus `/`, minus `;`). */
function isPathChar(c: number): boolean {
  return c > 0x20 && c < 0x7f && c !== 0x5c && c !== 0x3b && c !== 0x23 && c !== 0x22 && c !== 0x3c && c !== 0x3e && c !== 0x60;
}

/**
 * Normalize the path of an origin-form request target (`/a/b?q`). Returns `undefined` when the
 * target must be refused (`request_path_invalid`).
 *
 * @example
 * ```ts
 * normalizeTarget('/api/%61dmin?x=1&access_token=t'); // { path: '/api/admin', query: '?x=1', queryToken: true }
 * normalizeTarget('/api/..%2fadmin'); // undefined
 * ```
 */
export function normalizeTarget(url: string): RequestTarget | undefined {
  if (url.length === 0 || url.charCodeAt(0) !== 0x2f) return undefined;
  const q = url.indexOf('?');
  const rawPath = q < 0 ? url : url.slice(0, q);
  const path = normalizePath(rawPath);
  if (path === undefined) return undefined;
  if (q < 0) return { path, query: '', queryToken: false };
  const rawQuery = url.slice(q + 1);
  for (let i = 0; i < rawQuery.length; i++) {
    const c = rawQuery.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f || c === 0x23) return undefined;
  }
  const stripped = stripAccessToken(rawQuery);
  if (stripped === undefined) return undefined;
  return { path, query: stripped.query === '' ? '' : `?${stripped.query}`, queryToken: stripped.found };
}

/** Normalize a raw path; `undefined` when it must be refused. */
export function normalizePath(raw: string): string | undefined {
  // Fast path: nothing to decode or check beyond the character class and dot segments.
  let simple = true;
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === 0x25) simple = false;
    else if (!isPathChar(c)) return undefined;
  }
  let out = raw;
  if (!simple) {
    let buf = '';
    let high = false;
    for (let i = 0; i < raw.length; i++) {
      const c = raw.charCodeAt(i);
      if (c !== 0x25) {
        buf += raw[i];
        continue;
      }
      const h = hexValue(raw.charCodeAt(i + 1));
      const l = hexValue(raw.charCodeAt(i + 2));
      if (h < 0 || l < 0) return undefined;
      const byte = h * 16 + l;
      // `%3F` and `%23` too: an upstream that decodes the path once and parses it again (nginx
      // `proxy_pass http://app$uri`) reads `/admin%3Fx` as `/admin` with a query, `/admin%23x`
      // as `/admin` with a fragment: a path the rules never matched.
      if (byte === 0x2f || byte === 0x5c || byte < 0x20 || byte === 0x7f || byte === 0x3b || byte === 0x3f || byte === 0x23)
        return undefined;
      if (byte >= 0x80) high = true;
      buf += isUnreserved(byte) ? String.fromCharCode(byte) : `%${HEX[h]}${HEX[l]}`;
      i += 2;
    }
    // `%25` followed by an escape of a character refused above would decode into it on a second
    // pass (`%252e%252e`, `%252f`), and one of any other printable ASCII character into a spelling
    // the rules never matched (`%2561dmin` is `admin` to an upstream that decodes twice, or behind
    // nginx's `proxy_pass http://app$uri`, which forwards the path decoded once). So does one of a
    // byte outside ASCII: `stra%25C3%259Fe` is `straße` to such an upstream, which a rule for
    // `/straße` never saw; `%25EF%25BD%2581dmin` and `adm%25C4%25B1n` are `ａdmin` and `admın`,
    // which an upstream that also normalizes Unicode or ignores case reads as `admin` (the
    // `case_insensitive_paths` refusals only see what one decode makes); `%25C0%25AE` is an
    // overlong `.` to a lenient one. Checked on the normalized path, which is what is forwarded:
    // `%25%32%65` decodes its digits here and becomes `%252e` too. Only a double-encoded space is
    // kept, and refused at a segment's ends (`edgeSpace`).
    for (let k = buf.indexOf('%25'); k >= 0; k = buf.indexOf('%25', k + 3)) {
      const h2 = hexValue(buf.charCodeAt(k + 3));
      const l2 = hexValue(buf.charCodeAt(k + 4));
      if (h2 >= 0 && l2 >= 0 && h2 * 16 + l2 !== 0x20) return undefined;
    }
    // Lenient UTF-8 decoders (old IIS, Tomcat, some Java and PHP stacks) read an overlong
    // `%c0%ae` as `.` and `%c0%af` as `/`: the upstream would walk segments the gateway never saw.
    if (high && !wellFormedUtf8(buf)) return undefined;
    out = buf;
  }
  // Segment checks: no `.`/`..`, no empty segment except a trailing slash, no whitespace at either
  // end (raw whitespace is refused above, so only a segment opening or closing on an escape may).
  let start = 1;
  const n = out.length;
  while (start <= n) {
    let end = out.indexOf('/', start);
    if (end < 0) end = n;
    const len = end - start;
    if (len === 0 && end !== n) return undefined;
    if (len === 1 && out.charCodeAt(start) === 0x2e) return undefined;
    if (len === 2 && out.charCodeAt(start) === 0x2e && out.charCodeAt(start + 1) === 0x2e) return undefined;
    if (!simple && len >= 3 && edgeSpace(out, start, end)) return undefined;
    start = end + 1;
  }
  return out;
}

/** What a raw query pair is to the gateway: the caller's token, a method override, or neither. */
function strippedKey(pair: string): 'token' | 'override' | undefined {
  // Servers that also split on ';' (Python before 3.9.2, some Java containers) see two parameters.
  if (pair.indexOf(';') >= 0) {
    let kind: 'token' | 'override' | undefined;
    for (const p of pair.split(';')) kind = strippedKey(p) ?? kind;
    return kind;
  }
  const eq = pair.indexOf('=');
  let key = eq < 0 ? pair : pair.slice(0, eq);
  if (key === 'access_token') return 'token';
  if (key.indexOf('%') >= 0 || key.indexOf('+') >= 0) {
    try {
      key = decodeURIComponent(key.replace(/\+/g, ' '));
    } catch {
      return 'token'; // undecodable key: treat as hostile
    }
  }
  // PHP drops a key's leading spaces (`+_method`, `%20access_token`), then reads `access.token`,
  // `access token`, `access[token` and `access_token[]` as `access_token`.
  if (key.charCodeAt(0) === 0x20) key = key.replace(/^ +/, '');
  const bracket = key.indexOf('[');
  if (bracket > 0 && key.indexOf(']', bracket) > 0) key = key.slice(0, bracket);
  key = key.replace(/[ .[]/g, '_');
  if (key === 'access_token') return 'token';
  // Symfony and Laravel run a POST as the method `_method` names, also from the query: the gateway
  // authorized the request's real method (the override headers are removed for the same reason).
  if (key === '_method') return 'override';
  return undefined;
}

/**
 * Remove every `access_token` parameter (also percent-encoded, `access%5Ftoken`, and as PHP reads
 * keys) and every `_method` override from a raw query, keeping the other parameters byte for byte.
 * `found` tells whether an access token was among them; `undefined` when a key cannot be decoded.
 */
export function stripAccessToken(rawQuery: string): { query: string; found: boolean } | undefined {
  if (rawQuery.indexOf('access') < 0 && rawQuery.indexOf('method') < 0 && rawQuery.indexOf('%') < 0)
    return { query: rawQuery, found: false };
  const parts = rawQuery.split('&');
  const kept: string[] = [];
  let found = false;
  let removed = false;
  for (const p of parts) {
    const kind = strippedKey(p);
    if (kind === undefined) kept.push(p);
    else {
      removed = true;
      if (kind === 'token') found = true;
    }
  }
  return { query: removed ? kept.join('&') : rawQuery, found };
}

/**
 * True when a raw query carries a `_method` override (as {@link stripAccessToken} recognises it:
 * also percent-encoded, as PHP reads keys, or in a `;`-joined pair). A forward-auth check cannot
 * remove it from the request the proxy forwards, so it refuses the check instead.
 */
export function hasMethodOverride(rawQuery: string): boolean {
  if (rawQuery.indexOf('method') < 0 && rawQuery.indexOf('%') < 0) return false;
  for (const pair of rawQuery.split(/[&;]/)) if (strippedKey(pair) === 'override') return true;
  return false;
}

/**
 * Query keys of this many characters or more are recorded as `*`: every secret Tessera deals in is
 * at least this long (a static token has 32 characters or more, a refresh token 47, a JWT far
 * more), so a token a client sends as a bare key (`?tgw_…`) is not recorded; parameter names are
 * shorter.
 */
const AUDIT_KEY_MAX = 32;
/** The longest path recorded: an event stays small however long a path the header limit allows. */
const AUDIT_PATH_MAX = 2048;
/** The most query keys recorded (then `…`): an event stays small, and each key is checked for secrets. */
const AUDIT_KEYS_MAX = 64;

/**
 * The path for the audit trail: the path (its first {@link AUDIT_PATH_MAX} characters, a token in
 * it written `*`, see core/secret-shape.ts) with query values removed and keys kept
 * (`/items?limit=&q=`), so no token or personal data in a query value is recorded; a key as long as
 * a secret is `*`. `secrets` (the credential the request presented, the secrets the operator
 * configured) are written `*` too, in the path and as query keys, each key looked up in `index`
 * (the configured secrets, compiled once per gateway configuration) when given. The first
 * {@link AUDIT_KEYS_MAX} keys are recorded, then `…`.
 */
export function auditPath(path: string, query: string, secrets: readonly string[] = [], index?: SecretIndex): string {
  const clean = withoutTokens(secrets.length === 0 ? path : withoutSecrets(path, secrets));
  const p = clean.length > AUDIT_PATH_MAX ? clean.slice(0, AUDIT_PATH_MAX) : clean;
  if (query === '' || query === '?') return p;
  const keys: string[] = [];
  let more = false;
  for (const q of query.slice(1).split('&')) {
    if (q === '') continue;
    if (keys.length === AUDIT_KEYS_MAX) {
      more = true;
      break;
    }
    const eq = q.indexOf('=');
    keys.push(eq < 0 ? q : q.slice(0, eq));
  }
  const checked = secrets.length === 0 ? keys : keysWithoutSecrets(keys, secrets, index);
  const recorded = checked.map((k, i) => ((keys[i] as string).length >= AUDIT_KEY_MAX ? '*=' : `${withoutTokens(k)}=`));
  if (more) recorded.push('…');
  return recorded.length ? `${p}?${recorded.join('&')}` : p;
}

/**
 * A refused target for the audit trail: the raw path without its query, the userinfo of an
 * absolute-form target (`http://SECRET@host/…`), a token or one of `secrets` (as for
 * {@link auditPath}) in it, truncated, with anything outside printable ASCII escaped.
 */
export function auditRawPath(url: string, secrets: readonly string[] = []): string {
  const q = url.indexOf('?');
  const target = (q < 0 ? url : url.slice(0, q)).replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/]*@/, '$1');
  const p = withoutTokens(secrets.length === 0 ? target : withoutSecrets(target, secrets)).slice(0, 256);
  return p.replace(/[^\x21-\x7e]/g, (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0').toUpperCase()}`);
}
