/**
 * Policy: ordered rules that match a request (method, path, an MCP tool name or JSON-RPC method) and say
 * which scopes and claim conditions it requires. The first matching rule decides; a request no
 * rule matches is denied.
 *
 * Matchers and conditions are separate lists on each compiled rule, so new kinds (a tool name, a
 * header) are new matcher functions, not a rewrite.
 *
 * @module
 */
import { type ConfigIssue, type ErrorCode, quoted } from './errors.ts';
import type { ScopeModel } from './scopes.ts';

/** Required scopes: a list means all of them; the object form combines all-of and any-of. */
export type ScopeRequirement = readonly string[] | { readonly all?: readonly string[]; readonly any?: readonly string[] };

/** A claim condition: the claim must equal a literal, one of several literals, or a path
 * parameter written as `:name` (e.g. `tenant: ":tenant"`). */
export type ClaimCondition = string | number | boolean | readonly (string | number)[];

/** One rule as written in configuration. */
export interface RuleSpec {
  /** Stable id for audit events; defaults to `rules[i]`. */
  readonly id?: string;
  /** HTTP methods (upper case); omitted means any method. */
  readonly methods?: readonly string[];
  /** Path pattern: literal segments, `:param` (one segment), `*` (one segment), and a final `**`
   * (any rest, including nothing). Omitted means any path. */
  readonly path?: string;
  /** MCP tool name or glob (`files.*`) for `tools/call` requests; omitted means any. */
  readonly tool?: string;
  /** JSON-RPC method name or glob (`resources/*`) of an MCP request (`resources/read`,
   * `prompts/get`, `tools/call`, …); omitted means any. */
  readonly rpc?: string;
  /** Scopes the principal must hold. */
  readonly scopes?: ScopeRequirement;
  /** Claim conditions, all of which must hold. */
  readonly claims?: Readonly<Record<string, ClaimCondition>>;
}

/** What a rule is matched against. */
export interface PolicyInput {
  readonly method: string;
  /** The request path as sent, without query (percent-encoded; see {@link pathSegments}). */
  readonly path: string;
  /**
   * For MCP `tools/call`: the tool name; `null` when the request is known not to be a tool call;
   * omitted (`undefined`) when the evaluator cannot tell (it does not read MCP bodies). A rule
   * with a `tool` condition then cannot be evaluated: when it is the first rule matching on
   * method and path it decides, and it refuses (`policy_condition_failed`), so a later broader
   * rule can never grant what the tool rule was written to restrict.
   */
  readonly tool?: string | null;
  /**
   * For an MCP request: the JSON-RPC `method`; `null` when the request is known to carry none (a
   * GET event stream, a DELETE, a JSON-RPC response from the client); omitted (`undefined`) when
   * the evaluator cannot tell. A rule with an `rpc` condition then cannot be evaluated, and refuses
   * as a `tool` rule does.
   */
  readonly rpc?: string | null;
}

/** The part of a principal a policy reads. */
export interface PolicySubject {
  readonly effectiveScopes: { has(scope: string): boolean };
  readonly claims: Readonly<Record<string, unknown>>;
}

/**
 * The methods a rule or route listing `methods` takes: those, and HEAD when GET is among them. HEAD
 * is GET without the body, and frameworks (Express, Fastify, Hono, Go's and Python's routers) run
 * the GET handler for it: a HEAD skipping a GET-only rule would reach that handler (its side
 * effects, its headers) under whatever later rule it fell to. A list naming HEAD alone keeps it.
 */
export function methodSet(methods: readonly string[]): ReadonlySet<string> {
  const set = new Set(methods);
  if (set.has('GET')) set.add('HEAD');
  return set;
}

/** A compiled rule. */
export interface CompiledRule {
  readonly id: string;
  readonly all: readonly string[];
  readonly any: readonly string[];
  /** Space-delimited scopes for the `scope=` challenge attribute. */
  readonly scopeHint: string;
}

/** What a {@link Policy} decides for a request: the rule that allows it, or the reason code it is refused with. */
export type PolicyDecision =
  | { readonly allowed: true; readonly rule: CompiledRule; readonly params: Readonly<Record<string, string>> }
  | {
      readonly allowed: false;
      readonly code: Extract<ErrorCode, 'policy_no_match' | 'scope_insufficient' | 'policy_condition_failed' | 'request_path_invalid'>;
      readonly rule: CompiledRule | undefined;
      /** The claim whose condition failed. */
      readonly claim?: string;
      /** A condition of the rule the input cannot answer (fail closed). */
      readonly unevaluable?: 'tool' | 'rpc';
    };

/** A compiled, immutable rule set. */
export interface Policy {
  readonly rules: readonly CompiledRule[];
  /** Whether literal path segments are compared ignoring case ({@link PolicyOptions}). */
  readonly caseInsensitivePaths: boolean;
  /** The first rule matching the input, with its path parameters, without checking scopes. */
  match(input: PolicyInput): { rule: CompiledRule; params: Record<string, string> } | undefined;
  /** Match and authorize. */
  evaluate(input: PolicyInput, subject: PolicySubject): PolicyDecision;
}

/**
 * The segments rules are matched against. Routers (Fastify, Hono) percent-decode a path before
 * routing, so the policy decodes too: `/%61dmin` is `/admin` to both. Forms that the framework,
 * a proxy or an upstream may resolve differently are refused rather than guessed: dot segments
 * (`.`, `..`, raw or encoded), empty interior segments (`//`), an encoded `/`, backslashes, NUL
 * and invalid escapes.
 *
 * A single trailing slash is not a segment: `/api/items/` is `/api/items` to every rule, since
 * routers and upstreams commonly treat them as the same resource (a rule written for one must not
 * be bypassed with the other).
 *
 * @returns the decoded segments (`/` is `['']`), or `undefined` for a path to refuse.
 */
export function pathSegments(path: string): string[] | undefined {
  if (path.charCodeAt(0) !== 0x2f) return undefined;
  if (path === '/') return [''];
  const segments = path.slice(1).split('/');
  const last = segments.length - 1;
  for (let i = 0; i <= last; i++) {
    let s = segments[i] as string;
    if (s.includes('%')) {
      try {
        s = decodeURIComponent(s);
      } catch {
        return undefined;
      }
      segments[i] = s;
    }
    if (s === '.' || s === '..' || (s === '' && i < last) || s.includes('/') || s.includes('\\') || s.includes('\0')) return undefined;
  }
  if (segments[last] === '') segments.pop();
  return segments;
}

const ASCII_LETTER = /[A-Za-z]/;

/**
 * The ASCII letters a case mapping (its own or that of its other case) makes of `c`, one character
 * outside ASCII, lower-cased, what else it maps to left out: `ı` uppercases to `I`, `ſ` to `S`, `ﬁ`
 * to `FI`, `ß` to `SS`, `K` (Kelvin) lowercases to `k`, `İ` to `i` (with a combining dot, which
 * Java and .NET drop), so `ı` → `i`, `ß` → `ss`, `ﬁ` → `fi`, `İ` → `i`: the most an upstream
 * ignoring case may read it as. `undefined` when no case mapping makes it one.
 */
export function asciiFold(c: string): string | undefined {
  const lower = c.toLowerCase();
  const upper = c.toUpperCase();
  // Without case (CJK, Arabic, most symbols) no mapping makes it anything: two calls, no more. A
  // path of such characters (or of one NFKC spells with 18 of them, U+FDFA) costs no more than
  // another (see foldsIntoAscii).
  if (lower === c && upper === c) return undefined;
  for (const s of [lower, upper, upper.toLowerCase(), lower.toUpperCase()]) {
    if (ASCII_LETTER.test(s)) return s.toLowerCase().replace(/[^a-z]/g, '');
  }
  return undefined;
}

/** Removed by NFKC_Casefold (ICU's nfkc_cf, IDNA mapping): soft hyphen, zero-width space and joiners, variation selectors. */
const IGNORABLE = /^\p{Default_Ignorable_Code_Point}$/u;
const HAS_ASCII = /[\0-\x7f]/;

/**
 * What `c`, one character outside ASCII, may be read as by an upstream that ignores case or
 * normalizes Unicode (NFKC, NFKC_Casefold: Python’s `unicodedata.normalize`, Java’s `Normalizer`,
 * IDNA-like handling, some WAFs), when that has an ASCII character: its case mapping (asciiFold),
 * else its NFKC form, ASCII lower-cased and each other character case-mapped in turn (`ａ` → `a`,
 * `／` → `/`, `ĳ` → `ij`, `𝐚` → `a`, `²` → `2`, `½` → `1⁄2`, `𝚤` → `ı` → `i`). `''` for a
 * default-ignorable character (NFKC_Casefold removes it). `undefined` otherwise.
 */
export function asciiReading(c: string): string | undefined {
  const fold = asciiFold(c);
  if (fold !== undefined) return fold;
  const nfkc = c.normalize('NFKC');
  if (nfkc !== c) {
    // Without case as a whole (Arabic, katakana, digits, spaces: U+FDFA is 18 of them), read as it
    // is: one pair of case mappings, not one per character of it.
    if (nfkc.toLowerCase() === nfkc && nfkc.toUpperCase() === nfkc) {
      if (HAS_ASCII.test(nfkc)) return nfkc;
      return IGNORABLE.test(c) ? '' : undefined;
    }
    let s = '';
    let ascii = false;
    for (const d of nfkc) {
      const f = d.charCodeAt(0) < 0x80 ? d.toLowerCase() : asciiFold(d);
      if (f === undefined) s += d;
      else {
        s += f;
        ascii = true;
      }
    }
    if (ascii) return s;
  }
  return IGNORABLE.test(c) ? '' : undefined;
}

/**
 * `segment` (decoded) as an upstream that ignores case or normalizes Unicode may read it (each
 * character with an asciiReading replaced by it: `ａdmin` → `admin`, `ad\u00ADmin` → `admin`), or
 * `undefined` when it reads no other ASCII than it shows: no character has a reading, or only
 * default-ignorable ones do beside another character outside ASCII (`👨‍👩‍👧`, whose zero-width
 * joiners dropped still leave no ASCII literal). ASCII text costs one pass over its char codes;
 * `normalize` runs only for a character outside ASCII.
 */
export function asciiReadingOf(segment: string): string | undefined {
  let i = 0;
  while (i < segment.length && segment.charCodeAt(i) < 0x80) i++;
  if (i === segment.length) return undefined;
  let out = segment.slice(0, i);
  let reads = false;
  let ignorable = false;
  let other = false;
  for (const c of segment.slice(i)) {
    const r = c.charCodeAt(0) < 0x80 ? c : asciiReading(c);
    if (r === undefined) {
      out += c;
      other = true;
    } else if (r === '') ignorable = true;
    else {
      out += r;
      if (r !== c) reads = true;
    }
  }
  return reads || (ignorable && !other) ? out : undefined;
}

/**
 * Whether `text` (decoded) holds a character outside ASCII that an upstream ignoring case or
 * normalizing Unicode may read as ASCII (see asciiReadingOf): .NET OrdinalIgnoreCase, Java
 * equalsIgnoreCase and Python casefold read `/admın` as `/admin`, NFKC reads `/ａdmin` (fullwidth)
 * and `/𝐚dmin` (mathematical bold) so, which JavaScript's `toLowerCase` does not. Matching without
 * case, such a path is refused rather than matched (it would pass a rule for `/admin` by). ASCII
 * text costs one pass over its char codes.
 *
 * @example
 * ```ts
 * foldsIntoAscii('/adm\u0131n'); // true (dotless i)
 * foldsIntoAscii('/\uff41dmin'); // true (fullwidth a)
 * foldsIntoAscii('/café'); // false
 * ```
 */
export function foldsIntoAscii(text: string): boolean {
  // asciiReadingOf(text) !== undefined, without building the reading: the first character read as
  // ASCII decides.
  let ignorable = false;
  let other = false;
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) < 0x80) continue;
    const cp = text.codePointAt(i) as number;
    if (cp > 0xffff) i++;
    const r = asciiReading(String.fromCodePoint(cp));
    if (r === undefined) other = true;
    else if (r === '') ignorable = true;
    else return true;
  }
  return ignorable && !other;
}

const NON_ASCII = /[\u{80}-\u{10ffff}]/u;

type PathMatcher = (segments: readonly string[], params: Record<string, string>) => boolean;

/** A compiled path pattern: its matcher, and its segments (literals lower-cased when matched without
 * case) for telling whether one pattern matches every path another does ({@link covers}). */
interface CompiledPath {
  readonly match: PathMatcher;
  /** The segments before a final `**`, or all of them. */
  readonly fixed: readonly string[];
  /** Whether the pattern ends in `**`. */
  readonly rest: boolean;
}

/** `:param` and `*`: any one non-empty segment. */
function anySegment(p: string): boolean {
  return p === '*' || p.charCodeAt(0) === 0x3a;
}

/**
 * Whether pattern `a` matches every path pattern `b` matches (`undefined`: any path). Exact for
 * the pattern language: literals, one-segment wildcards that never match an empty segment, a final
 * `**` matching any rest including none.
 */
function covers(a: CompiledPath | undefined, b: CompiledPath | undefined): boolean {
  if (a === undefined) return true;
  if (b === undefined) return a.rest && a.fixed.length === 0;
  if (a.rest ? b.fixed.length < a.fixed.length : b.rest || b.fixed.length !== a.fixed.length) return false;
  for (let i = 0; i < a.fixed.length; i++) {
    const p = a.fixed[i] as string;
    const q = b.fixed[i] as string;
    if (anySegment(p) ? q === '' : anySegment(q) || p !== q) return false;
  }
  return true;
}

const SEGMENT_PARAM = /^:[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Parameter names that are members of every JavaScript object (`__proto__`, `constructor`,
 * `hasOwnProperty`, …) and `prototype`: refused, so that no reader of the parameters, here or
 * downstream, can take an inherited member for a captured segment (a `:__proto__` written into a
 * plain object is never stored at all). The parameters live in an object without a prototype
 * besides.
 */
const INHERITED_NAMES: ReadonlySet<string> = new Set([...Object.getOwnPropertyNames(Object.prototype), 'prototype']);

function compilePath(pattern: string, at: string, issues: ConfigIssue[], caseInsensitive: boolean): CompiledPath | undefined {
  if (!pattern.startsWith('/')) {
    issues.push({ path: at, message: `a path pattern starts with "/" (got ${quoted(pattern)})` });
    return undefined;
  }
  const parts = pattern === '/' ? [''] : pattern.slice(1).split('/');
  // A trailing slash is not a segment (see pathSegments): `/api/items/` is `/api/items`.
  if (parts.length > 1 && parts[parts.length - 1] === '') parts.pop();
  for (const [i, p] of parts.entries()) {
    if (p === '**' && i !== parts.length - 1) {
      issues.push({ path: at, message: '"**" is allowed only as the last segment, e.g. /api/**' });
      return undefined;
    }
    if (p.startsWith(':') && !SEGMENT_PARAM.test(p)) {
      issues.push({ path: at, message: `${quoted(p)} is not a valid parameter; write :name with letters, digits and _` });
      return undefined;
    }
    if (p.startsWith(':') && INHERITED_NAMES.has(p.slice(1))) {
      const instead = `:${p.slice(1).replace(/^_+|_+$/g, '')}_id`;
      issues.push({
        path: at,
        message: `${quoted(p)} names a member every JavaScript object has; give the parameter a name of its own, such as ${instead}`,
      });
      return undefined;
    }
    if (p === '.' || p === '..') {
      issues.push({ path: at, message: 'a path pattern cannot contain "." or ".." segments' });
      return undefined;
    }
    // Matched without case, a literal is folded as JavaScript folds it, which an upstream that
    // ignores case need not share outside ASCII (`ß` is `ss` to Python's casefold, not to
    // toLowerCase; `Σ` has two lower cases): a request spelled otherwise would pass the rule by.
    if (caseInsensitive && !anySegment(p) && p !== '**' && NON_ASCII.test(p)) {
      issues.push({
        path: at,
        message: `${quoted(p)} has characters outside ASCII, whose case JavaScript folds otherwise than some upstreams do (${quoted('ß')} is ${quoted('ss')} to Python’s casefold, ${quoted('Σ')} has two lower cases), so a path spelled another way would pass this rule by; write that segment as * or a :name parameter, or match these paths with case_insensitive_paths off`,
      });
      return undefined;
    }
    // A repeated name keeps the last segment: `/orgs/:tenant/teams/:tenant` would compare a
    // `tenant: ":tenant"` condition with the team segment while the upstream acts on the org.
    if (p.startsWith(':') && parts.indexOf(p) !== i) {
      issues.push({ path: at, message: `${quoted(p)} appears twice in ${quoted(pattern)}; give each parameter its own name` });
      return undefined;
    }
  }
  if (caseInsensitive) for (const [i, p] of parts.entries()) if (!p.startsWith(':')) parts[i] = p.toLowerCase();
  const rest = parts[parts.length - 1] === '**';
  const fixed = rest ? parts.slice(0, -1) : parts;
  const match: PathMatcher = (segments, params) => {
    if (rest ? segments.length < fixed.length : segments.length !== fixed.length) return false;
    for (let i = 0; i < fixed.length; i++) {
      const p = fixed[i] as string;
      const s = segments[i] as string;
      if (p.charCodeAt(0) === 0x3a) {
        if (s === '') return false;
        params[p.slice(1)] = s;
      } else if (p === '*') {
        if (s === '') return false;
      } else if (p !== (caseInsensitive ? s.toLowerCase() : s)) return false;
    }
    return true;
  };
  return { match, fixed, rest };
}

/**
 * A `*` glob as a matcher: the literal parts between stars, found in order, each at its first
 * occurrence (exact for a star-only glob). Not a regular expression: `.` skips line terminators, so
 * `files.delete\n` would escape a `files.*` rule, and several `.*` backtrack polynomially.
 */
function globMatcher(glob: string): (name: string) => boolean {
  const parts = glob.split('*');
  if (parts.length === 1) return (name) => name === glob;
  const first = parts[0] as string;
  const last = parts[parts.length - 1] as string;
  const middle = parts.slice(1, -1);
  return (name) => {
    if (name.length < first.length + last.length || !name.startsWith(first) || !name.endsWith(last)) return false;
    const end = name.length - last.length;
    let at = first.length;
    for (const part of middle) {
      const found = name.indexOf(part, at);
      if (found < 0 || found + part.length > end) return false;
      at = found + part.length;
    }
    return true;
  };
}

/**
 * Whether glob `a` matches every name glob `b` matches (both as written, `*` any run of characters,
 * the empty one included): `a` matches `b`'s own text, its stars read as characters that only a
 * star of `a` takes. Then any name `b` matches is matched by `a` too, each of `b`'s stars filled
 * inside the run a star of `a` takes (`*` covers any glob, `files.*` covers `files.read` and
 * `files.x.*`). Sound but not complete: a pair it cannot show is reported as not covered, so a
 * valid order is never refused.
 */
function globCovers(a: string, b: string): boolean {
  return globMatcher(a)(b);
}

/** The JSON-RPC method of every tool call: a request naming a tool is always this one, and a
 * `tools/call` that names no valid tool is refused before the rules (`mcp_tool_name_invalid`). */
const TOOLS_CALL = 'tools/call';

/**
 * Whether a rule's `tool` and `rpc` conditions (`undefined`: none) hold for every request another
 * rule's conditions let through, so that, matching on method and path as well, it decides all of
 * them first. A request whose tool or method the evaluator cannot tell is decided by the first rule
 * with such a condition, which comes first here, so only requests that name them are considered.
 */
function conditionsCover(
  a: { readonly tool?: string | undefined; readonly rpc?: string | undefined },
  b: { readonly tool?: string | undefined; readonly rpc?: string | undefined },
): boolean {
  // `a.tool` holds only for tool calls: `b` must take only tool calls, of names `a.tool` takes.
  // Without `tool:`, `b` takes only tool calls when it takes only the method tools/call, and any
  // name then: `a.tool` must take every name.
  const tool = a.tool === undefined || (b.tool !== undefined ? globCovers(a.tool, b.tool) : b.rpc === TOOLS_CALL && /^\*+$/.test(a.tool));
  // `a.rpc` holds only for requests naming a method: `b` must take only methods `a.rpc` takes,
  // which, with `tool:`, are tools/call alone.
  const rpc =
    a.rpc === undefined || (b.rpc !== undefined && globCovers(a.rpc, b.rpc)) || (b.tool !== undefined && globMatcher(a.rpc)(TOOLS_CALL));
  return tool && rpc;
}

export interface PolicyOptions {
  /** Compare literal path segments case-insensitively (`/Admin` is `/admin`); parameters keep
   * the case sent. Literals must then be ASCII, and a path with a character outside ASCII that a
   * case mapping or NFKC makes ASCII (`ı`, `ſ`, `K`, `ﬁ`, fullwidth `ａ` and `／`, `ĳ`, `𝐚`, `²`;
   * a soft hyphen or zero-width space in an otherwise ASCII segment: {@link foldsIntoAscii}) is
   * refused (`request_path_invalid`). Default false: paths are case-sensitive. */
  readonly caseInsensitivePaths?: boolean;
  /** Positions of rules that failed their configuration checks and stand in as `{}` (their own
   * errors are reported): left out of the check for rules never reached. */
  readonly unchecked?: ReadonlySet<number>;
}

/**
 * Compile rules against a scope model.
 *
 * @returns the policy, or the issues found (unknown scopes, bad patterns, bad methods), each with
 *   its path under `at`.
 */
export function compilePolicy(
  specs: readonly RuleSpec[],
  scopes: ScopeModel,
  at = 'rules',
  options: PolicyOptions = {},
): { policy: Policy; issues: ConfigIssue[] } {
  const caseInsensitive = options.caseInsensitivePaths === true;
  const issues: ConfigIssue[] = [];
  interface Entry {
    rule: CompiledRule;
    methods: ReadonlySet<string> | undefined;
    path: CompiledPath | undefined;
    tool: ((name: string) => boolean) | undefined;
    rpc: ((method: string) => boolean) | undefined;
    claims: readonly [string, ClaimCondition][];
  }
  const entries: Entry[] = [];
  const ids = new Map<string, string>();
  for (const [i, spec] of specs.entries()) {
    const here = `${at}[${i}]`;
    // The id names the rule in audit events and keys the exchanged upstream tokens cached for it:
    // two rules sharing one could share a token minted for the other's scopes.
    const id = spec.id ?? here;
    const taken = ids.get(id);
    if (taken !== undefined)
      issues.push({ path: `${here}.id`, message: `rule id ${quoted(id)} is already used by ${taken}; give each rule its own id` });
    else ids.set(id, here);
    const req = spec.scopes;
    const all = req === undefined ? [] : Array.isArray(req) ? [...req] : [...((req as { all?: string[] }).all ?? [])];
    const any = req === undefined || Array.isArray(req) ? [] : [...((req as { any?: string[] }).any ?? [])];
    const scopePath = Array.isArray(req) ? `${here}.scopes` : `${here}.scopes.all`;
    issues.push(...scopes.checkReferences(all, scopePath), ...scopes.checkReferences(any, `${here}.scopes.any`));
    for (const [j, m] of (spec.methods ?? []).entries()) {
      if (!/^[A-Z]+$/.test(m)) issues.push({ path: `${here}.methods[${j}]`, message: `${quoted(m)} is not an upper-case HTTP method` });
    }
    const claims = Object.entries(spec.claims ?? {});
    for (const [name, cond] of claims) {
      if (typeof cond !== 'string' || !cond.startsWith(':')) continue;
      // Without a path there is no parameter: the condition could never hold.
      if (spec.path === undefined)
        issues.push({ path: `${here}.claims.${name}`, message: `${quoted(cond)} names a path parameter, but this rule has no path` });
      else if (!spec.path.split('/').includes(cond))
        issues.push({ path: `${here}.claims.${name}`, message: `${quoted(cond)} names no parameter of path ${quoted(spec.path)}` });
    }
    entries.push({
      rule: Object.freeze({
        id,
        all: Object.freeze(all),
        any: Object.freeze(any),
        scopeHint: [...all, ...any].join(' '),
      }),
      methods: spec.methods ? methodSet(spec.methods) : undefined,
      path: spec.path === undefined ? undefined : compilePath(spec.path, `${here}.path`, issues, caseInsensitive),
      tool: spec.tool === undefined ? undefined : globMatcher(spec.tool),
      rpc: spec.rpc === undefined ? undefined : globMatcher(spec.rpc),
      claims,
    });
  }
  // First match decides, so a rule after one that matches every request it matches (on method,
  // path, and tool and rpc conditions) is never reached: a narrower rule written after a broader
  // one (`/api/admin/**` after `/api/**`, `tool: admin.delete` after `tool: "*"`) would silently
  // grant what it names on the broader rule's scopes. Claim conditions do not let a request through
  // to a later rule (a failed one refuses), so they do not count.
  const unchecked = (i: number) => options.unchecked?.has(i) === true || (entries[i]?.path === undefined && specs[i]?.path !== undefined);
  for (const [j, later] of entries.entries()) {
    // A rule that failed its checks, or whose pattern did not compile, is reported already, and
    // covers or is covered by nothing.
    if (unchecked(j)) continue;
    const methodsCover = (a: Entry, b: Entry) =>
      a.methods === undefined || (b.methods !== undefined && [...b.methods].every((m) => a.methods?.has(m)));
    const before = entries.findIndex(
      (e, i) =>
        i < j &&
        !unchecked(i) &&
        conditionsCover(specs[i] as RuleSpec, specs[j] as RuleSpec) &&
        methodsCover(e, later) &&
        covers(e.path, later.path),
    );
    if (before < 0) continue;
    const earlier = entries[before] as Entry;
    const name = specs[before]?.id === undefined ? `${at}[${before}]` : `${at}[${before}] (${quoted(earlier.rule.id)})`;
    // Two rules matching the same requests: no order reaches both (a failing scope or claim
    // condition refuses, it does not fall through), so "put the narrower first" would only move the error.
    const same = later.tool === undefined && later.rpc === undefined && methodsCover(later, earlier) && covers(later.path, earlier.path);
    issues.push({
      path: `${at}[${j}]`,
      message: same
        ? `this rule is never reached: ${name} comes first and matches the same requests, and the first matching rule decides (a request its scopes or claim conditions refuse is refused, not passed on); keep one rule for these requests`
        : `this rule is never reached: ${name} comes first and matches every request it matches, and the first matching rule decides; put the narrower rule first`,
    });
  }

  const matchEntry = (
    input: PolicyInput,
    segments: readonly string[],
  ): { entry: Entry; params: Record<string, string>; unevaluable?: 'tool' | 'rpc' } | undefined => {
    for (const e of entries) {
      if (e.methods && !e.methods.has(input.method)) continue;
      // No prototype: a parameter is only ever a segment captured (see INHERITED_NAMES).
      const params: Record<string, string> = Object.create(null);
      if (e.path) {
        if (!e.path.match(segments, params)) continue;
      }
      if (e.tool) {
        // Unknown tool: the rule may match; it decides, and it cannot grant (fail closed).
        if (input.tool === undefined) return { entry: e, params, unevaluable: 'tool' };
        if (input.tool === null || !e.tool(input.tool)) continue;
      }
      if (e.rpc) {
        // Unknown method: likewise, the rule decides and refuses.
        if (input.rpc === undefined) return { entry: e, params, unevaluable: 'rpc' };
        if (input.rpc === null || !e.rpc(input.rpc)) continue;
      }
      return { entry: e, params };
    }
    return undefined;
  };
  // Matched without case, a path an upstream may fold or normalize into ASCII otherwise than
  // toLowerCase does is refused as malformed (see foldsIntoAscii): never matched, never let through by a later rule.
  const segmentsOf = (path: string): string[] | undefined => {
    const segments = pathSegments(path);
    if (caseInsensitive && segments !== undefined) for (const s of segments) if (foldsIntoAscii(s)) return undefined;
    return segments;
  };
  const match = (input: PolicyInput) => {
    const segments = segmentsOf(input.path);
    const found = segments && matchEntry(input, segments);
    return found && { rule: found.entry.rule, params: found.params };
  };

  const conditionHolds = (cond: ClaimCondition, value: unknown, params: Record<string, string>): boolean => {
    if (Array.isArray(cond)) return cond.some((c) => c === value);
    if (typeof cond === 'string' && cond.startsWith(':')) return typeof value === 'string' && value === params[cond.slice(1)];
    return value === cond;
  };

  const evaluate = (input: PolicyInput, subject: PolicySubject): PolicyDecision => {
    const segments = segmentsOf(input.path);
    if (!segments) return { allowed: false, code: 'request_path_invalid', rule: undefined };
    const found = matchEntry(input, segments);
    if (!found) return { allowed: false, code: 'policy_no_match', rule: undefined };
    const { entry, params } = found;
    const { rule } = entry;
    if (found.unevaluable) return { allowed: false, code: 'policy_condition_failed', rule, unevaluable: found.unevaluable };
    const has = subject.effectiveScopes;
    for (const s of rule.all) if (!has.has(s)) return { allowed: false, code: 'scope_insufficient', rule };
    if (rule.any.length > 0 && !rule.any.some((s) => has.has(s))) return { allowed: false, code: 'scope_insufficient', rule };
    for (const [claim, cond] of entry.claims) {
      // The token's own claims only: none it lacks is read from what every object inherits.
      const value = Object.hasOwn(subject.claims, claim) ? subject.claims[claim] : undefined;
      if (!conditionHolds(cond, value, params)) return { allowed: false, code: 'policy_condition_failed', rule, claim };
    }
    return { allowed: true, rule, params };
  };

  return {
    policy: Object.freeze({ rules: Object.freeze(entries.map((e) => e.rule)), caseInsensitivePaths: caseInsensitive, match, evaluate }),
    issues,
  };
}
