/**
 * The gateway's checks against the rest of the configuration: they run in the same parse as the
 * schema's field checks (`configSchema`), on every part that parsed, so one error lists both kinds
 * of problem; `compileGateway` runs them again for configurations built without the schema.
 *
 * @module
 */

import type { Trusted } from '../config/cross-check.ts';
import type { TesseraConfig } from '../config/schema.ts';
import { resolveTokenService, tokenServicePath } from '../config/token-service-schema.ts';
import { parsedRules } from '../config/verifier-schema.ts';
import { type ConfigIssue, quoted } from '../core/errors.ts';
import { peerList } from '../core/peers.ts';
import { compilePolicy } from '../core/policy.ts';
import type { ScopeModel } from '../core/scopes.ts';
import { publicBaseOf, resourceOf } from './mcp/metadata.ts';
import { compileMatcher } from './routes.ts';

/**
 * Each route's match pattern and rules (their scope names against `scopes`), the verifier its
 * `auth` needs (`issuers`, `static_tokens`, `introspection`), the scopes an `exchange` credential
 * names, a `static` credential that is a static gateway token's value, the peer lists, the operations paths. A part that failed is not read: a section that
 * failed counts as configured, and rules are not compared with a catalogue that failed (`scopes`
 * is the catalogue names were checked against, or none).
 */
export function gatewayChecks(c: TesseraConfig, ok: Trusted, scopes: ScopeModel): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const g = c.gateway;
  if (typeof g !== 'object' || g === null) return issues;
  const available = {
    jwt: !ok('issuers') || c.issuers.length > 0,
    static: !ok('static_tokens') || c.static_tokens.length > 0,
    introspection: !ok('introspection') || c.introspection !== undefined,
  };
  // The static tokens' values (as resolved: `${VAR}` is substituted before the parse), to compare
  // the upstream credentials with: the first entry of a value, as the verifier reads it.
  const staticTokens = new Map<string, { n: number; id: string | undefined }>();
  for (const [n, t] of (Array.isArray(c.static_tokens) ? c.static_tokens : []).entries()) {
    if (!ok('static_tokens', n, 'token') || typeof t?.token !== 'string' || staticTokens.has(t.token)) continue;
    staticTokens.set(t.token, { n, id: ok('static_tokens', n, 'id') && typeof t.id === 'string' ? t.id : undefined });
  }
  for (const [i, r] of (Array.isArray(g.routes) ? g.routes : []).entries()) {
    const at = `gateway.routes[${i}]`;
    const here: Trusted = (...p) => ok('gateway', 'routes', i, ...p);
    if (typeof r !== 'object' || r === null) continue;
    const caseInsensitive = here('case_insensitive_paths') && r.case_insensitive_paths;
    // Only the path: a failed match.methods or match.host holds the raw input (methods: 5).
    if (here('match', 'path')) compileMatcher({ path: r.match.path }, scopes, `${at}.match`, issues, caseInsensitive);
    if (here('auth')) {
      for (const [j, kind] of r.auth.entries()) {
        if (kind === 'none' || available[kind]) continue;
        issues.push({
          path: `${at}.auth${r.auth.length > 1 ? `[${j}]` : ''}`,
          message:
            kind === 'jwt'
              ? 'auth: jwt needs at least one entry in issuers'
              : kind === 'static'
                ? 'auth: static needs at least one entry in static_tokens'
                : 'auth: introspection needs the introspection section',
        });
      }
    }
    // A public route's rules are refused as a whole by the schema.
    if (Array.isArray(r.rules) && here('auth') && !r.auth.includes('none')) {
      const { rules, unchecked } = parsedRules(r.rules, (...p) => here('rules', ...p));
      issues.push(...compilePolicy(rules, scopes, `${at}.rules`, { caseInsensitivePaths: caseInsensitive, unchecked }).issues);
    }
    // MCP authorization: clients request tokens for the resource the route's metadata advertises
    // (RFC 8707, RFC 9728), sent as it is, and the issuer and the route compare audiences exactly.
    // Without mcp.resource that is server.public_url in normal form (lower-case host, no default
    // port) + path_prefix: an audience spelled otherwise (`https://MCP.example.com/mcp`, `:443`, a
    // trailing slash) would refuse every token MCP clients get. (mcp.resource itself: the schema.)
    const publicUrl = ok('server', 'public_url') ? c.server.public_url : undefined;
    if (
      publicUrl !== undefined &&
      here('mcp') &&
      here('audience') &&
      here('auth') &&
      here('match', 'path_prefix') &&
      r.mcp !== undefined &&
      r.mcp.resource === undefined &&
      r.audience !== undefined &&
      r.match.path_prefix !== undefined &&
      r.auth.some((a) => a === 'jwt' || a === 'introspection')
    ) {
      const advertised = resourceOf(
        { resource: undefined, prefix: r.match.path_prefix.replace(/\/$/, '') },
        publicBaseOf(publicUrl) as string,
      );
      if (r.audience !== advertised)
        issues.push({
          path: `${at}.audience`,
          message: `the route's metadata advertises the resource ${advertised} (server.public_url + path_prefix), which MCP clients request tokens for (RFC 8707) and this audience refuses; set audience: ${advertised} (and register clients with it), or set mcp.resource`,
        });
    }
    const credential = here('upstream', 'credential') ? r.upstream.credential : undefined;
    if (credential?.type === 'exchange' && credential.scopes !== undefined)
      issues.push(...scopes.checkReferences(credential.scopes, `${at}.upstream.credential.scopes`));
    // The upstream receives this credential with every request: were it a static gateway token, the
    // upstream (or anyone reading its logs) could present it to the gateway with that token's scopes.
    const same = credential?.type === 'static' ? staticTokens.get(credential.token) : undefined;
    if (same !== undefined)
      issues.push({
        path: `${at}.upstream.credential.token`,
        message: `this is the value of static_tokens[${same.n}]${same.id === undefined ? '' : ` (${quoted(same.id)})`}, so the upstream could present it to the gateway with that token's scopes; give the upstream a credential of its own (e.g. \`openssl rand -base64 32\`, set on the upstream too), never a static gateway token`,
      });
  }
  if (ok('gateway', 'forward_auth', 'allowed_peers')) peerList(g.forward_auth.allowed_peers, 'gateway.forward_auth.allowed_peers', issues);
  if (ok('gateway', 'trust_proxy')) peerList(g.trust_proxy, 'gateway.trust_proxy', issues);
  // A sub_id is believed from a trusted issuer only: a name not in `issuers` is a typo or a leftover.
  if (ok('gateway', 'trust_sub_id') && ok('issuers') && Array.isArray(g.trust_sub_id)) {
    const trustedIssuers = new Set(c.issuers.map((i) => i.issuer));
    for (const [i, name] of g.trust_sub_id.entries()) {
      if (!trustedIssuers.has(name))
        issues.push({
          path: `gateway.trust_sub_id[${i}]`,
          message: `${quoted(name)} is not one of issuers[].issuer; list the issuer of a trusted token service exactly as its tokens' iss says`,
        });
    }
  }
  if (ok('gateway', 'operations', 'metrics_allowed_peers'))
    peerList(g.operations.metrics_allowed_peers, 'gateway.operations.metrics_allowed_peers', issues);
  const ops = g.operations;
  const opsPaths = ['health_path', 'ready_path', 'metrics_path'] as const;
  if (
    opsPaths.every((p) => ok('gateway', 'operations', p)) &&
    ok('gateway', 'forward_auth', 'enabled') &&
    ok('gateway', 'forward_auth', 'path')
  ) {
    const reserved = [ops.health_path, ops.ready_path, ops.metrics_path, ...(g.forward_auth.enabled ? [g.forward_auth.path] : [])];
    if (new Set(reserved).size !== reserved.length)
      issues.push({ path: 'gateway.operations', message: 'health, readiness, metrics and forward-auth paths must differ' });
  }
  return issues;
}

/** How the gateway is run, for the checks that depend on it. */
export interface GatewayRun {
  /** The gateway is started from this configuration: the `gateway` section must be there. */
  readonly required?: boolean;
  /**
   * Who mints the tokens of `credential: exchange`: nobody (`tessera gateway`, or createGateway
   * without an `upstreamTokenIssuer`), or the token service of `tessera serve` as the client
   * `gateway.exchange_client`. Not checked when omitted.
   */
  readonly exchange?: 'unavailable' | 'exchange_client';
  /**
   * The token service shares the listener (`tessera serve`) and answers first: an operations path
   * among its paths would never reach the gateway.
   */
  readonly tokenService?: boolean;
}

const OPS_DEFAULTS = { health_path: '/healthz', ready_path: '/readyz', metrics_path: '/metrics' } as const;

/** The checks that depend on how the gateway is run ({@link GatewayRun}). */
export function gatewayRunChecks(c: TesseraConfig, ok: Trusted, run: GatewayRun): ConfigIssue[] {
  const g = c.gateway;
  if (g === undefined) return run.required ? [{ path: 'gateway', message: 'the gateway section is missing; add gateway.routes' }] : [];
  if (typeof g !== 'object' || g === null) return [];
  const issues: ConfigIssue[] = [];
  if (run.tokenService && ok('server') && ok('token_service', 'issuer')) {
    const issuer = new URL(resolveTokenService(c).issuer);
    const issuerPath = issuer.pathname.replace(/\/+$/, '');
    for (const [key, instead] of Object.entries(OPS_DEFAULTS) as [keyof typeof OPS_DEFAULTS, string][]) {
      if (!ok('gateway', 'operations', key)) continue;
      const path = g.operations[key];
      if (tokenServicePath(path, issuerPath))
        issues.push({
          path: `gateway.operations.${key}`,
          message: `${JSON.stringify(path)} is the token service's under tessera serve (it answers /oauth2/, /.well-known/jwks.json and /.well-known/oauth-authorization-server); write a path outside them, such as ${instead}`,
        });
    }
  }
  const noMinter =
    run.exchange === 'unavailable' ||
    (run.exchange === 'exchange_client' && ok('gateway', 'exchange_client') && g.exchange_client === undefined);
  for (const [i, r] of (noMinter && Array.isArray(g.routes) ? g.routes : []).entries()) {
    if (ok('gateway', 'routes', i, 'upstream', 'credential') && r.upstream.credential.type === 'exchange')
      issues.push({
        path: `gateway.routes[${i}].upstream.credential.type`,
        message: 'exchange needs the token service: run the gateway with `tessera serve` and set gateway.exchange_client',
      });
  }
  return issues;
}
