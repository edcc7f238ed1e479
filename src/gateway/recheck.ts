/**
 * Deciding an exchange in flight again when a reload puts a new configuration in force: "revoked"
 * must mean revoked for an open connection too, whether a revocation or the configuration took the
 * caller's authority away.
 *
 * The exchange is decided as a new request would be, with the principal it was admitted with (its
 * token is not verified again): its credential must still be accepted (a static token by its value,
 * a JWT by its issuer still trusted with every key it had, an introspected token by the same
 * endpoint), then it must take the same route, which must still accept that kind of token (and
 * audience), and the route's rules must still allow it with the scopes the new configuration gives
 * (a static token's configured scopes, any token's scopes expanded by the new catalogue).
 *
 * @module
 */
import { hash } from 'node:crypto';
import type { TesseraConfig } from '../config/schema.ts';
import { binaryBase64url12 } from '../core/jose/base64url.ts';
import type { Principal } from '../core/verify/principal.ts';
import type { GatewayState } from './compile.ts';
import type { RpcFacts } from './pipeline/authz/authorizer.ts';
import type { GatewayRequest } from './pipeline/request.ts';
import { findRoute } from './requests.ts';
import type { StreamRecheck, TrackedStream } from './streams.ts';

/** An exchange in flight with what it was admitted for. */
export interface AdmittedStream extends TrackedStream {
  /** The configuration it was decided under (plain data, not the compiled state). */
  readonly config: TesseraConfig;
  /** The route it was decided on. */
  readonly route: { readonly id: string };
  readonly request: GatewayRequest;
  /** What an MCP route read from the body (the tool, the JSON-RPC method); `undefined` on other routes. */
  readonly rpc: RpcFacts | undefined;
}

type IssuerConfig = TesseraConfig['issuers'][number];

/** A JWK as text with its members sorted: the same key written in another order is the same key. */
function jwkText(k: Record<string, unknown>): string {
  return JSON.stringify(
    Object.keys(k)
      .sort()
      .map((m) => [m, k[m]]),
  );
}

/**
 * Whether `after` still holds every key `before` had. Which key vouched for a token is not kept,
 * so a key removed withdraws every token of the issuer; a key added withdraws nothing. A `jwks_uri`
 * is compared by its URL (the keys it publishes change without any reload), a `jwks.file` by its
 * path.
 */
function keysKept(before: IssuerConfig, after: IssuerConfig): boolean {
  if (before.jwks_uri !== after.jwks_uri) return false;
  const b = before.jwks;
  const a = after.jwks;
  if (b === undefined || a === undefined) return b === a;
  if ('file' in b || 'file' in a) return 'file' in b && 'file' in a && b.file === a.file;
  const kept = new Set(a.keys.map(jwkText));
  return b.keys.every((k) => kept.has(jwkText(k)));
}

/**
 * Why the configuration of `s` no longer allows a stream, or `undefined` when it does:
 * `credential_withdrawn` when what vouched for its token is gone (a static token removed or given
 * another value, an issuer removed or any of its keys, introspection removed or pointed at another
 * endpoint or client id), `config_narrowed` when the request is no longer allowed (its route removed
 * or taken over by another, no longer accepting the token's kind, its audience, or a WebSocket, its
 * rules no longer granting it). A stream decided under this very configuration is allowed at once.
 */
export function recheckUnder(s: GatewayState): StreamRecheck<AdmittedStream> {
  const config = s.config;
  // Made as the verifier makes a principal's tokenHash, so the two cannot drift apart. The first
  // entry of a value wins, as in the verifier.
  const statics = new Map<string, TesseraConfig['static_tokens'][number]>();
  for (const t of config.static_tokens) {
    const digest = binaryBase64url12(hash('sha256', t.token, 'binary'));
    if (!statics.has(digest)) statics.set(digest, t);
  }
  const issuers = new Map(config.issuers.map((i) => [i.issuer, i]));
  // Per issuer entry a stream was admitted under: its keys are all still there.
  const keys = new WeakMap<IssuerConfig, boolean>();

  /** Whether what vouched for a JWT or an introspected token under `before` still does. */
  const sourceKept = (before: TesseraConfig, p: Principal): boolean => {
    if (p.kind === 'introspection') {
      const b = before.introspection;
      const a = config.introspection;
      // A rotated client secret is the same client.
      return a !== undefined && b !== undefined && a.endpoint === b.endpoint && a.client_id === b.client_id;
    }
    const a = issuers.get(p.issuer);
    const b = before.issuers.find((i) => i.issuer === p.issuer);
    if (a === undefined || b === undefined) return false;
    let kept = keys.get(b);
    if (kept === undefined) {
      kept = keysKept(b, a);
      keys.set(b, kept);
    }
    return kept;
  };

  return (stream) => {
    // The hot path: every exchange is checked when it starts being watched.
    if (stream.config === config) return undefined;
    const p = stream.principal;
    let granted: readonly string[] = [];
    if (p !== undefined) {
      if (p.kind === 'static') {
        const t = statics.get(p.tokenHash);
        if (t === undefined) return 'credential_withdrawn';
        granted = t.scopes;
      } else if (!sourceKept(stream.config, p)) return 'credential_withdrawn';
      else granted = p.scopes;
    }
    const request = stream.request;
    const route = findRoute(s, request.host, request.path, request.method);
    if (route === undefined || route.id !== stream.route.id || (stream.kind === 'websocket' && !route.websocket)) return 'config_narrowed';
    if (route.authn.public) return undefined;
    if (p === undefined || !route.config.auth.includes(p.kind)) return 'config_narrowed';
    const audience = route.config.audience;
    if (audience !== undefined && p.kind !== 'static' && !p.audience.includes(audience)) return 'config_narrowed';
    // The principal as this configuration would make it (a spread copy: tokenHash is an accessor).
    const now: Principal = { ...p, tokenHash: p.tokenHash, scopes: granted, effectiveScopes: s.scopes.expand(granted) };
    return route.pipeline.authz.authorize(request, now, stream.rpc).ok ? undefined : 'config_narrowed';
  };
}
