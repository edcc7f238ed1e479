/**
 * Request parameters of the token, revocation and introspection endpoints: single values,
 * repeats, `scope` (RFC 6749 §3.3), and `audience` / `resource` targets (RFC 8693, RFC 8707),
 * narrowed against what may be granted.
 *
 * @module
 */
import { OAuthError } from '../core/oauth-errors.ts';
import { type EffectiveScopes, isWildcard } from '../core/scopes.ts';
import { SCOPE_TOKEN } from './clients.ts';

/** Parameters that may repeat (RFC 8707 §2, RFC 8693 §2.1); every other one must not (RFC 6749 §3.2). */
const MULTI_VALUED = new Set(['audience', 'resource']);

/** A parameter's single value; empty counts as absent (RFC 6749 §3.1). */
export function param(params: URLSearchParams, name: string): string | undefined {
  const v = params.get(name);
  return v === null || v === '' ? undefined : v;
}

export function required(params: URLSearchParams, name: string): string {
  const v = param(params, name);
  if (v === undefined) throw new OAuthError('request_parameter_missing');
  return v;
}

export function checkRepeats(params: URLSearchParams): void {
  const seen = new Set<string>();
  for (const name of params.keys()) {
    if (seen.has(name) && !MULTI_VALUED.has(name)) throw new OAuthError('request_parameter_repeated');
    seen.add(name);
  }
}

/**
 * Parse a `scope` parameter; `undefined` when absent. RFC 6749 §3.3: `scope-token *( SP scope-token )`,
 * one space between tokens and none around them. A doubled, leading or trailing space (or a value
 * of spaces alone, which dropping empty tokens read as no scope: the client's full scope) is
 * `scope_malformed`, not guessed at.
 */
export function parseScope(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const list = value.split(' ');
  for (const s of list) if (!SCOPE_TOKEN.test(s)) throw new OAuthError('scope_malformed');
  return [...new Set(list)];
}

/** True when `granted` covers `scope`, including a wildcard scope requested as such. */
export function covers(granted: EffectiveScopes, scope: string): boolean {
  if (!isWildcard(scope)) return granted.has(scope);
  return granted.wildcards.some((w) => w === '*' || scope.startsWith(w.slice(0, -1)));
}

/** Requested scopes within every ceiling, or `invalid_scope`. */
export function narrowScopes(requested: readonly string[], ceilings: readonly EffectiveScopes[]): readonly string[] {
  for (const s of requested) for (const c of ceilings) if (!covers(c, s)) throw new OAuthError('scope_not_allowed');
  return requested;
}

/**
 * The scopes of `granted` that `ceiling` (a client's current scopes) still covers, in their order:
 * what a token issued without `scope` from a grant may carry once the client lost some of them. A
 * wildcard no longer covered as a whole narrows to the ceiling's own scopes and wildcards within it.
 */
export function scopesWithin(granted: readonly string[], ceiling: EffectiveScopes): readonly string[] {
  const out = new Set<string>();
  for (const s of granted) {
    if (covers(ceiling, s)) out.add(s);
    else if (isWildcard(s)) {
      const prefix = s === '*' ? '' : s.slice(0, -1);
      const wildcards = ceiling.wildcards.filter((w) => w.startsWith(prefix));
      for (const w of wildcards) out.add(w);
      for (const c of ceiling.list) if (c.startsWith(prefix) && !wildcards.some((w) => c.startsWith(w.slice(0, -1)))) out.add(c);
    }
  }
  return [...out];
}

/**
 * Whether the request names a target (`audience` or `resource`) with a value. One sent without a
 * value counts as omitted (RFC 6749 §3.1), as {@link targets} reads it.
 */
export function namesTarget(params: URLSearchParams): boolean {
  for (const [name, value] of params) if (value !== '' && (name === 'audience' || name === 'resource')) return true;
  return false;
}

/**
 * The audiences requested through `audience` (RFC 8693) and `resource` (RFC 8707), each within
 * `allowed`; when none is requested, the only allowed one, else `invalid_target`. Compared as
 * strings, exactly: `https://api.example/`, `https://API.example` or `https://api.example:443` is
 * not `https://api.example` (no normalisation; resource servers compare `aud` exactly too).
 * `outside` is the reason for one not in `allowed`: `target_not_allowed` against a client's
 * audiences, `target_not_granted` against a grant's or a code's (RFC 8707 §2.2).
 */
export function targets(
  params: URLSearchParams,
  allowed: ReadonlySet<string> | readonly string[],
  outside: 'target_not_allowed' | 'target_not_granted' = 'target_not_allowed',
): string[] {
  const requested = new Set<string>();
  for (const a of params.getAll('audience')) if (a !== '') requested.add(a);
  for (const r of params.getAll('resource')) {
    if (r === '') continue;
    // RFC 8707 §2: an absolute URI without a fragment.
    if (!URL.canParse(r) || r.includes('#')) throw new OAuthError('target_invalid');
    requested.add(r);
  }
  const list = [...allowed];
  if (requested.size === 0) {
    if (list.length === 1) return list;
    throw new OAuthError('target_required');
  }
  const set = allowed instanceof Set ? allowed : new Set(list);
  for (const r of requested) if (!set.has(r)) throw new OAuthError(outside);
  return [...requested];
}

/** The admin scope and the one audience a token carrying it may have: the resolved configuration's. */
export interface AdminTarget {
  readonly admin: { readonly scope: string };
  readonly adminAudience: string;
}

/**
 * {@link targets}, except that a request naming the admin scope (in `requested`) and no target gets
 * the admin audience alone when `allowed` holds it: the admin scope names its resource, as an
 * Auth0 Management API scope does, and a client with several audiences is not asked to say so.
 */
export function targetsFor(
  params: URLSearchParams,
  allowed: ReadonlySet<string> | readonly string[],
  requested: readonly string[] | undefined,
  admin: AdminTarget,
): string[] {
  if (!namesTarget(params) && requested?.includes(admin.admin.scope)) {
    const has = allowed instanceof Set ? allowed.has(admin.adminAudience) : (allowed as readonly string[]).includes(admin.adminAudience);
    if (has) return [admin.adminAudience];
  }
  return targets(params, allowed);
}

/**
 * The scopes of a new token for `audiences`, so that the admin scope is never issued with another
 * audience (RFC 8707 §2, RFC 9068 §3): that resource server could replay the token at the admin
 * API. Asked for by name (`requested` names it) with another audience, it is `invalid_target`
 * (`target_admin_shared`); left to the default scopes, it is left out of a token for any audience
 * but the admin audience alone.
 */
export function confineAdminScope(
  scopes: readonly string[],
  audiences: readonly string[],
  requested: readonly string[] | undefined,
  admin: AdminTarget,
): readonly string[] {
  const scope = admin.admin.scope;
  if (!scopes.includes(scope)) return scopes;
  if (audiences.length > 0 && audiences.every((a) => a === admin.adminAudience)) return scopes;
  if (requested?.includes(scope)) throw new OAuthError('target_admin_shared');
  return scopes.filter((s) => s !== scope);
}
