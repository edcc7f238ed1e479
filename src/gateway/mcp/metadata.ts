/**
 * RFC 9728 OAuth 2.0 Protected Resource Metadata for MCP routes, and the URL MCP clients find it
 * at: the 401 challenge's `resource_metadata` (MCP authorization, RFC 9728 §5.1) and the
 * well-known URI (§3.1: `/.well-known/oauth-protected-resource` inserted between the host and the
 * resource's path).
 *
 * @module
 */

export const METADATA_PATH = '/.well-known/oauth-protected-resource';

/** What an MCP route advertises, compiled from its `mcp` block. */
export interface McpAdvertisement {
  /** Configured `resource`, or `undefined` to derive it from the gateway's base URL and the route prefix. */
  readonly resource: string | undefined;
  /** The route's path prefix without trailing slash (`''` for the root). */
  readonly prefix: string;
  /**
   * The path after `/.well-known/oauth-protected-resource` where the document is served (RFC 9728
   * §3.1): the configured `resource`'s path, else the path of `server.public_url` followed by the
   * prefix; without trailing slash.
   */
  readonly metadataPath: string;
  /** Issuers of the authorization servers (none: the field is left out). */
  readonly authorizationServers: readonly string[];
  readonly scopesSupported: readonly string[];
  /**
   * DPoP as the route takes it (RFC 9728 §2): the proof algorithms (`undefined`: no DPoP), and
   * whether a bearer token is refused (`dpop.mode: required`), which a client must know before it
   * asks for a token.
   */
  readonly dpop?: { readonly algorithms: readonly string[]; readonly required: boolean } | undefined;
}

/** `server.public_url` in normal form (lower-case host, no default port), without trailing slash. */
export function publicBaseOf(publicUrl: string | undefined): string | undefined {
  if (publicUrl === undefined) return undefined;
  const u = new URL(publicUrl);
  return u.origin + u.pathname.replace(/\/$/, '');
}

/**
 * The resource identifier for a request arriving at `base`: `server.public_url` without its
 * trailing slash (`https://example.com/tessera`), else the request's origin (`https://host[:port]`).
 */
export function resourceOf(ad: Pick<McpAdvertisement, 'resource' | 'prefix'>, base: string): string {
  return ad.resource ?? `${base}${ad.prefix === '' ? '/' : ad.prefix}`;
}

/** The path a resource's metadata URL appends to the well-known prefix: its path, without trailing slash. */
export function metadataPathOf(resource: string): string {
  const u = new URL(resource);
  return u.pathname === '/' ? '' : u.pathname.replace(/\/$/, '');
}

/** The metadata URL of `resource` (RFC 9728 §3.1). */
export function metadataUrlOf(resource: string): string {
  return `${new URL(resource).origin}${METADATA_PATH}${metadataPathOf(resource)}`;
}

/** The metadata document (RFC 9728 §2). */
export function metadataDocument(ad: McpAdvertisement, base: string): Record<string, unknown> {
  return {
    resource: resourceOf(ad, base),
    ...(ad.authorizationServers.length > 0 ? { authorization_servers: ad.authorizationServers } : {}),
    scopes_supported: ad.scopesSupported,
    bearer_methods_supported: ['header'],
    ...(ad.dpop !== undefined ? { dpop_signing_alg_values_supported: ad.dpop.algorithms } : {}),
    ...(ad.dpop?.required ? { dpop_bound_access_tokens_required: true } : {}),
  };
}
