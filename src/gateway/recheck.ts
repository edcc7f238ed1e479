/**
 * Deciding an exchange in flight again when a reload puts a new configuration in force: "revoked"
 * must mean revoked for an open connection too, whether a revocation or the configuration took the
 * caller's authority away.
 *
 * The exchange is decided as a new request would be, with the principal it was admitted with (its
 * token is not verified again): its credential must still be accepted (a static token by its value,
 * a JWT by its issuer still trusted with every key it had and settings no narrower, an introspected
 * token by the same endpoint with settings no narrower, the token no longer than `max_token_size`),
 * then the way it was presented (a query token, DPoP or bearer), then it must take the same route
 * (its host and URL read again, as `trust_proxy` and `public_url` now say), which must still accept
 * that kind of token (and audience), and the route's rules must still allow it with the scopes the
 * new configuration gives (a static token's configured scopes, any token's scopes expanded by the
 * new catalogue); the MCP session it presented must still open for its caller under the session key
 * now in force.
 *
 * @module
 */
import type { IncomingMessage } from 'node:http';
import type { TesseraConfig } from '../config/schema.ts';
import { TesseraError } from '../core/errors.ts';
import { htuOf } from '../core/verify/dpop.ts';
import { extractTokenDeferred } from '../core/verify/extract.ts';
import type { Principal } from '../core/verify/principal.ts';
import { TokenDigest } from '../core/verify/token-digest.ts';
import type { Admission, GatewayState } from './compile.ts';
import { openSession } from './mcp/sessions.ts';
import type { RpcFacts } from './pipeline/authz/authorizer.ts';
import type { GatewayRequest } from './pipeline/request.ts';
import { absoluteUrl, findRoute, hostHeaderValid, requestHost } from './requests.ts';
import type { StreamCloseReason, StreamRecheck, TrackedStream } from './streams.ts';

/** An exchange in flight with what it was admitted for. */
export interface AdmittedStream extends TrackedStream {
  /** What it was decided under (plain data, not the compiled state). */
  readonly admission: Admission;
  /** The route it was decided on. */
  readonly route: { readonly id: string };
  readonly request: GatewayRequest;
  /** What an MCP route read from the body (the tool, the JSON-RPC method); `undefined` on other routes. */
  readonly rpc: RpcFacts | undefined;
  /** The `Mcp-Session-Id` an MCP request presented (`S.<mac>`), its MAC checked then; `undefined` without one. */
  readonly session: string | undefined;
  /** The caller's request: its host and URL are read from its connection and headers again. */
  readonly req: IncomingMessage;
}

type IssuerConfig = TesseraConfig['issuers'][number];
type IntrospectionConfig = NonNullable<TesseraConfig['introspection']>;

/** A JWK as text with its members sorted: the same key written in another order is the same key. */
function jwkText(k: Record<string, unknown>): string {
  return JSON.stringify(
    Object.keys(k)
      .sort()
      .map((m) => [m, k[m]]),
  );
}

/** Settings as text with object members sorted: the same settings written in another order are equal. */
function settingsText(v: unknown): string {
  return JSON.stringify(v, (_, x: unknown) =>
    x !== null && typeof x === 'object' && !Array.isArray(x)
      ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : x,
  );
}

/**
 * Per setting, whether changing it from `before` to `after` can only widen what is accepted. A
 * setting without an entry must stay equal: one added to the schema later cuts the streams its
 * change could refuse until it is given an entry here.
 */
type Widenings<T> = { readonly [K in keyof T]?: (before: T[K], after: T[K]) => boolean };

const always = () => true;
const superset = <T>(before: readonly T[], after: readonly T[]) => before.every((x) => after.includes(x));
const notLess = (before: number, after: number) => after >= before;
/** `typ` as the verifier compares it (RFC 9068 §4: case and an `application/` prefix ignored). */
const typOf = (t: string | undefined) => t?.toLowerCase().replace(/^application\//, '');

function widensOnly<T extends object>(before: T, after: T, widenings: Widenings<T>): boolean {
  for (const k of new Set([...Object.keys(before), ...Object.keys(after)]) as Set<keyof T & string>) {
    const widens = widenings[k];
    if (widens === undefined ? settingsText(before[k]) !== settingsText(after[k]) : !widens(before[k], after[k])) return false;
  }
  return true;
}

const ISSUER_WIDENINGS: Widenings<IssuerConfig> = {
  // The entry's name (matched already) and its keys (keysKept).
  issuer: always,
  jwks: always,
  jwks_uri: always,
  // When a remote key set is fetched, not which tokens its keys accept.
  jwks_cache: always,
  audiences: superset,
  algorithms: superset,
  required_claims: (before, after) => superset(after, before),
  token_type: (before, after) => after === undefined || typOf(after) === typOf(before),
  clock_skew: notLess,
  max_lifetime: notLess,
};

const INTROSPECTION_WIDENINGS: Widenings<IntrospectionConfig> = {
  // A rotated secret is the same client; how long answers are waited for and cached decides no token.
  client_secret: always,
  timeout: always,
  cache_max_ttl: always,
  // Whose the subject is (`subject_issuer`), not whether a token is accepted: the identity headers
  // and the rate limit of an exchange in flight were decided when it began.
  trust_sub_id: always,
  // Unset: any audience.
  audiences: (before, after) => after === undefined || (before !== undefined && superset(before, after)),
};

/** For a DPoP-bound token presented with its proof (a bearer one is refused only by `required`). */
const BOUND_WIDENINGS: Widenings<TesseraConfig['dpop']> = {
  mode: (_, after) => after !== 'disabled',
  algorithms: superset,
  iat_window: notLess,
  nonce: (before, after) => before || !after,
  // How many proofs are remembered against replay, and which nonces a new proof may name: an
  // exchange in flight presents none again.
  replay_cache_size: always,
  nonce_secret: always,
};

const TRANSPORT_WIDENINGS: Widenings<TesseraConfig['transport']> = {
  query: (before, after) => after || !before,
  // The gateway reads no token from a body.
  form_body: always,
};

/**
 * Whether `after` still holds every key `before` had. Which key vouched for a token is not kept,
 * so a key removed withdraws every token of the issuer; a key added withdraws nothing. A `jwks_uri`
 * is compared by its URL (the keys it publishes change without any reload), a `jwks.file` by the
 * keys read from it (by its path when the verifier does not report them).
 */
function keysKept(before: IssuerConfig, after: IssuerConfig, was: Admission, now: Admission): boolean {
  if (before.jwks_uri !== after.jwks_uri) return false;
  const b = before.jwks;
  const a = after.jwks;
  if (b === undefined || a === undefined) return b === a;
  if ('file' in b || 'file' in a) {
    if (!('file' in b && 'file' in a)) return false;
    const read = was.fileKeys.get(before.issuer);
    const reading = now.fileKeys.get(after.issuer);
    if (read === undefined || reading === undefined) return b.file === a.file;
    for (const k of read) if (!reading.has(k)) return false;
    return true;
  }
  const kept = new Set(a.keys.map(jwkText));
  return b.keys.every((k) => kept.has(jwkText(k)));
}

/** What a configuration streams were decided under shares with the one in force, worked out once for it. */
interface Kept {
  /** Whether the entry of the issuer `name` still accepts every token it accepted. */
  issuer(name: string): boolean;
  /** Introspection is configured and accepts every token it accepted. */
  readonly introspection: boolean;
  /** A DPoP-bound token and its proof are accepted as they were. */
  readonly bound: boolean;
  /** Query tokens are accepted if they were, and `max_token_size` was not lowered. */
  readonly presentation: boolean;
}

function kept(was: Admission, now: Admission): Kept {
  const before = was.config;
  const config = now.config;
  const b = before.introspection;
  const a = config.introspection;
  const issuers = new Map<string, boolean>();
  return {
    issuer(name) {
      let k = issuers.get(name);
      if (k === undefined) {
        const i = before.issuers.find((x) => x.issuer === name);
        const j = config.issuers.find((x) => x.issuer === name);
        k = i !== undefined && j !== undefined && keysKept(i, j, was, now) && widensOnly(i, j, ISSUER_WIDENINGS);
        issuers.set(name, k);
      }
      return k;
    },
    introspection: a !== undefined && b !== undefined && widensOnly(b, a, INTROSPECTION_WIDENINGS),
    bound: widensOnly(before.dpop, config.dpop, BOUND_WIDENINGS),
    presentation:
      widensOnly(before.transport, config.transport, TRANSPORT_WIDENINGS) && notLess(before.max_token_size, config.max_token_size),
  };
}

/**
 * Why `config` refuses the token as `request` presented it: in the query with query tokens off
 * (`config_narrowed`), longer than `max_token_size` (`credential_withdrawn`).
 */
function presentation(config: TesseraConfig, request: GatewayRequest): StreamCloseReason | undefined {
  const found = extractTokenDeferred(request, { formBody: false, query: config.transport.query });
  if (found instanceof TesseraError) return 'config_narrowed';
  return found.token.length > config.max_token_size ? 'credential_withdrawn' : undefined;
}

/**
 * Why the configuration of `s` no longer allows a stream, or `undefined` when it does:
 * `credential_withdrawn` when what vouched for its token is gone or narrowed (a static token removed
 * or given another value, an issuer removed, any of its keys, or a setting of it narrowed,
 * introspection removed, pointed at another endpoint or client id or a setting of it narrowed, a
 * token now too long), `config_narrowed` when the request is no longer allowed (its token's way in
 * turned off: a query token, a bearer token under DPoP `required`, a bound token under DPoP
 * narrowed or whose proof named a URL the gateway now reads otherwise; its route removed or taken
 * over by another, no longer accepting the token's kind, its audience, or a WebSocket, its rules no
 * longer granting it). A stream decided under this very state is allowed at once.
 */
export function recheckUnder(s: GatewayState): StreamRecheck<AdmittedStream> {
  const config = s.config;
  const admission = s.admission;
  // By the verifier's own tokenHash (TokenDigest.short). The first entry of a value wins, as in
  // the verifier.
  const statics = new Map<string, TesseraConfig['static_tokens'][number]>();
  for (const t of config.static_tokens) {
    const digest = new TokenDigest(t.token).short;
    if (!statics.has(digest)) statics.set(digest, t);
  }
  const since = new WeakMap<Admission, Kept>();

  return (stream) => {
    // The hot path: every exchange is checked when it starts being watched.
    if (stream.admission === admission) return undefined;
    let k = since.get(stream.admission);
    if (k === undefined) {
      k = kept(stream.admission, admission);
      since.set(stream.admission, k);
    }
    const p = stream.principal;
    let granted: readonly string[] = [];
    if (p !== undefined) {
      if (p.kind === 'static') {
        const t = statics.get(p.tokenHash);
        if (t === undefined) return 'credential_withdrawn';
        granted = t.scopes;
      } else if (!(p.kind === 'introspection' ? k.introspection : k.issuer(p.issuer))) return 'credential_withdrawn';
      else granted = p.scopes;
    }
    // The host and URL as this configuration reads them (`trust_proxy`, `public_url`).
    const req = stream.req;
    if (!hostHeaderValid(s, req)) return 'config_narrowed';
    const admitted = stream.request;
    const host = requestHost(s, req);
    const url = absoluteUrl(s, req);
    const request = host === admitted.host && url === admitted.url ? admitted : { ...admitted, host, url };
    if (p !== undefined) {
      if (!k.presentation) {
        const refused = presentation(config, admitted);
        if (refused !== undefined) return refused;
      }
      if (p.confirmation === undefined) {
        // A bearer presentation (a bound token presented as bearer is never admitted).
        if (config.dpop.mode === 'required') return 'config_narrowed';
      } else if (!k.bound || htuOf(url) !== htuOf(admitted.url)) {
        // DPoP narrowed, or the proof named the URL as the gateway read it then (RFC 9449 §4.3 htu).
        return 'config_narrowed';
      }
    }
    const route = findRoute(s, host, request.path, request.method);
    if (route === undefined || route === 'path_invalid') return 'config_narrowed';
    if (route.id !== stream.route.id || (stream.kind === 'websocket' && !route.websocket)) return 'config_narrowed';
    if (route.authn.public) return undefined;
    if (p === undefined || !route.config.auth.includes(p.kind)) return 'config_narrowed';
    const audience = route.config.audience;
    if (audience !== undefined && p.kind !== 'static' && !p.audience.includes(audience)) return 'config_narrowed';
    // The principal as this configuration would make it (a spread copy: tokenHash is an accessor).
    const now: Principal = { ...p, tokenHash: p.tokenHash, scopes: granted, effectiveScopes: s.scopes.expand(granted) };
    if (!route.pipeline.authz.authorize(request, now, stream.rpc).ok) return 'config_narrowed';
    // The session it runs in must still open for its caller: a changed session key (a rotated
    // `mcp_session_secret`) ends every session signed under the old one, open streams included.
    if (stream.session !== undefined && !openSession(s.mcpSessionKey, route.id, stream.session, now).ok) return 'config_narrowed';
    return undefined;
  };
}
