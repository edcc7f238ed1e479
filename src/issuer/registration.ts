/**
 * RFC 7591 dynamic client registration, as MCP clients use it: a client describes itself (redirect
 * URIs, name, auth method, grant types, scope) and gets a `client_id` (and, for a confidential
 * client, a secret shown once and stored as a keyed hash). What it may become is bounded by the
 * configuration, never by what it asks for: the authorization code and refresh token grants only,
 * scopes within `registration.scopes`, audiences exactly `registration.audiences`, redirect URIs
 * https or loopback http. Gated by an initial access token unless explicitly `open`.
 *
 * @module
 */
import { hash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ResolvedTokenServiceConfig } from '../config/token-service-schema.ts';
import { OAuthError } from '../core/oauth-errors.ts';
import { addressKey } from '../core/ratelimit.ts';
import { isWildcard } from '../core/scopes.ts';
import { StoreCapacityError } from '../store/contract.ts';
import { type ClientAdminContext, registerClient } from './client-admin.ts';
import { ClientInputError, DYNAMIC_CLIENT_ID_PREFIX, isClientName, MAX_ALLOWED_ORIGINS, SCOPE_TOKEN } from './clients.ts';
import { allowedOriginProblem, redirectUriProblem } from './redirect-uris.ts';

export interface RegistrationContext extends ClientAdminContext {
  readonly config: ClientAdminContext['config'] & Pick<ResolvedTokenServiceConfig, 'registration'>;
}

/** The RFC 7591 §3.2.1 response. */
export interface RegistrationResponse {
  readonly client_id: string;
  readonly client_secret?: string;
  readonly client_id_issued_at: number;
  readonly client_secret_expires_at?: 0;
  readonly client_name?: string;
  readonly redirect_uris: readonly string[];
  readonly grant_types: readonly string[];
  readonly response_types: readonly string[];
  readonly token_endpoint_auth_method: string;
  readonly scope?: string;
  /** Origins whose pages may call the token and revocation endpoints as the client (Ory Hydra's extension). */
  readonly allowed_cors_origins?: readonly string[];
  /** RFC 9449 §5.2: every token request of the client must carry a DPoP proof. */
  readonly dpop_bound_access_tokens: boolean;
}

const AUTH_METHODS = new Set(['none', 'client_secret_basic', 'client_secret_post']);
const GRANTS = new Set(['authorization_code', 'refresh_token']);

/**
 * Who registers, for the registration rate limit: an IPv4 address, or the /64 of an IPv6 address
 * (see {@link addressKey}: counted by address, a host holding a /64 would register without limit).
 */
export const registrantKey: (address: string | undefined) => string = addressKey;

/** Constant-time check of `Authorization: Bearer <initial access token>`. */
function checkInitialToken(authorization: string | undefined, expected: string): boolean {
  const m = authorization === undefined ? null : /^bearer +([\x21-\x7e]+) *$/i.exec(authorization);
  const given = hash('sha256', m?.[1] ?? '', 'buffer');
  // Digests are equal in length whatever was sent, so the comparison's time says nothing.
  return timingSafeEqual(given, hash('sha256', expected, 'buffer')) && m !== null;
}

function stringArray(v: unknown): string[] | undefined {
  return Array.isArray(v) && v.every((x) => typeof x === 'string') ? (v as string[]) : undefined;
}

/**
 * Register a client from RFC 7591 metadata (already parsed JSON).
 * @throws {OAuthError} `registration_token_missing` or `registration_token_invalid` (401), `registration_metadata_invalid` or
 *   `registration_redirect_uri_invalid` (400), `registration_capacity_reached` (503: as many
 *   dynamically registered clients as `registration.max_clients` exist).
 */
export async function registerDynamicClient(
  ctx: RegistrationContext,
  metadata: unknown,
  authorization: string | undefined,
): Promise<RegistrationResponse> {
  const cfg = ctx.config.registration;
  if (!cfg.open && (cfg.initial_access_token === undefined || !checkInitialToken(authorization, cfg.initial_access_token))) {
    throw new OAuthError(authorization === undefined ? 'registration_token_missing' : 'registration_token_invalid');
  }
  if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) throw new OAuthError('registration_metadata_invalid');
  const m = metadata as Record<string, unknown>;
  // RFC 7591 §2: `jwks` and `jwks_uri` MUST NOT both be present. Tessera registers neither (no
  // private_key_jwt here), but a request carrying both is malformed, not one to ignore.
  if (Object.hasOwn(m, 'jwks') && Object.hasOwn(m, 'jwks_uri')) throw new OAuthError('registration_metadata_invalid');

  const redirectUris = stringArray(m.redirect_uris);
  if (redirectUris === undefined || redirectUris.length === 0 || redirectUris.length > 10) {
    throw new OAuthError('registration_redirect_uri_invalid');
  }
  for (const uri of redirectUris) if (redirectUriProblem(uri) !== undefined) throw new OAuthError('registration_redirect_uri_invalid');

  // RFC 7591 §2: the default method is client_secret_basic; MCP clients ask for none.
  const method = m.token_endpoint_auth_method ?? 'client_secret_basic';
  if (typeof method !== 'string' || !AUTH_METHODS.has(method)) throw new OAuthError('registration_metadata_invalid');
  const grantTypes = m.grant_types === undefined ? ['authorization_code'] : stringArray(m.grant_types);
  if (
    grantTypes === undefined ||
    grantTypes.length === 0 ||
    !grantTypes.every((g) => GRANTS.has(g)) ||
    !grantTypes.includes('authorization_code')
  ) {
    throw new OAuthError('registration_metadata_invalid');
  }
  const responseTypes = m.response_types === undefined ? ['code'] : stringArray(m.response_types);
  if (responseTypes === undefined || responseTypes.length !== 1 || responseTypes[0] !== 'code') {
    throw new OAuthError('registration_metadata_invalid');
  }
  const name = m.client_name;
  if (name !== undefined && (typeof name !== 'string' || !isClientName(name))) {
    throw new OAuthError('registration_metadata_invalid');
  }
  // Ory Hydra's client metadata extension: the browser origins the client's pages are served from.
  const allowedOrigins = m.allowed_cors_origins === undefined ? [] : stringArray(m.allowed_cors_origins);
  if (
    allowedOrigins === undefined ||
    allowedOrigins.length > MAX_ALLOWED_ORIGINS ||
    allowedOrigins.some((o) => allowedOriginProblem(o) !== undefined)
  ) {
    throw new OAuthError('registration_metadata_invalid');
  }

  // RFC 9449 §5.2: a JSON boolean, false when absent. A string "true" or a null is refused rather
  // than read one way or the other: the client would believe itself bound, or not, wrongly.
  const dpopBound = m.dpop_bound_access_tokens === undefined ? false : m.dpop_bound_access_tokens;
  if (typeof dpopBound !== 'boolean') throw new OAuthError('registration_metadata_invalid');

  // Scopes: the client is registered with the whole configured maximum, whatever it asks for
  // (RFC 7591 §3.2.1: the server may replace requested values; the answer says what it
  // registered). MCP clients register with the scope of the resource's first challenge and step up
  // to a tool's scope later (MCP authorization, Scope Selection Strategy): a registration narrowed
  // to what was asked would leave them unable to, short of registering again, which anyone may do
  // with the maximum anyway. Each token is still limited to what its request asks for and the
  // person approves. Malformed or wildcard scopes are refused as metadata errors.
  if (m.scope !== undefined) {
    if (typeof m.scope !== 'string') throw new OAuthError('registration_metadata_invalid');
    const asked = m.scope.split(' ').filter((s) => s !== '');
    if (asked.some((s) => !SCOPE_TOKEN.test(s) || isWildcard(s))) throw new OAuthError('registration_metadata_invalid');
  }
  const scopes = [...cfg.scopes];

  const id = `${DYNAMIC_CLIENT_ID_PREFIX}${randomBytes(16).toString('base64url')}`;
  let registered: Awaited<ReturnType<typeof registerClient>>;
  try {
    registered = await registerClient(
      ctx,
      {
        id,
        scopes,
        audiences: cfg.audiences,
        grantTypes: [...new Set(grantTypes)],
        redirectUris,
        public: method === 'none',
        ...(method !== 'none' ? { secretMethod: method as 'client_secret_basic' | 'client_secret_post' } : {}),
        ...(typeof name === 'string' ? { name } : {}),
        ...(allowedOrigins.length > 0 ? { allowedOrigins } : {}),
        ...(dpopBound ? { dpopBound: true } : {}),
      },
      { registered: 'dynamic' },
      { idPrefix: DYNAMIC_CLIENT_ID_PREFIX, max: cfg.max_clients },
    );
  } catch (e) {
    // The input was checked above; what is left (a scope outside the catalogue) is the client's.
    if (e instanceof ClientInputError) throw new OAuthError('registration_metadata_invalid');
    if (e instanceof StoreCapacityError) throw new OAuthError('registration_capacity_reached', { cause: e });
    throw e;
  }
  const { client, secret } = registered;
  return {
    client_id: client.id,
    ...(secret !== undefined ? { client_secret: secret, client_secret_expires_at: 0 as const } : {}),
    client_id_issued_at: client.record.createdAt,
    ...(client.record.name !== null ? { client_name: client.record.name } : {}),
    redirect_uris: client.record.redirectUris,
    grant_types: client.record.grantTypes,
    response_types: ['code'],
    // What was registered, and is enforced: the method asked for.
    token_endpoint_auth_method: client.record.secretMethod ?? client.record.authMethod,
    ...(client.record.scopes.length > 0 ? { scope: client.record.scopes.join(' ') } : {}),
    ...(client.record.allowedOrigins.length > 0 ? { allowed_cors_origins: client.record.allowedOrigins } : {}),
    dpop_bound_access_tokens: client.record.dpopBoundAccessTokens,
  };
}
