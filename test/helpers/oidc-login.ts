/**
 * A token service that signs people in at an upstream OpenID Connect provider
 * (`token_service.authorization.oidc`), for the login tests: {@link startLoginIssuer}, with the
 * public client `mcp-app` registered (api:read at {@link API}, redirect URI {@link REDIRECT}).
 */
import assert from 'node:assert/strict';
import type { AuditEventsDropped } from '../../src/audit/pipeline.ts';
import type { MasterKey } from '../../src/issuer/secrets.ts';
import type { Store } from '../../src/store/contract.ts';
import { authorizationRequest } from './authorize.ts';
import { type RunningIssuer, startIssuer } from './issuer.ts';
import { type Browser, UPSTREAM_CLIENT, UPSTREAM_SECRET } from './oidc-upstream.ts';
import { pkcePair } from './pkce.ts';

/** The redirect URI of the registered client `mcp-app`. */
export const REDIRECT = 'http://127.0.0.1:7777/callback';
/** The audience `mcp-app` may ask for. */
export const API = 'https://api.test';

/** `token_service.authorization` signing in at `upstream` as {@link UPSTREAM_CLIENT}, with `extra` in its `oidc`. */
export function oidcConfig(upstream: string, extra: Record<string, unknown> = {}) {
  return { enabled: true, oidc: { issuer: upstream, client_id: UPSTREAM_CLIENT, client_secret: UPSTREAM_SECRET, ...extra } };
}

/**
 * A running issuer signing people in at `upstream` (`oidc` added to its `oidc` settings; `audit`
 * as the configuration's `audit`, `tokenService` added to its `token_service`; `clock`, `master`,
 * `store`, `onWarning` and `onAuditEventsDropped` as {@link startIssuer} takes them), `mcp-app`
 * registered.
 */
export async function startLoginIssuer(
  upstream: string,
  options: {
    readonly oidc?: Record<string, unknown>;
    readonly audit?: Record<string, unknown>;
    readonly tokenService?: Record<string, unknown>;
    readonly clock?: () => number;
    readonly master?: MasterKey;
    readonly store?: Store;
    readonly onWarning?: (message: string) => void;
    readonly onAuditEventsDropped?: (dropped: AuditEventsDropped) => void;
  } = {},
): Promise<RunningIssuer> {
  const { oidc, audit, tokenService, ...rest } = options;
  const issuer = await startIssuer({
    ...rest,
    config: {
      ...(audit !== undefined ? { audit } : {}),
      token_service: { ...tokenService, authorization: oidcConfig(upstream, oidc) },
    } as never,
  });
  await issuer.service.registerClient({
    id: 'mcp-app',
    public: true,
    name: 'MCP App',
    scopes: ['api:read'],
    audiences: [API],
    redirectUris: [REDIRECT],
  });
  return issuer;
}

/**
 * A login of `mcp-app` begun at `issuer` in `browser` (the authorization request redirected to
 * the upstream, its state cookie set): the upstream authorization request's parameters.
 */
export async function beginLogin(issuer: RunningIssuer, browser: Browser): Promise<URLSearchParams> {
  const url = authorizationRequest(`${issuer.url}/oauth2/authorize`, {
    redirect_uri: REDIRECT,
    code_challenge: pkcePair().challenge,
    resource: API,
    state: 'client-state',
  });
  const res = await browser.fetch(url);
  assert.equal(res.status, 303, await res.clone().text());
  return new URL(res.headers.get('location') as string).searchParams;
}

/** The login callback at `issuer` answering the login of `state` with the upstream's `code`. */
export function loginCallbackUrl(issuer: RunningIssuer, state: string, code = 'upstream-code-1'): string {
  return `${issuer.url}/oauth2/login/callback?${new URLSearchParams({ code, state })}`;
}
