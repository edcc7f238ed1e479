/**
 * Compile a configuration into the gateway's immutable state: routes with their pipelines,
 * verifiers, pools, header policy. The checks against the rest of the configuration (check.ts) ran
 * in the schema already; here they run again, with those that depend on how the gateway runs and
 * what only building finds (a key file that cannot be read), every problem with its path. A
 * reload compiles a new state and swaps it in only when this succeeds.
 *
 * @module
 */
import { createHash, type KeyObject } from 'node:crypto';
import { lstatSync, type Stats } from 'node:fs';
import { type BlockList, isIP } from 'node:net';
import { isDeepStrictEqual } from 'node:util';
import type { Dispatcher } from 'undici';
import { auditFileIssueOf } from '../audit/sinks/jsonl.ts';
import { everything } from '../config/cross-check.ts';
import type { AuditConfig, GatewayConfig, RouteConfig } from '../config/gateway-schema.ts';
import type { TesseraConfig } from '../config/schema.ts';
import type { VerifierConfig } from '../config/verifier-schema.ts';
import { ConfigError, type ConfigIssue, type TesseraError } from '../core/errors.ts';
import { catchAllWarnings, peerList } from '../core/peers.ts';
import { compilePolicy, type Policy } from '../core/policy.ts';
import type { Clock, UpstreamTokenIssuer } from '../core/ports.ts';
import { TokenBucketLimiter } from '../core/ratelimit.ts';
import { compileScopes, type ScopeModel } from '../core/scopes.ts';
import { type SecretIndex, secretIndex } from '../core/secret-shape.ts';
import { challenges as renderChallenges } from '../core/verify/challenge.ts';
import type { SubIdTrust } from '../core/verify/principal.ts';
import type { ManagedVerifier } from '../verifier.ts';
import { AgentCardSource } from './a2a/card.ts';
import { gatewayChecks, gatewayRunChecks } from './check.ts';
import { compileHeaderPolicy, type HeaderPolicy } from './http/headers.ts';
import { type McpAdvertisement, metadataPathOf, publicBaseOf } from './mcp/metadata.ts';
import { sessionKeyFromSecret } from './mcp/sessions.ts';
import type { AuthenticatorId } from './pipeline/authn/authenticator.ts';
import { type AuthenticationStage, authenticationStage, createAuthenticator, type VerifiersByKind } from './pipeline/authn/registry.ts';
import { allowAuthorizer } from './pipeline/authz/authorizer-allow.ts';
import { policyAuthorizer } from './pipeline/authz/authorizer-policy.ts';
import type { Mutator } from './pipeline/mutate/mutator.ts';
import { type ExchangeState, exchangeCredentialMutator } from './pipeline/mutate/mutator-exchange.ts';
import { identityHeadersMutator } from './pipeline/mutate/mutator-identity.ts';
import { passthroughMutator } from './pipeline/mutate/mutator-passthrough.ts';
import { staticCredentialMutator } from './pipeline/mutate/mutator-static.ts';
import type { Pipeline } from './pipeline/run.ts';
import { UpstreamPools } from './proxy/upstreams.ts';
import { compileMatcher, compileReach, type Matcher, prefixEnd } from './routes.ts';

/**
 * Builds a verifier for one credential kind from the verifier part of the configuration, which
 * holds only that kind's settings. `shared.dpopClockSkew` is the clock skew DPoP proofs get on
 * every route (the largest `clock_skew` of the whole configuration), for the verifier's
 * `VerifierRuntime.dpopClockSkew`.
 */
export type VerifierFactory = (
  config: VerifierConfig,
  kind: Exclude<AuthenticatorId, 'none'>,
  shared: { readonly dpopClockSkew: number },
) => ManagedVerifier;

export interface CompileDeps {
  readonly clock: Clock;
  readonly createVerifier: VerifierFactory;
  readonly upstreamTokenIssuer: UpstreamTokenIssuer | undefined;
  readonly pools: UpstreamPools;
  readonly onExchangeError: (route: string, error: unknown) => void;
  /** The issuer of the token service running in this process, advertised by MCP routes. */
  readonly authorizationServer?: string | undefined;
  /** The MCP session key when `gateway.mcp_session_secret` is not set, and whether it is a random one. */
  readonly mcpSessionKey: { readonly key: KeyObject; readonly random: boolean };
  /** The host the listener was bound to, when it is not `server.host` (`--host`). */
  readonly listenHost?: string | undefined;
  /** Whether the DPoP nonces are MACed with a random key of this process when `dpop.nonce_secret` is not set. */
  readonly dpopNoncesRandom?: boolean;
}

export interface CompiledUpstream {
  readonly dispatcher: Dispatcher;
  readonly poolKey: string;
  readonly url: URL;
  /** Upstream base path without trailing slash (`''` for `/`). */
  readonly basePath: string;
  /** Where `strip_prefix` ends in a path (-1: not there), as {@link prefixEnd} matches it. */
  readonly stripEnd: ((path: string) => number) | undefined;
  /** `host[:port]` for the Host header. */
  readonly hostHeader: string;
  readonly preserveHost: boolean;
  /** ms */
  readonly connectTimeout: number;
  /** ms */
  readonly headersTimeout: number;
  /** ms */
  readonly bodyTimeout: number;
  /**
   * The gateway injects the upstream's credential (`static`, `exchange`): the upstream's 401 is
   * that credential refused (502 `upstream_credential_rejected`) and its challenges are not relayed.
   */
  readonly ownCredential: boolean;
}

/** An MCP route's settings. */
export interface CompiledMcp extends McpAdvertisement {
  /** Bytes. */
  readonly maxMessageSize: number;
  /**
   * The `scope` of the route's 401 challenges (space-delimited): what the rule deciding an
   * `initialize` requires, `undefined` when it requires nothing (or no rule takes one).
   */
  readonly challengeScope: string | undefined;
  /** A tools/list answer lists only the tools the caller may call (`mcp.filter_tools_list`). */
  readonly filterToolsList: boolean;
  /** Bytes: the largest tools/list answer (JSON) or response event (SSE) read to filter it. */
  readonly maxToolsListSize: number;
  /** MCP tasks bound to the principal and tool that created them (`mcp.bind_tasks`, mcp/tasks.ts). */
  readonly bindTasks: boolean;
  /** Seconds a bound task stays bound after it was last named (`mcp.task_ttl`). */
  readonly taskTtl: number;
  /** Live tasks one principal may own on the route, whatever tools created them (`mcp.max_tasks_per_principal`). */
  readonly maxTasksPerPrincipal: number;
  /** With {@link bindTasks}: tasks/list goes through, unfiltered (`mcp.list_tasks`). */
  readonly listTasks: boolean;
}

export interface CompiledRoute {
  readonly id: string;
  readonly config: RouteConfig;
  readonly matches: Matcher;
  /**
   * On a route matching paths without case (`case_insensitive_paths`), whether a request to this
   * host with this method is one it may take: such a request whose path does not decode, or has a
   * character NFKC reads as `/`, `.`, `%`, `;` (fullwidth `／`: asciiFoldedPath), is refused here
   * (`request_path_invalid`), neither matched nor passed to a later route. (One whose path,
   * read as `asciiFoldedPath` reads it, the route `matches` is refused too: findRoute.)
   */
  readonly foldGuard: ((host: string, method: string) => boolean) | undefined;
  readonly pipeline: Pipeline;
  readonly authn: AuthenticationStage;
  readonly upstream: CompiledUpstream;
  readonly maxBodySize: number;
  readonly websocket: boolean;
  readonly a2a: AgentCardSource | undefined;
  /** Path prefix for agent cards served under the route (`/agents/x/.well-known/...`). */
  readonly prefix: string | undefined;
  /** Set on MCP routes: bodies are read before deciding. */
  readonly mcp: CompiledMcp | undefined;
  /** An `exchange` route's minted tokens and mints under way, for a reload to hand over. */
  readonly exchange: ExchangeState | undefined;
}

/**
 * What an exchange in flight keeps of the state it was decided under, for a reload to decide it
 * again: plain data, so an open stream keeps no compiled state (verifiers, caches, pools) alive.
 * One per compiled state: the configuration object alone would not tell two compilations of it
 * apart (a key file read again).
 */
export interface Admission {
  readonly config: TesseraConfig;
  /** The keys read from each issuer's `jwks.file`, as {@link ManagedVerifier.fileKeys} names them. */
  readonly fileKeys: ReadonlyMap<string, ReadonlySet<string>>;
}

export interface GatewayState {
  readonly config: TesseraConfig;
  /** What a stream decided under this state keeps of it. */
  readonly admission: Admission;
  readonly gateway: GatewayConfig;
  readonly audit: AuditConfig | undefined;
  readonly routes: readonly CompiledRoute[];
  /** The scope catalogue (`scopes`): a granted list's effective scopes. */
  readonly scopes: ScopeModel;
  /** Some route serves an A2A agent card. */
  readonly hasA2a: boolean;
  /** Some route is an MCP route (serves RFC 9728 metadata). */
  readonly hasMcp: boolean;
  readonly headerPolicy: HeaderPolicy;
  readonly verifiers: readonly ManagedVerifier[];
  /** The verifier of `auth: introspection` routes: exchanges in flight on its tokens are introspected again through it. */
  readonly introspectionVerifier: ManagedVerifier | undefined;
  /** `gateway.auth_failure_limit`: failed authentications by client address, for every route that needs a token. */
  readonly authFailures: TokenBucketLimiter | undefined;
  /** Challenges for refusals before a route is known (a bad path). */
  readonly challenges: (e?: TesseraError) => string[];
  readonly forwardAuthPeers: BlockList;
  /** The header the proxy sends with every forward-auth check and the SHA-256 of its value. */
  readonly forwardAuthSecret: { readonly header: string; readonly digest: Buffer } | undefined;
  /**
   * The secrets the operator configured (static gateway tokens, static upstream credentials, the
   * forward-auth shared secret, the introspection client secret, the MCP session and DPoP nonce
   * secrets): written `*` wherever a caller puts
   * one in a recorded field (a path, a query key, a tool name), with the credential it presented.
   */
  readonly auditSecrets: readonly string[];
  /** {@link auditSecrets} compiled for whole-value lookup, once per configuration. */
  readonly auditSecretIndex: SecretIndex;
  /**
   * Whose RFC 9493 `sub_id` names the subject's issuer (`subjectIssuer`): the JWTs of the token
   * service of this process and of `gateway.trust_sub_id`, introspection answers with
   * `introspection.trust_sub_id`.
   */
  readonly vouching: SubIdTrust;
  readonly metricsPeers: BlockList;
  /** Proxies in front of the gateway (`gateway.trust_proxy`). */
  readonly trustedProxies: BlockList;
  readonly publicUrl: string | undefined;
  /** `publicUrl` in normal form (lower-case host, no default port) without its trailing slash. */
  readonly publicBase: string | undefined;
  /** The origin of `server.public_url` (forward-auth: the proxy's checks carry the original URI whole). */
  readonly publicOrigin: string | undefined;
  /**
   * The host of the gateway's own URL without `publicUrl`: the host it listens on as a URL writes
   * it, `undefined` for a wildcard address (each connection's local address then).
   */
  readonly listenHost: string | undefined;
  readonly poolKeys: ReadonlySet<string>;
  /** Signs MCP session ids (`gateway.mcp_session_secret`, else the host's key). */
  readonly mcpSessionKey: KeyObject;
  readonly warnings: readonly string[];
}

function verifierConfigOf(config: TesseraConfig): VerifierConfig {
  return {
    issuers: config.issuers,
    static_tokens: config.static_tokens,
    introspection: config.introspection,
    scopes: config.scopes,
    rules: undefined,
    transport: config.transport,
    dpop: config.dpop,
    max_token_size: config.max_token_size,
    cache: config.cache,
    realm: config.realm,
    resource_metadata: config.resource_metadata,
  } as VerifierConfig;
}

/** Every scope a route's rules name, sorted. */
function ruleScopes(r: RouteConfig): string[] {
  const out = new Set<string>();
  for (const rule of r.rules ?? []) {
    const s = rule.scopes;
    if (s === undefined) continue;
    for (const x of Array.isArray(s) ? s : [...(s.all ?? []), ...(s.any ?? [])]) out.add(x);
  }
  return [...out].sort();
}

/**
 * The path an MCP route's endpoint is reached at, as the gateway sees it: its `path_prefix`, else
 * its `match.path` pattern with a placeholder for each `:param` and `*` segment and the final `**`
 * dropped (a path the pattern matches).
 */
function endpointPath(r: RouteConfig): string {
  const prefix = r.match.path_prefix?.replace(/\/$/, '');
  if (prefix !== undefined) return prefix === '' ? '/' : prefix;
  const pattern = r.match.path ?? '/';
  const parts = pattern.split('/').filter((p, i, all) => !(p === '**' && i === all.length - 1));
  return parts.map((p) => (p === '*' || p.startsWith(':') ? '_' : p)).join('/') || '/';
}

/**
 * The scopes an MCP route's 401 challenge names (MCP authorization 2025-11-25, "Scope Selection
 * Strategy": a client requests the challenge's `scope`, else every scope of `scopes_supported`):
 * those of the rule that decides an `initialize` POST to the endpoint, which every session begins
 * with. Not the tools' or other methods' scopes: a call needing more is refused 403
 * `insufficient_scope` naming them, and the client steps up then. A 401 comes before the body is
 * read, so this is decided once here rather than per request.
 */
function initializeScope(policy: Policy | undefined, r: RouteConfig): string | undefined {
  const found = policy?.match({ method: 'POST', path: endpointPath(r), tool: null, rpc: 'initialize' });
  return found === undefined || found.rule.scopeHint === '' ? undefined : found.rule.scopeHint;
}

function compileMcp(
  config: TesseraConfig,
  r: RouteConfig,
  authorizationServer: string | undefined,
  policy: Policy | undefined,
  challenges: readonly string[],
): CompiledMcp {
  const m = r.mcp as NonNullable<RouteConfig['mcp']>;
  // The token service of this process when it runs one, else the issuers the gateway trusts.
  const authorizationServers =
    m.authorization_servers ?? (authorizationServer !== undefined ? [authorizationServer] : config.issuers.map((i) => i.issuer));
  const prefix = r.match.path_prefix?.replace(/\/$/, '') ?? '';
  // A public_url with a path (`https://example.com/tessera`: a proxy in front removes `/tessera`)
  // is part of the derived resource, so of its metadata path too (RFC 9728 §3.1).
  const base = publicBaseOf(config.server.public_url);
  const publicPath = base === undefined ? '' : new URL(base).pathname.replace(/\/$/, '');
  return {
    resource: m.resource,
    prefix,
    // Where the 401 challenge sends clients (metadataUrlOf(resource)), so that is where it is served.
    metadataPath: m.resource === undefined ? publicPath + prefix : metadataPathOf(m.resource),
    authorizationServers,
    scopesSupported: m.scopes_supported ?? ruleScopes(r),
    // What the route's own 401 challenges offer: a DPoP challenge (with the proof algorithms), and
    // no Bearer one under dpop.mode required.
    dpop: challenges.some((c) => c.startsWith('DPoP'))
      ? { algorithms: config.dpop.algorithms, required: !challenges.some((c) => c.startsWith('Bearer')) }
      : undefined,
    maxMessageSize: m.max_message_size,
    challengeScope: initializeScope(policy, r),
    filterToolsList: m.filter_tools_list,
    maxToolsListSize: m.max_tools_list_size,
    bindTasks: m.bind_tasks,
    taskTtl: m.task_ttl,
    maxTasksPerPrincipal: m.max_tasks_per_principal,
    listTasks: m.list_tasks,
  };
}

/**
 * `host` (`server.host`) as the host of a URL, as the token service writes its default issuer (an
 * IPv6 address in brackets), or `undefined` for a wildcard address, which names no one host.
 */
function urlHost(host: string): string | undefined {
  const ip = isIP(host);
  if (ip === 4) return host === '0.0.0.0' ? undefined : host;
  // A scoped address (`fe80::1%eth0`) is no URL host; it is no wildcard either.
  if (ip === 6) return URL.canParse(`http://[${host}]`) && new URL(`http://[${host}]`).hostname === '[::]' ? undefined : `[${host}]`;
  return host;
}

const OPERATIONS_PATHS = ['health_path', 'ready_path', 'metrics_path'] as const;

/**
 * A warning for each route whose match takes an operations path (`gateway.operations`): the gateway
 * answers that exact path itself, before any route, so the route's upstream never gets it there.
 * Only for the route that would get the path (its host and methods aside: those requests are the
 * gateway's too); a route after one taking the path for every host and method is not told again.
 */
function operationsPathWarnings(gateway: GatewayConfig, scopes: ScopeModel): string[] {
  const ops = gateway.operations;
  const taken = new Set<string>();
  const warnings: string[] = [];
  for (const r of gateway.routes) {
    const { path_prefix: prefix, path } = r.match;
    // Pattern errors are reported by the route's own matcher.
    const matches = compileMatcher({ path_prefix: prefix, path }, scopes, '', [], r.case_insensitive_paths);
    const hit = OPERATIONS_PATHS.filter((k) => !taken.has(ops[k]) && matches('', ops[k], 'GET'));
    const first = hit[0];
    if (first === undefined) continue;
    if (r.match.host === undefined && r.match.methods === undefined) for (const k of hit) taken.add(ops[k]);
    const match =
      prefix !== undefined
        ? `path_prefix ${JSON.stringify(prefix)}`
        : path !== undefined
          ? `path ${JSON.stringify(path)}`
          : 'no path_prefix or path: every path';
    const list = hit.map((k) => `${ops[k]} (gateway.operations.${k})`);
    const named = list.length === 1 ? list[0] : `${list.slice(0, -1).join(', ')} and ${list.at(-1)}`;
    warnings.push(
      `route ${r.id}: its match (${match}) covers ${named}, which the gateway answers itself before any route, so a request for exactly that path never reaches ${new URL(r.upstream.url).origin}; if the upstream must answer it, move the operations path (e.g. gateway.operations.${first}: /_tessera${ops[first]}), else that exact path stays the gateway's`,
    );
  }
  return warnings;
}

/**
 * Whether every path `spec` (a `path_prefix`, or a `path` pattern) lets through is `base` or below it:
 * its first segments are `base`'s, literally (no `*` or `:name` among them for a pattern).
 */
function withinPath(spec: string, base: string, pattern: boolean, caseInsensitive: boolean): boolean {
  const fold = (v: string) => (caseInsensitive ? v.toLowerCase() : v);
  const want = base.split('/');
  const have = spec.split('/').slice(0, want.length);
  if (have.length < want.length) return false;
  if (pattern && have.some((seg) => seg.includes('*') || seg.startsWith(':'))) return false;
  return fold(have.join('/')) === fold(want.join('/'));
}

/**
 * A warning for each route whose match takes the forward-auth endpoint (when enabled): the gateway
 * answers `gateway.forward_auth.path` and every path below it (Envoy's ext_authz sends
 * `<path>/<original path>`) before any route, as sent, so the route's upstream never gets them.
 * Named like the operations paths: the route that would get the path, not one after a catch-all.
 */
function forwardAuthPathWarnings(gateway: GatewayConfig, scopes: ScopeModel): string[] {
  const fa = gateway.forward_auth;
  if (!fa.enabled) return [];
  const warnings: string[] = [];
  for (const r of gateway.routes) {
    const { path_prefix: prefix, path } = r.match;
    const ci = r.case_insensitive_paths;
    const matches = compileMatcher({ path_prefix: prefix, path }, scopes, '', [], ci);
    const below =
      (prefix !== undefined && withinPath(prefix, fa.path, false, ci)) || (path !== undefined && withinPath(path, fa.path, true, ci));
    const exact = matches('', fa.path, 'GET');
    if (!exact && !below) continue;
    const match =
      prefix !== undefined
        ? `path_prefix ${JSON.stringify(prefix)}`
        : path !== undefined
          ? `path ${JSON.stringify(path)}`
          : 'no path_prefix or path: every path';
    const what = exact ? fa.path : `paths below ${fa.path}`;
    warnings.push(
      `route ${r.id}: its match (${match}) covers ${what} (gateway.forward_auth.path), which the gateway answers itself before any route, with every path below it, while forward-auth is enabled, so such a request never reaches ${new URL(r.upstream.url).origin}; if the upstream must answer it, move gateway.forward_auth.path to a path the upstream does not use, else those paths stay the gateway's`,
    );
    // A later route gets nothing at or below the path once one for every host, method and path
    // below it has taken it.
    if (r.match.host === undefined && r.match.methods === undefined && path === undefined && (prefix === undefined || exact)) break;
  }
  return warnings;
}

/**
 * Compile `config` into a gateway state; on a reload, `previous` is the state it replaces (whose
 * routes' rate-limit buckets carry over, and their minted upstream tokens while the credential
 * they were minted under is unchanged).
 *
 * @throws {ConfigError} listing every problem (routes needing verifiers that are not configured,
 *   unknown scopes in rules, bad patterns, `exchange` without a token service…).
 */
export function compileGateway(config: TesseraConfig, deps: CompileDeps, previous?: GatewayState): GatewayState {
  const { model: scopes } = compileScopes(config.scopes, 'scopes');
  // The schema ran gatewayChecks already; they run again for a configuration built without it.
  const issues: ConfigIssue[] = [
    ...gatewayChecks(config, everything, scopes),
    ...gatewayRunChecks(config, everything, {
      required: true,
      exchange: deps.upstreamTokenIssuer === undefined ? 'unavailable' : undefined,
    }),
  ];
  // What building finds: mostly what the checks above found already, which is said once.
  const found: ConfigIssue[] = [];
  const warnings: string[] = [];
  const gateway = config.gateway;
  if (gateway === undefined) throw new ConfigError(issues);
  // Verifiers: one per credential kind a route uses, each seeing only its own kind, so a JWT route
  // never sends an opaque token to the introspection endpoint.
  const kinds = new Set<Exclude<AuthenticatorId, 'none'>>();
  for (const r of gateway.routes) for (const a of r.auth) if (a !== 'none') kinds.add(a);
  const base = verifierConfigOf(config);
  const verifiers: VerifiersByKind = {};
  // One clock skew for DPoP proofs on every route: a proof's iat is the client's clock, whichever
  // way its token is checked (an introspection route's verifier has no issuers to take it from).
  const shared = {
    dpopClockSkew: Math.max(0, ...base.issuers.map((i) => i.clock_skew), base.introspection?.clock_skew ?? 0),
  };
  for (const kind of kinds) {
    const available = kind === 'jwt' ? base.issuers.length > 0 : kind === 'static' ? base.static_tokens.length > 0 : !!base.introspection;
    if (!available) continue;
    const only: VerifierConfig = {
      ...base,
      issuers: kind === 'jwt' ? base.issuers : [],
      static_tokens: kind === 'static' ? base.static_tokens : [],
      introspection: kind === 'introspection' ? base.introspection : undefined,
    } as VerifierConfig;
    try {
      verifiers[kind] = deps.createVerifier(only, kind, shared);
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      found.push(...e.issues);
    }
  }

  // Whose `sub_id` names the subject's issuer: the token service in this process, the token
  // services the operator listed (a gateway alone in front of `tessera serve`), and the
  // introspection endpoint when the operator says so.
  const vouching: SubIdTrust = {
    issuers: new Set([...(deps.authorizationServer !== undefined ? [deps.authorizationServer] : []), ...gateway.trust_sub_id]),
    introspection: config.introspection?.trust_sub_id === true,
  };
  // One limiter for the whole gateway (an address flooding junk spends one bucket whatever route it
  // aims at), kept across a reload as a route's rate_limit buckets are.
  const failureLimit = gateway.auth_failure_limit;
  const heldFailures = previous?.authFailures;
  const authFailures =
    failureLimit === undefined
      ? undefined
      : heldFailures !== undefined && isDeepStrictEqual(previous?.gateway.auth_failure_limit, failureLimit)
        ? heldFailures
        : new TokenBucketLimiter({
            rate: failureLimit.rate,
            burst: failureLimit.burst,
            maxKeys: failureLimit.max_keys,
            clock: deps.clock,
            from: heldFailures,
          });
  const poolKeys = new Set<string>();
  const routes: CompiledRoute[] = [];
  for (const [i, r] of gateway.routes.entries()) {
    const at = `gateway.routes[${i}]`;
    const matches = compileMatcher(r.match, scopes, `${at}.match`, found, r.case_insensitive_paths);
    // The same route before a reload (routes are told apart by id): what it keeps may carry over.
    const before = previous?.routes.find((p) => p.id === r.id);

    const chain = [];
    // A missing verifier is reported: not configured (gatewayChecks), or it failed to build.
    for (const kind of r.auth) {
      const a = createAuthenticator(kind, verifiers);
      if (a) chain.push(a);
    }
    const authn = authenticationStage(chain.length ? chain : [createAuthenticator('none', verifiers)!], r.audience);

    let authz = allowAuthorizer();
    let policy: Policy | undefined;
    if (r.rules !== undefined) {
      const compiled = compilePolicy(r.rules, scopes, `${at}.rules`, { caseInsensitivePaths: r.case_insensitive_paths });
      found.push(...compiled.issues);
      policy = compiled.policy;
      authz = policyAuthorizer(policy);
    }

    const mutators: Mutator[] = [];
    let exchange: ExchangeState | undefined;
    // Identity headers first: they are pure, and a token they refuse (a claim with no header form)
    // must be refused before an exchange mints for it (a grant, an audit event, a cached token).
    if (r.identity_headers.length > 0) mutators.push(identityHeadersMutator(r.identity_headers, gateway.identity_headers, vouching));
    const cred = r.upstream.credential;
    if (cred.type === 'static') mutators.push(staticCredentialMutator(cred.header, cred.scheme, cred.token));
    else if (cred.type === 'passthrough') {
      mutators.push(passthroughMutator());
      warnings.push(`route ${r.id}: credential passthrough sends callers' tokens to ${new URL(r.upstream.url).origin}`);
    } else if (cred.type === 'exchange') {
      // Without a token service gatewayRunChecks reported it.
      if (deps.upstreamTokenIssuer !== undefined) {
        // A reload keeps the route's minted tokens (and counts its mints under way) when the
        // issuer, audience, scopes, max_ttl and refresh_before are unchanged: any reload, a SIGHUP
        // from logrotate, would otherwise have every caller mint again at once, past
        // max_in_flight on a busy route, and write a grant each.
        const mutator = exchangeCredentialMutator({
          issuer: deps.upstreamTokenIssuer,
          audience: cred.audience,
          scopes: cred.scopes,
          maxTtl: cred.max_ttl,
          refreshBefore: cred.refresh_before,
          mintTimeout: cred.mint_timeout,
          maxInFlight: cred.max_in_flight,
          cacheSize: cred.cache_size,
          clock: deps.clock,
          onError: (e) => deps.onExchangeError(r.id, e),
          from: before?.exchange,
        });
        exchange = mutator.state;
        mutators.push(mutator);
      }
    }

    let rateLimit: Pipeline['rateLimit'];
    if (r.rate_limit) {
      // A reload keeps the route's buckets (matched by route id): unchanged, the same limiter; a
      // changed limit takes them over as they stand, at most its burst each. A new limiter would
      // give every caller a full bucket at each SIGHUP. Keyed otherwise, no bucket would match.
      const held = before?.pipeline.rateLimit?.key === r.rate_limit.key ? before.pipeline.rateLimit.limiter : undefined;
      rateLimit = {
        key: r.rate_limit.key,
        vouching,
        limiter:
          held !== undefined && isDeepStrictEqual(before?.config.rate_limit, r.rate_limit)
            ? held
            : new TokenBucketLimiter({
                rate: r.rate_limit.rate,
                burst: r.rate_limit.burst ?? Math.max(1, Math.ceil(r.rate_limit.rate)),
                maxKeys: r.rate_limit.max_keys,
                clock: deps.clock,
                from: held,
              }),
      };
    }

    const url = new URL(r.upstream.url);
    const t = r.upstream.timeouts;
    const connectTimeout = t.connect ?? gateway.timeouts.connect;
    const shape = { origin: url.origin, connections: r.upstream.connections, connectTimeout };
    poolKeys.add(UpstreamPools.key(shape));
    const upstream: CompiledUpstream = {
      dispatcher: deps.pools.get(shape),
      poolKey: UpstreamPools.key(shape),
      url,
      basePath: url.pathname.endsWith('/') ? url.pathname.slice(0, -1) : url.pathname,
      stripEnd:
        r.upstream.strip_prefix === undefined ? undefined : prefixEnd(r.upstream.strip_prefix.replace(/\/$/, ''), r.case_insensitive_paths),
      hostHeader: url.host,
      preserveHost: r.upstream.preserve_host,
      connectTimeout: connectTimeout * 1000,
      headersTimeout: (t.header ?? gateway.timeouts.header) * 1000,
      bodyTimeout: (t.idle ?? gateway.timeouts.idle) * 1000,
      ownCredential: cred.type === 'static' || cred.type === 'exchange',
    };

    const a2a = r.a2a
      ? new AgentCardSource({
          config: r.a2a,
          upstream,
          credential:
            cred.type === 'static'
              ? { header: cred.header, value: cred.scheme === '' ? cred.token : `${cred.scheme} ${cred.token}` }
              : undefined,
          clock: deps.clock,
        })
      : undefined;

    const pipeline: Pipeline = { authn, authFailures: authn.public ? undefined : authFailures, rateLimit, authz, mutators };
    routes.push({
      id: r.id,
      config: r,
      matches,
      foldGuard: r.case_insensitive_paths ? compileReach(r.match) : undefined,
      pipeline,
      authn,
      upstream,
      maxBodySize: r.max_body_size ?? gateway.limits.max_body_size,
      // An MCP route's tool rules need the JSON-RPC body, and an A2A route rewrites the extended
      // card it answers: a WebSocket tunnel would carry tool calls the gateway never reads, and a
      // card it never sees (A2A defines no WebSocket binding).
      websocket: r.websocket && r.mcp === undefined && a2a === undefined,
      a2a,
      prefix: r.match.path_prefix?.replace(/\/$/, ''),
      mcp: r.mcp === undefined ? undefined : compileMcp(config, r, deps.authorizationServer, policy, authn.challenges()),
      exchange,
    });
  }

  warnings.push(...operationsPathWarnings(gateway, scopes), ...forwardAuthPathWarnings(gateway, scopes));
  const forwardAuthPeers = peerList(gateway.forward_auth.allowed_peers, 'gateway.forward_auth.allowed_peers', found);
  const trustedProxies = peerList(gateway.trust_proxy, 'gateway.trust_proxy', found);
  const metricsPeers = peerList(gateway.operations.metrics_allowed_peers, 'gateway.operations.metrics_allowed_peers', found);
  // Accepted (a deliberate choice somewhere), but said at every start and reload: a catch-all is
  // more often a placeholder than a decision.
  warnings.push(
    ...catchAllWarnings(
      gateway.trust_proxy,
      'gateway.trust_proxy',
      "every caller is trusted as a proxy, so anyone's X-Forwarded-For, X-Forwarded-Host/-Proto and Forwarded are believed (the client address that keys rate limits and is checked against metrics_allowed_peers, the public URL DPoP proofs name); list the addresses of the proxies in front instead",
    ),
  );
  if (gateway.forward_auth.enabled)
    warnings.push(
      ...catchAllWarnings(
        gateway.forward_auth.allowed_peers,
        'gateway.forward_auth.allowed_peers',
        'anyone may call the forward-auth endpoint, whose answers carry the upstream credential; list the addresses of the proxy that calls it',
      ),
    );
  warnings.push(
    ...catchAllWarnings(
      gateway.operations.metrics_allowed_peers,
      'gateway.operations.metrics_allowed_peers',
      'anyone may read the metrics (route ids, request and refusal counts); list the addresses of the scrapers',
    ),
  );

  const auditFile = auditFileIssue(config.audit?.file);
  if (auditFile !== undefined) found.push(auditFile);
  for (const i of found) if (!issues.some((j) => j.path === i.path && j.message === i.message)) issues.push(i);
  if (issues.length > 0) throw new ConfigError(issues);

  const secret = gateway.mcp_session_secret;
  const proxySecretHeader = config.token_service?.authorization.trusted_header?.secret_header;
  const hasMcp = routes.some((r) => r.mcp !== undefined);
  if (hasMcp && secret === undefined && deps.mcpSessionKey.random)
    warnings.push(
      'MCP session ids are signed with a random key of this process: sessions end when it restarts and are refused by other gateway instances; set gateway.mcp_session_secret (e.g. "${MCP_SESSION_SECRET}") to keep and share them',
    );
  if (
    config.dpop.nonce &&
    config.dpop.mode !== 'disabled' &&
    config.dpop.nonce_secret === undefined &&
    deps.dpopNoncesRandom === true &&
    (verifiers.jwt ?? verifiers.introspection)
  )
    warnings.push(
      'DPoP nonces (dpop.nonce) are MACed with a random key of this process: another gateway instance, or this one after a restart, refuses them with 401 use_dpop_nonce and the client must retry; set dpop.nonce_secret (e.g. "${DPOP_NONCE_SECRET}") on every instance to share them',
    );
  const bound = deps.listenHost ?? config.server.host;
  const listenHost = urlHost(bound);
  if (
    listenHost === undefined &&
    config.server.public_url === undefined &&
    config.dpop.mode !== 'disabled' &&
    (verifiers.jwt ?? verifiers.introspection)
  )
    warnings.push(
      `server.host ${bound} is every address of this machine and server.public_url is not set: a DPoP proof must name the address a connection arrives at (http://<address>:<port>/…), not a name clients use for the gateway, and is refused otherwise; set server.public_url to the URL clients reach the gateway at`,
    );
  const anyVerifier = verifiers.jwt ?? verifiers.static ?? verifiers.introspection;
  const challengeOptions = {
    ...(config.realm !== undefined ? { realm: config.realm } : {}),
    ...(config.resource_metadata !== undefined ? { resourceMetadata: config.resource_metadata } : {}),
  };
  const auditSecrets: readonly string[] = Object.freeze(
    [
      ...new Set([
        ...config.static_tokens.map((t) => t.token),
        ...gateway.routes.flatMap((r) => (r.upstream.credential.type === 'static' ? [r.upstream.credential.token] : [])),
        ...(gateway.forward_auth.shared_secret !== undefined ? [gateway.forward_auth.shared_secret.value] : []),
        ...(config.introspection !== undefined ? [config.introspection.client_secret] : []),
        // MAC keys, never presented by a caller; one written into a path or tool name is still a leak.
        ...(gateway.mcp_session_secret !== undefined ? [gateway.mcp_session_secret] : []),
        ...(config.dpop.nonce_secret !== undefined ? [config.dpop.nonce_secret] : []),
      ]),
    ].filter((v) => v !== ''),
  );
  return Object.freeze({
    config,
    // Without a JWT verifier no JWT is admitted, and there are no keys to compare.
    admission: Object.freeze({ config, fileKeys: verifiers.jwt?.fileKeys ?? new Map() }),
    gateway,
    audit: config.audit,
    routes: Object.freeze(routes),
    scopes,
    hasA2a: routes.some((r) => r.a2a !== undefined),
    hasMcp,
    headerPolicy: compileHeaderPolicy(
      Object.values(gateway.identity_headers),
      // The token service's SSO proxy secret (same listener): an upstream on a trusted peer holding
      // it could sign in at /oauth2/authorize as anyone.
      [...gateway.strip_headers, ...(proxySecretHeader !== undefined ? [proxySecretHeader] : [])],
      gateway.strip_cookies,
    ),
    verifiers: Object.values(verifiers) as ManagedVerifier[],
    introspectionVerifier: verifiers.introspection,
    authFailures,
    challenges: anyVerifier ? (e?: TesseraError) => anyVerifier.challenges(e) : (e?: TesseraError) => renderChallenges(e, challengeOptions),
    forwardAuthPeers,
    forwardAuthSecret: gateway.forward_auth.shared_secret && {
      header: gateway.forward_auth.shared_secret.header,
      digest: createHash('sha256').update(gateway.forward_auth.shared_secret.value).digest(),
    },
    auditSecrets,
    auditSecretIndex: secretIndex(auditSecrets),
    vouching,
    metricsPeers,
    trustedProxies,
    publicUrl: config.server.public_url,
    publicBase: publicBaseOf(config.server.public_url),
    publicOrigin: config.server.public_url === undefined ? undefined : new URL(config.server.public_url).origin,
    listenHost,
    poolKeys,
    mcpSessionKey: secret === undefined ? deps.mcpSessionKey.key : sessionKeyFromSecret(secret),
    warnings,
  });
}

/**
 * An existing audit file that another user owns, or that users other than its owner may write to,
 * is refused: its owner, or anyone among them, could append events the gateway never wrote, or
 * truncate the trail. A new file is created mode 0600 (and a symlink in its place is refused when
 * it is opened).
 */
function auditFileIssue(file: string | undefined): ConfigIssue | undefined {
  if (file === undefined) return undefined;
  let st: Stats;
  try {
    st = lstatSync(file);
  } catch {
    return undefined;
  }
  const issue = auditFileIssueOf(st, process.geteuid?.(), file);
  if (issue === undefined) return undefined;
  return { path: 'audit.file', message: `${file} ${issue.what}: ${issue.why}; run ${issue.fix}` };
}
