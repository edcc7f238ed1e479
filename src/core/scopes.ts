/**
 * Scopes: a catalogue with inheritance (`api:write` implies `api:read`, transitively) and
 * wildcards (`*` grants everything, `prefix:*` grants every scope that starts with `prefix:`).
 *
 * The catalogue is compiled once; expanding a token's granted scopes into its effective scopes is
 * memoized per distinct scope claim, because most tokens of one client share it.
 *
 * @module
 */
import { type ConfigIssue, quoted } from './errors.ts';

/** One catalogue entry as written in configuration. */
export interface ScopeDefinition {
  readonly description?: string;
  /** Scopes (or `prefix:*` wildcards) that holding this scope also grants. */
  readonly implies?: readonly string[];
}

/** The scope catalogue: scope name → definition. */
export type ScopeCatalog = Readonly<Record<string, ScopeDefinition>>;

/** The scopes a principal holds after inheritance and wildcards. */
export interface EffectiveScopes {
  /** True when `scope` is granted, directly, by inheritance or by a wildcard. */
  has(scope: string): boolean;
  /** Concrete scopes granted (wildcards not expanded beyond the catalogue), sorted. */
  readonly list: readonly string[];
  /** Wildcards held (`*` or `prefix:*`). */
  readonly wildcards: readonly string[];
}

/** A compiled scope model. */
export interface ScopeModel {
  /** Known scopes, or `undefined` when no catalogue is configured (every name is accepted). */
  readonly known: ReadonlySet<string> | undefined;
  /** Effective scopes for a granted list. Memoized by the joined list. */
  expand(granted: readonly string[]): EffectiveScopes;
  /** Issues for scope names used in rules that the catalogue does not define. */
  checkReferences(scopes: readonly string[], path: string): ConfigIssue[];
}

const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/; // RFC 6749 §3.3 scope-token

/** True when `scope` is `*` or ends in `:*` (a prefix wildcard). */
export function isWildcard(scope: string): boolean {
  return scope === '*' || scope.endsWith(':*');
}

function wildcardMatches(wildcard: string, scope: string): boolean {
  return wildcard === '*' || scope.startsWith(wildcard.slice(0, -1));
}

const MEMO_LIMIT = 4096;

/**
 * Compile a scope catalogue.
 *
 * @returns the model, or the issues found: unknown implied scopes, wildcards that match nothing,
 *   invalid names and cycles (`a → b → a`), each with its configuration path.
 *
 * @example
 * ```ts
 * const { model } = compileScopes({ 'api:read': {}, 'api:write': { implies: ['api:read'] } });
 * model!.expand(['api:write']).has('api:read'); // true
 * ```
 */
export function compileScopes(catalog: ScopeCatalog | undefined, path = 'scopes'): { model: ScopeModel; issues: ConfigIssue[] } {
  const issues: ConfigIssue[] = [];
  const known = catalog ? new Set(Object.keys(catalog)) : undefined;
  const closure = new Map<string, Set<string>>();

  if (catalog && known) {
    for (const name of known) {
      if (!SCOPE_TOKEN.test(name) || isWildcard(name)) {
        issues.push({
          path: `${path}.${name}`,
          message: 'a scope name is printable ASCII without spaces, quotes or backslashes, and is not a wildcard',
        });
      }
      for (const [i, implied] of (catalog[name]?.implies ?? []).entries()) {
        if (isWildcard(implied)) {
          if (![...known].some((k) => wildcardMatches(implied, k))) {
            issues.push({ path: `${path}.${name}.implies[${i}]`, message: `wildcard ${quoted(implied)} matches no defined scope` });
          }
        } else if (!known.has(implied)) {
          issues.push({ path: `${path}.${name}.implies[${i}]`, message: `unknown scope ${quoted(implied)}; define it under ${path}` });
        }
      }
    }
    // Transitive closure by depth-first search, reporting each cycle once.
    const state = new Map<string, 1 | 2>();
    const stack: string[] = [];
    const directImplied = (name: string): string[] => {
      const out: string[] = [];
      for (const implied of catalog[name]?.implies ?? []) {
        // A wildcard covering the scope itself (`api:admin` implying `api:*`) is no cycle.
        if (isWildcard(implied)) for (const k of known) k !== name && wildcardMatches(implied, k) && out.push(k);
        else if (known.has(implied)) out.push(implied);
      }
      return out;
    };
    const visit = (name: string): Set<string> => {
      const done = closure.get(name);
      if (done && state.get(name) === 2) return done;
      if (state.get(name) === 1) {
        const cycle = [...stack.slice(stack.indexOf(name)), name];
        issues.push({ path: `${path}.${name}.implies`, message: `scopes imply each other in a cycle: ${cycle.join(' → ')}` });
        return new Set();
      }
      state.set(name, 1);
      stack.push(name);
      const set = new Set<string>([name]);
      for (const next of directImplied(name)) for (const s of visit(next)) set.add(s);
      stack.pop();
      state.set(name, 2);
      closure.set(name, set);
      return set;
    };
    for (const name of known) visit(name);
  }

  const memo = new Map<string, EffectiveScopes>();
  const expand = (granted: readonly string[]): EffectiveScopes => {
    const memoKey = granted.join(' ');
    const hit = memo.get(memoKey);
    if (hit) return hit;
    const concrete = new Set<string>();
    const wildcards: string[] = [];
    for (const g of granted) {
      if (isWildcard(g)) {
        wildcards.push(g);
        if (known) for (const k of known) if (wildcardMatches(g, k)) for (const s of closure.get(k) ?? [k]) concrete.add(s);
      } else {
        for (const s of closure.get(g) ?? [g]) concrete.add(s);
      }
    }
    const all = wildcards.includes('*');
    const prefixes = wildcards.filter((w) => w !== '*').map((w) => w.slice(0, -1));
    const effective: EffectiveScopes = Object.freeze({
      has: all
        ? () => true
        : prefixes.length === 0
          ? (scope: string) => concrete.has(scope)
          : (scope: string) => concrete.has(scope) || prefixes.some((p) => scope.startsWith(p)),
      list: Object.freeze([...concrete].sort()),
      wildcards: Object.freeze(wildcards),
    });
    if (memo.size >= MEMO_LIMIT) memo.delete(memo.keys().next().value as string);
    memo.set(memoKey, effective);
    return effective;
  };

  const checkReferences = (scopes: readonly string[], at: string): ConfigIssue[] => {
    const out: ConfigIssue[] = [];
    for (const [i, s] of scopes.entries()) {
      if (isWildcard(s)) out.push({ path: `${at}[${i}]`, message: `a required scope cannot be a wildcard (${quoted(s)})` });
      else if (!SCOPE_TOKEN.test(s)) out.push({ path: `${at}[${i}]`, message: `${quoted(s)} is not a valid scope name` });
      else if (known && !known.has(s)) out.push({ path: `${at}[${i}]`, message: `unknown scope ${quoted(s)}; define it under ${path}` });
    }
    return out;
  };

  return { model: Object.freeze({ known, expand, checkReferences }), issues };
}

/**
 * Read the granted scopes from a claim value: a space-delimited string (`scope`, RFC 8693 §4.2)
 * or an array of strings (`scopes`, `scp`). Returns `undefined` for any other shape, which the
 * verifier treats as an invalid claim rather than as "no scopes".
 */
export function parseScopeClaim(value: unknown): string[] | undefined {
  if (value === undefined) return [];
  if (typeof value === 'string') return value === '' ? [] : value.split(' ').filter((s) => s !== '');
  if (Array.isArray(value) && value.every((s) => typeof s === 'string' && s !== '' && !s.includes(' '))) return value as string[];
  return undefined;
}
