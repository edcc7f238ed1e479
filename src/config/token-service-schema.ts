/**
 * Configuration of the token service (authorization server) and its store: the single source of
 * their defaults, validation and docs. The top-level schema (`schema.ts`) imports both.
 *
 * @module
 */
import { isAbsolute, join } from 'node:path';
import { z } from 'zod';
import { type ConfigIssue, quoted } from '../core/errors.ts';
import { peerList } from '../core/peers.ts';
import { isWildcard } from '../core/scopes.ts';
import { always, type Trusted, trusted } from './cross-check.ts';
import { DAY, DECADE, YEAR } from './duration.ts';
import { listenerLimitsSchema } from './listener-schema.ts';
import { tokenServiceOperationsSchema } from './operations-schema.ts';
import { SIGNING_ALGORITHMS } from './signing-algorithms.ts';
import { duration, filePath, secureUrl } from './verifier-schema.ts';

export { SIGNING_ALGORITHMS, type SigningAlgorithm } from './signing-algorithms.ts';

/** Longest an upstream-OIDC login session may last (`authorization.oidc.session_ttl`), seconds. */
export const LOGIN_SESSION_TTL_MAX = 3600;
/**
 * `authorization.oidc.return_window`, seconds: how long after a sign-in the authorization request
 * it was made for is answered by it, once (its default, also for an authenticator plugged in
 * without `oidc`, and its maximum).
 */
export const LOGIN_RETURN_WINDOW_DEFAULT = 60;
export const LOGIN_RETURN_WINDOW_MAX = 600;
const keysSchema = z
  .strictObject({
    algorithm: z
      .enum(SIGNING_ALGORITHMS, {
        error: (i) => `${quoted(i.input)} cannot be generated; use one of ${SIGNING_ALGORITHMS.join(', ')}`,
      })
      .default('ES256')
      .meta({ description: 'Algorithm of newly generated signing keys: ES256 (default), EdDSA (Ed25519) or RS256 (3072-bit).' }),
    publish_ahead: duration(
      'How long a new key is published in the JWKS before it signs, so every verifier has fetched it first. At least `jwks_max_age`.',
      30 * DAY,
    ).prefault('1h'),
    jwks_max_age: duration('`Cache-Control: max-age` of the JWKS response: how long verifiers may cache the key set.', 30 * DAY).prefault(
      '10m',
    ),
    rotation_interval: duration(
      'When set, a running server pre-publishes a new key once the active key is this old (otherwise rotate with `tessera keys rotate`).',
      DECADE,
    ).optional(),
  })
  .prefault({})
  .meta({ description: 'Signing keys: algorithm and rotation schedule.' });

/**
 * The `rate` and `burst` of a token bucket (registration, revocation, token requests): `one` and
 * `many` name a request, `per` what a bucket belongs to. The slowest rate refills one token a day,
 * so a refused caller is never told to wait longer.
 */
function bucketFields(o: { one: string; many: string; per: string; rate: number; burst: number }) {
  return {
    rate: z
      .number()
      .min(0.0000116, `write at least 0.0000116, about one ${o.one} a day (a refused client is told to wait at most a day)`)
      .default(o.rate)
      .meta({ description: `${o.many} per second one ${o.per} may make, sustained; at least 0.0000116, about one a day.` }),
    burst: z
      .number()
      .int()
      .min(1)
      .default(o.burst)
      .meta({ description: `${o.many} one ${o.per} may make at once.` }),
  };
}

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const headerName = (description: string) =>
  z
    .string()
    .regex(HEADER_NAME, 'not a valid HTTP header name')
    .transform((v) => v.toLowerCase())
    .meta({ description });

const trustedHeaderSchema = z
  .strictObject({
    user_header: headerName('Header naming the signed-in person (oauth2-proxy: `X-Forwarded-User`).').prefault('x-forwarded-user'),
    email_header: headerName(
      'Header carrying their e-mail address (oauth2-proxy: `X-Forwarded-Email`), shown on the consent page.',
    ).prefault('x-forwarded-email'),
    subject_from: z
      .enum(['user', 'email'], { error: (i) => `${quoted(i.input)} is not a header to take the subject from; write user or email` })
      .default('user')
      .meta({ description: "Which header becomes the grant's subject (`sub` of the tokens): `user` or `email`." }),
    allowed_peers: z
      .array(z.string().min(1))
      .min(1, 'name the address(es) of the proxy in front (an IP or CIDR); no one else may send these headers')
      .default(['127.0.0.1', '::1'])
      .meta({
        description: 'Addresses or CIDRs of the SSO proxy. A request from anywhere else is not signed in, whatever its headers say.',
      }),
    secret_header: headerName('Header the proxy adds with the shared secret.').prefault('x-tessera-proxy-secret'),
    secret: z
      .string()
      .min(32, 'use at least 32 random characters, normally `${TESSERA_PROXY_SECRET}` from the environment')
      .meta({ description: 'The shared secret (compared in constant time), normally `${TESSERA_PROXY_SECRET}` from the environment.' }),
  })
  .meta({
    description:
      'Who the person is, as told by the SSO proxy in front (oauth2-proxy, Pomerium, an ingress with auth): trusted only from `allowed_peers` and with the shared secret. The proxy must strip these headers from what clients send.',
  });

const OIDC_SCOPE = /^[\x21\x23-\x5b\x5d-\x7e]+$/;

const oidcSchema = z
  .strictObject({
    issuer: secureUrl(
      'Issuer identifier of the upstream OpenID Connect provider; its endpoints come from `<issuer>/.well-known/openid-configuration`, whose `issuer` must equal this exactly.',
    ),
    client_id: z.string().min(1).meta({ description: 'Client id Tessera is registered under at the upstream provider.' }),
    client_secret: z.string().min(1, 'give the client secret, normally `${TESSERA_OIDC_CLIENT_SECRET}` from the environment').meta({
      description: 'Its client secret (sent with client_secret_basic), normally `${TESSERA_OIDC_CLIENT_SECRET}` from the environment.',
    }),
    scopes: z
      .array(z.string().regex(OIDC_SCOPE, 'not a valid scope token'))
      .default(['openid', 'email', 'profile'])
      .refine((v) => v.includes('openid'), { message: 'include openid: without it the provider returns no ID token' })
      .meta({ description: 'Scopes requested from the upstream provider (must include `openid`).' }),
    subject_claim: z
      .enum(['sub', 'email'], { error: (i) => `${quoted(i.input)} is not a claim to take the subject from; write sub or email` })
      .default('sub')
      .meta({
        description:
          "Which ID token claim becomes the grant's subject (`sub` of the tokens): `sub` (stable, the default) or `email` (then `email_verified` must be true).",
      }),
    allowed_domains: z
      .array(
        z
          .string()
          .regex(/^[a-z0-9.-]+\.[a-z0-9-]+$/i, 'write a bare domain such as example.com')
          .transform((v) => v.toLowerCase()),
      )
      .min(1, 'name at least one domain, or leave allowed_domains out to accept everyone the provider signs in')
      .optional()
      .meta({
        description:
          "Only people whose verified `email` is at one of these domains may sign in (exact match of the part after '@'). Everyone the provider signs in when absent.",
      }),
    session_ttl: duration(
      'How long the login session cookie lasts after signing in upstream (authorization requests in that time skip the upstream login).',
      LOGIN_SESSION_TTL_MAX,
    ).prefault('10m'),
    login_ttl: duration('How long the upstream login may take (its state cookie expires then).', 3600).prefault('10m'),
    return_window: duration(
      'How long after a sign-in made for an authorization request that asks for a fresh one (`prompt=login`, `max_age`) that request, on its way back from the provider, is answered by it: at least the clock skew between instances (the callback may be served by one and the request by another). It answers that request once, the first time it comes back (spent in the store, at every instance): loaded again, a reload or a replayed URL, the request is judged as any other (`prompt=login` and `max_age=0` ask for a new sign-in, `max_age=N` is answered only while the last sign-in is at most N seconds old). Whole seconds, 1 to 600.',
      LOGIN_RETURN_WINDOW_MAX,
      1,
    )
      .refine((v) => Number.isInteger(v) && v >= 1, {
        message: `write whole seconds from 1 to ${LOGIN_RETURN_WINDOW_MAX} (1s to 10m), e.g. ${LOGIN_RETURN_WINDOW_DEFAULT}s`,
      })
      .prefault(`${LOGIN_RETURN_WINDOW_DEFAULT}s`),
    max_token_requests_in_flight: z.number().int().min(1).default(32).meta({
      description:
        "Most token requests to the provider (the login callback's, each with the client secret, each waiting up to 5 s) in flight at once, per process. Anyone may begin a login and call the callback with any code; a callback past this is refused at once with the login-failure page, 503 with Retry-After, audited `login_upstream_busy`, its login state kept so that reloading it finishes the login once there is room.",
    }),
    callback_rate_limit: z
      .strictObject({
        enabled: z.boolean().default(false).meta({
          description:
            'Limit login callbacks per client address. Default: off: behind a reverse proxy not listed in `token_service.trust_proxy` every person is the proxy’s address, and anyone sending a callback every few seconds (beginning a login is free) would keep everyone from signing in. Turn it on (`true`) with `token_service.trust_proxy` behind a proxy, or where the token service sees its users’ own addresses.',
        }),
        ...bucketFields({ one: 'login callback', many: 'Login callbacks', per: 'address', rate: 0.2, burst: 20 }),
      })
      .prefault({})
      .meta({
        description:
          'Token bucket per client address (an IPv6 address by its /64; behind a proxy: the client’s as `token_service.trust_proxy` reads it, else the proxy’s, as the registration, token and revocation buckets count it) at the login callback, spent by each callback whose login state verifies, before that state is spent in the store and its token request sent to the provider (a callback with no state cookie, a forged or another login’s state, spends nothing, and costs no more than a MAC). Over it, the login-failure page, 429 with Retry-After, audited `login_rate_limited`, nothing stored or sent upstream, its login state kept so that reloading it after Retry-After finishes the login. A person’s login is one callback: the default, 20 at once and one every 5 s after that (12 a minute), lets an office sign in together behind one NAT address, keeps one address from holding all `max_token_requests_in_flight` (32) slots, and bounds the token requests it can make the server send the provider. Behind a reverse proxy not in `token_service.trust_proxy` every person shares its address: list the proxy there before turning it on. Beginning a login keeps nothing at the server (its state is the sealed cookie) and is not limited. Buckets of the 10000 most recent addresses are kept, per process.',
      }),
  })
  .meta({
    description:
      'Who the person is, from a login at an upstream OpenID Connect provider (Tessera as its relying party, authorization code flow with PKCE). Register `<issuer>/oauth2/login/callback` as its redirect URI.',
  });

const authorizationSchema = z
  .strictObject({
    enabled: z.boolean().default(false).meta({
      description: 'Serve `/oauth2/authorize` and its consent page (needs `trusted_header` or `oidc`), and advertise it in the metadata.',
    }),
    code_ttl: duration(
      'Lifetime of an authorization code: it is redeemed by the client right after the redirect (OAuth 2.1 recommends a short lifetime; at most 60 s).',
      60,
    ).prefault('60s'),
    grant_ttl: duration(
      "How long a person's approval lasts: refresh tokens rotate within it and never outlive it; after it the person is asked again.",
      YEAR,
    ).prefault('30d'),
    consent_ttl: duration('How long a consent page may be answered (its anti-CSRF token expires then).', 3600).prefault('10m'),
    remember_consent: duration(
      "How long a person's approval on the consent page is remembered: until then, a request by the same person for the same client, redirect URI and no more scopes or resources is approved without the page (`prompt=consent` still shows it, a public client on a loopback redirect URI always gets it, RFC 8252 §8.6, and so does a dynamically registered client unless `remember_consent_dynamic_clients`). 0 (the default) remembers nothing: the page every time.",
      YEAR,
    ).prefault('0s'),
    remember_consent_dynamic_clients: z.boolean().default(false).meta({
      description:
        'Also remember approvals of clients registered through RFC 7591 dynamic registration (`remember_consent`). Off by default: anyone may register a client with any name and redirect URI, so each of its requests shows the page (RFC 8252 §8.6; MCP security best practices, consent per dynamically registered client). Consider it only when registration needs an `initial_access_token` you hand out.',
    }),
    trusted_header: trustedHeaderSchema.optional(),
    oidc: oidcSchema.optional(),
  })
  .superRefine((v, ctx) => {
    const ok = trusted(ctx.issues);
    if (ok('enabled') && ok('trusted_header') && ok('oidc') && v.enabled && v.trusted_header === undefined && v.oidc === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['trusted_header'],
        message:
          'enabled needs a way to know who the person is: add trusted_header: { secret: "${TESSERA_PROXY_SECRET}" } (behind an SSO proxy) or oidc: { issuer, client_id, client_secret: "${TESSERA_OIDC_CLIENT_SECRET}" }',
      });
    }
    if (v.trusted_header !== undefined && v.oidc !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['oidc'],
        message:
          'configure one way to know who the person is: remove trusted_header (SSO proxy headers) or oidc (upstream login), not both',
      });
    }
    if (ok('trusted_header', 'allowed_peers') && v.trusted_header !== undefined) {
      const issues: ConfigIssue[] = [];
      peerList(v.trusted_header.allowed_peers, 'allowed_peers', issues);
      for (const issue of issues) {
        const index = Number(/\[(\d+)\]$/.exec(issue.path)?.[1] ?? 0);
        ctx.addIssue({ code: 'custom', path: ['trusted_header', 'allowed_peers', index], message: issue.message });
      }
    }
  }, always)
  .prefault({})
  .meta({ description: 'The authorization code grant (a person delegating to a client, with PKCE and consent).' });

const registrationSchema = z
  .strictObject({
    enabled: z
      .boolean()
      .default(false)
      .meta({ description: 'Serve RFC 7591 dynamic client registration at `/oauth2/register` and advertise it in the metadata.' }),
    initial_access_token: z
      .string()
      .min(32, 'use at least 32 random characters, normally `${TESSERA_REGISTRATION_TOKEN}` from the environment')
      .optional()
      .meta({
        description:
          'Bearer token a registration must carry (RFC 7591 §3; compared in constant time), normally `${TESSERA_REGISTRATION_TOKEN}` from the environment. Without it, set `open: true`.',
      }),
    open: z
      .boolean()
      .default(false)
      .meta({ description: 'Anyone may register a client, without an initial access token (MCP clients expect this). Say so explicitly.' }),
    scopes: z.array(z.string().min(1)).default([]).meta({
      description:
        'The scopes every registered client is registered with, whatever it asks for (RFC 7591 §3.2.1 lets the server replace them; the answer names them), so an MCP client can step up to a tool’s scope later; each token still carries only what its request asks for and the person approves. Default: none. Never the admin scope (`admin.scope`), which only clients added with `tessera clients add` are given.',
    }),
    audiences: z.array(z.string().min(1)).default([]).meta({
      description: 'Resources (RFC 8707) registered clients may request tokens for, e.g. your MCP server URL. Required when enabled.',
    }),
    max_clients: z.number().int().min(1).default(10_000).meta({
      description:
        'Most dynamically registered clients (`dcr_` ids) the store may hold; past it a registration gets 503 `temporarily_unavailable` until one is removed. Clients added with `tessera clients add` do not count.',
    }),
    rate_limit: z
      .strictObject({
        ...bucketFields({ one: 'registration', many: 'Registrations', per: 'address', rate: 0.2, burst: 20 }),
      })
      .prefault({})
      .meta({
        description:
          'Token bucket per client address (an IPv6 address by its /64; behind a proxy: the client’s as `token_service.trust_proxy` reads it, else the proxy’s), checked before anything else; over it, 429 with Retry-After.',
      }),
  })
  .superRefine((v, ctx) => {
    const ok = trusted(ctx.issues);
    if (!ok('enabled') || !v.enabled) return;
    if (ok('initial_access_token') && ok('open') && v.initial_access_token === undefined && !v.open) {
      ctx.addIssue({
        code: 'custom',
        path: ['initial_access_token'],
        message: 'enabled: add initial_access_token: "${TESSERA_REGISTRATION_TOKEN}", or open: true to let anyone register',
      });
    }
    if (ok('initial_access_token') && ok('open') && v.initial_access_token !== undefined && v.open) {
      ctx.addIssue({ code: 'custom', path: ['open'], message: 'open: true ignores initial_access_token; keep one of them' });
    }
    if (ok('audiences') && v.audiences.length === 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['audiences'],
        message: 'enabled: name the resources registered clients may use, e.g. [https://mcp.example.com/mcp]',
      });
    }
  }, always)
  .prefault({})
  .meta({ description: 'RFC 7591 dynamic client registration (off by default).' });

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

/** Why `v` is no origin `token_service.cors.allowed_origins` may list, or `undefined` when it is one. */
function originFault(v: string): string | undefined {
  if (v.includes('*')) {
    return `${quoted(v)} is a pattern: list each origin exactly (https://app.example.com), or write "*" alone for every origin`;
  }
  if (!URL.canParse(v)) return `${quoted(v)} is not an origin; write scheme://host[:port], e.g. https://app.example.com`;
  const u = new URL(v);
  // Not echoed: the part may hold a password.
  if (u.username !== '' || u.password !== '') return `remove the user:password@ part: write ${u.origin}`;
  if (u.protocol !== 'https:' && !(u.protocol === 'http:' && LOOPBACK_HOSTS.has(u.hostname))) {
    return `${quoted(v)}: write an https origin (plain http is accepted only on localhost, 127.0.0.1 and [::1])`;
  }
  // Browsers send the origin serialized (RFC 6454 §6.2): lower-case host, no default port, no
  // path; an entry spelled otherwise would never equal the Origin header.
  if (u.origin !== v) return `${quoted(v)} is not an origin as browsers send it; write ${u.origin} (no path, no trailing slash)`;
  return undefined;
}

const corsSchema = z
  .strictObject({
    allowed_origins: z
      .array(z.string())
      .default([])
      .superRefine((origins, ctx) => {
        for (const [i, v] of origins.entries()) {
          if (v === '*') {
            if (origins.length > 1) {
              ctx.addIssue({
                code: 'custom',
                path: [i],
                message: '"*" already allows every origin; write it alone, or list the origins without it',
              });
            }
            continue;
          }
          const fault = originFault(v);
          if (fault !== undefined) ctx.addIssue({ code: 'custom', path: [i], message: fault });
        }
      })
      .meta({
        description:
          'Origins (`https://app.example.com`: scheme, host and port, as the browser sends `Origin`) whose pages may call the token, revocation and registration endpoints from a browser: their preflights are answered and their answers carry `Access-Control-Allow-Origin`. `"*"` alone allows every origin (these endpoints take no cookies, so no credentials are ever allowed). Default: none (the metadata and JWKS are open to every origin whatever this says). A client may list origins of its own (`tessera clients add --allowed-origins`): a preflight is then answered for them too, and that client is held to them alone.',
      }),
  })
  .prefault({})
  .meta({ description: 'CORS for browser-based clients (a public client with PKCE, an MCP client in a web page).' });

export const tokenServiceSchema = z
  .strictObject({
    issuer: secureUrl('Issuer identifier (`iss`) and base URL of the endpoints; defaults to `server.public_url`, then http://host:port.')
      // On the text: a bare `?` or `#` is an empty query or fragment, which URL's search and hash show as ''.
      .refine((v) => !URL.canParse(v) || !/[?#]/.test(v), {
        message: 'an issuer identifier has no query or fragment (RFC 8414 §2)',
      })
      .optional(),
    access_token_ttl: duration('Default access-token lifetime (clients may have their own, up to `max_access_token_ttl`).', DAY).prefault(
      '10m',
    ),
    max_access_token_ttl: duration('Longest access-token lifetime any client may be given.', DAY).prefault('1h'),
    refresh_token_ttl: duration(
      'Refresh-token lifetime, renewed at each rotation; a refresh token never outlives its grant.',
      YEAR,
    ).prefault('24h'),
    refresh_reuse_grace: duration(
      'A rotated refresh token presented again within this time is refused without revoking its family (for clients that retry). 0 treats every reuse as theft.',
      60,
    ).prefault('0s'),
    refresh_reuse_interval: duration(
      'For a client whose token response was lost after the rotation committed (a dropped connection, a crash before it saved the token, a 500 from a store that lost its connection during COMMIT): within this time after a refresh token’s rotation, that token presented again by the same client (with a proof of the same DPoP key, when its successor is bound to one) is a retry, not a reuse: it gets a fresh access token and a new refresh token of the same family. The newest wins: the successor the lost response carried is retired, and presenting it later is a reuse that revokes the family (whoever held the lost response was not the client retrying), so a family never forks into two live tokens; a client that refreshes concurrently with one token must serialize its refreshes. The time counts from the first rotation (retries do not extend it). Past it, a token rotated two or more generations ago, another client’s request, or a revoked family: as without it (`refresh_reuse_grace`, then reuse detection). 0 (default): every reuse is treated as theft. At most 60 s.',
      60,
    ).prefault('0s'),
    max_chain_depth: z
      .number()
      .int()
      .min(1)
      .max(32)
      .default(5)
      .meta({ description: 'Most nested actors (`act`) a delegated token may carry; a deeper exchange is refused.' }),
    client_assertion_max_lifetime: duration(
      'Longest lifetime accepted for a private_key_jwt client assertion (RFC 7523), with 30 s for clock skew: its `exp` at most this far ahead, and `exp` − `iat` at most this long when it has an `iat`; a longer one is refused 401 `invalid_client`, audited `client_assertion_lifetime_too_long`. Each assertion’s `jti` is kept in the replay cache until its `exp`, so this bounds how long a stolen assertion could be held for use and how long the cache holds each. Default 5 min, at most 1 h: a client library minting longer assertions (some default to 10 min) needs it raised.',
      3600,
    ).prefault('5m'),
    admin: z
      .strictObject({
        scope: z
          .string()
          .regex(OIDC_SCOPE, 'a scope name: printable ASCII without spaces, quotes or backslashes (RFC 6749 §3.3)')
          .refine((v) => !isWildcard(v), {
            message:
              'a scope name, not a wildcard: the admin scope is granted only by its name, and a client given "*" or "prefix:*" for the API scopes would be given this one too',
          })
          .default('tessera:admin')
          .meta({
            description:
              'Scope an access token needs to call the admin API, granted by name (a wildcard or an implying scope does not grant it).',
          }),
        audience: z.string().min(1).optional().meta({
          description:
            'The only audience an admin access token may carry (default: the issuer): a token with the admin scope is issued for it alone, and the admin API refuses one also for another audience.',
        }),
      })
      .prefault({})
      .meta({ description: 'The admin API (revocation by grant, subject or client; grant trees).' }),
    keys: keysSchema,
    dpop: z
      .strictObject({
        nonce: z.boolean().default(false).meta({
          description:
            "Require authorization-server-provided nonces in DPoP proofs at the token endpoint (RFC 9449 §8): a proof without a valid one is refused with 400 `use_dpop_nonce` and a `DPoP-Nonce` header to retry with. Nonces are MACed with a key derived from the master key, so every instance sharing it accepts them, and expire after 5 to 10 minutes. The gateway's own nonces are the top-level `dpop.nonce`.",
        }),
      })
      .prefault({})
      .meta({ description: 'DPoP proofs at the token endpoint (algorithms: the top-level `dpop.algorithms`).' }),
    authorization: authorizationSchema,
    registration: registrationSchema,
    revocation_rate_limit: z
      .strictObject({
        enabled: z.boolean().default(true).meta({ description: 'Limit revocations per client. Default: on; `false` turns the limit off.' }),
        ...bucketFields({ one: 'revocation', many: 'Revocation requests', per: 'client', rate: 10, burst: 100 }),
      })
      .prefault({})
      .meta({
        description:
          'Token bucket per authenticated client at the RFC 7009 revocation endpoint (a public client’s per client and client address (through `trust_proxy`), an IPv6 /64: anyone may name it), spent after client authentication (a request that fails it spends nothing) and before a private_key_jwt assertion’s `jti` is recorded (refused, the client may send the same assertion again; a replayed one gives its token back); over it, 429 `revocation_rate_limited` with Retry-After, nothing revoked. Each access token revoked there is a revocation-log entry every instance keeps in memory until the token expires. The admin API and `tessera revoke` are not limited. Buckets of the 10000 most recent clients are kept.',
      }),
    introspection_rate_limit: z
      .strictObject({
        enabled: z.boolean().default(true).meta({
          description: 'Limit introspection requests per client. Default: on; `false` turns the limit off (not `auth_failure_limit`).',
        }),
        ...bucketFields({ one: 'introspection request', many: 'Introspection requests', per: 'client', rate: 100, burst: 1000 }),
      })
      .prefault({})
      .meta({
        description:
          'Token bucket per authenticated client at the RFC 7662 introspection endpoint (public clients may not introspect), spent after client authentication (a request that fails it spends nothing of it, but spends its address’s `auth_failure_limit`) and before a private_key_jwt assertion’s `jti` is recorded; over it, 429 `introspection_rate_limited` with Retry-After, nothing looked up. Each introspection reads the store and writes a `token.introspected` audit event. A refusal is audited (`introspection.denied`) once per throttled window of its client, the window being the Retry-After it was told; the next one audited says how many were not (`refusals_not_audited`). A gateway introspects each distinct token once per `cache_max_ttl` and every inactive one each time: size `rate` to the busiest resource server. Buckets of the 10000 most recent clients are kept, per process.',
      }),
    trust_proxy: z
      .array(z.string().min(1), {
        error: (i) =>
          typeof i.input === 'boolean'
            ? 'write the addresses or CIDRs of the proxies in front of the token service, e.g. trust_proxy: ["10.0.0.0/8", "127.0.0.1/32"] ([] trusts none)'
            : 'write a list of addresses or CIDRs, e.g. ["10.0.0.0/8", "127.0.0.1/32"]',
      })
      .optional()
      .meta({
        description:
          'Proxies in front of the token service (addresses or CIDRs), as `gateway.trust_proxy` reads them: from a peer listed here, X-Forwarded-For is walked from the right past the listed hops to find the client, whose address (an IPv6 address by its /64) keys the per-address buckets (`auth_failure_limit`, `authorization.oidc.callback_rate_limit`, `registration.rate_limit`, a public client’s token and revocation buckets) and is the audit events’ `remote_addr`; from any other peer X-Forwarded-For is ignored. Unset: under `tessera serve` with a `gateway` section, the gateway’s `trust_proxy` (the two share one listener, so the same proxies are in front of both; it reloads with it), else none. `[]` trusts none.',
      }),
    limits: listenerLimitsSchema.optional(),
    operations: tokenServiceOperationsSchema.optional(),
    auth_failure_limit: z
      .strictObject({
        enabled: z.boolean().default(false).meta({
          description:
            'Limit failed client authentications per address. Default: off: behind a reverse proxy or load balancer not listed in `trust_proxy` every client is the proxy’s address, and one that keeps failing would get every client refused at all three endpoints. Turn it on (`true`) with `trust_proxy` behind a proxy, or where the token service sees its clients’ own addresses.',
        }),
        ...bucketFields({ one: 'failed authentication', many: 'Failed client authentications', per: 'address', rate: 1, burst: 20 }),
      })
      .prefault({})
      .meta({
        description:
          'One token bucket per client address (an IPv6 address by its /64; behind a proxy: the client’s as `trust_proxy` reads it, else the proxy’s) shared by the token, revocation and introspection endpoints, of the requests refused before a client authenticated: a failed client authentication (wrong or unknown secret, bad or replayed assertion, no credentials) or a malformed request. An address whose bucket is empty is refused 429 `client_auth_failure_rate_limited` with Retry-After at any of the three before its credentials are checked, the right ones too (a guess that happens to be right is not told apart), until a failure is regained; a request that authenticates (a public client naming itself included) gives back the token it held, so an address that does not fail spends nothing. A refusal is audited (`token.denied`, `revocation.denied`, `introspection.denied`) once per throttled window of the endpoint and address, the next one audited saying how many were not (`refusals_not_audited`). Behind a reverse proxy not in `trust_proxy` every client shares the proxy’s bucket: one that keeps failing (a rotated secret still in use) gets them all refused until it stops; there, list the proxy in `trust_proxy` before turning it on. Buckets of the 10000 most recent addresses are kept, per process.',
      }),
    token_rate_limit: z
      .strictObject({
        enabled: z
          .boolean()
          .default(false)
          .meta({ description: 'Limit token requests per client. Default: off (`true` turns the limit on, with `rate` and `burst`).' }),
        ...bucketFields({ one: 'token request', many: 'Token requests', per: 'client', rate: 100, burst: 200 }),
      })
      .prefault({})
      .meta({
        description:
          'Token bucket per authenticated client at the token endpoint (every grant type; a public client’s per client and client address (through `trust_proxy`), since anyone may name it), spent after client authentication (a request that fails it spends nothing), before a private_key_jwt assertion’s `jti` (refused, the client may send the same assertion again; a replayed one gives its token back) or a DPoP proof is recorded, a grant looked up or anything signed or written; over it, 429 `token_rate_limited` with Retry-After, no token. Default: off, since one client may rightly ask for thousands of tokens a second (a gateway exchanging tokens per user; the issuer benchmark drives about 12,000 a second from one client): size `rate` to what the busiest client needs. Buckets of the 10000 most recent clients are kept, per process.',
      }),
    cors: corsSchema,
    sync_interval: duration(
      'How often a running server reads changes made by other processes (revocations, clients, keys). In-process changes apply at once; on PostgreSQL, revocations and client changes are also pushed within milliseconds and this poll is the fallback.',
      60,
    ).prefault('1s'),
    revocation_max_staleness: duration(
      'Fail closed on revocations: once this instance has not read the revocation log for longer than this (the store out of reach, its reads failing or held up), the gateway it serves (`tessera serve`: routes, forward-auth, WebSocket upgrades) refuses this issuer’s tokens with 503 `temporarily_unavailable` and Retry-After (audited `revocation_state_stale`) and closes the open streams and WebSockets admitted on them, as a revocation does, since another process may have revoked them meanwhile; it serves them again as soon as a read succeeds, and `/readyz` fails meanwhile. Other issuers’ tokens (`issuers`), checked against this log only for a subject an operator revoked here, and static tokens are not affected. Introspection and token exchange read the grant and token in the store on each request, so they are not affected either (without the store they fail anyway). The log’s age is `tessera_revocation_log_age_seconds` on /metrics. Longer than `sync_interval`, by more than a read of the log may take (a few times it: the log is up to `sync_interval` old between two polls). Default `0`: off, this issuer’s tokens keep verifying while the log cannot be read (availability first, as before), until they expire.',
      DAY,
    ).prefault(0),
    audit_flush_interval: duration('Longest time an audit event waits in memory before it is written to the store.', 10).prefault('200ms'),
    grant_retention: duration(
      'How long expired grants are kept (for `tessera grants tree` and audit) before they are pruned; at least 60s whatever this says, so that a token a verifier may still accept (clock skew) keeps its grant.',
      DECADE,
    ).prefault('30d'),
    audit_retention: duration(
      'How long audit events are kept in the store (what `tessera audit` and `tessera trace` read) before they are pruned; `0` keeps them for ever. At least 1h when set.',
      DECADE,
    ).prefault(0),
  })
  .superRefine((v, ctx) => {
    const ok = trusted(ctx.issues);
    if (ok('trust_proxy') && v.trust_proxy !== undefined) {
      const issues: ConfigIssue[] = [];
      peerList(v.trust_proxy, 'trust_proxy', issues);
      for (const issue of issues) {
        const index = Number(/\[(\d+)\]$/.exec(issue.path)?.[1] ?? 0);
        ctx.addIssue({ code: 'custom', path: ['trust_proxy', index], message: issue.message });
      }
    }
    if (ok('keys', 'publish_ahead') && ok('keys', 'jwks_max_age') && v.keys.publish_ahead < v.keys.jwks_max_age) {
      ctx.addIssue({
        code: 'custom',
        path: ['keys', 'publish_ahead'],
        message: `must be at least keys.jwks_max_age (${v.keys.jwks_max_age}s): a verifier caching the JWKS that long would not know the new key when it starts signing`,
      });
    }
    if (ok('registration', 'enabled') && ok('authorization', 'enabled') && v.registration.enabled && !v.authorization.enabled) {
      ctx.addIssue({
        code: 'custom',
        path: ['registration', 'enabled'],
        message: 'registered clients use the authorization code grant: set authorization.enabled: true too',
      });
    }
    if (
      ok('revocation_max_staleness') &&
      ok('sync_interval') &&
      v.revocation_max_staleness !== 0 &&
      v.revocation_max_staleness <= v.sync_interval
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['revocation_max_staleness'],
        message: `must be longer than sync_interval (${v.sync_interval}s), or every instance would refuse this issuer’s tokens between two reads of the revocation log; write at least ${Math.max(2 * v.sync_interval, v.sync_interval + 5)}s, or 0 to turn it off`,
      });
    }
    if (ok('audit_retention') && v.audit_retention !== 0 && v.audit_retention < 3600) {
      ctx.addIssue({
        code: 'custom',
        path: ['audit_retention'],
        message: `${v.audit_retention} seconds would empty the audit trail as it is written; write a unit (90d), at least 1h, or 0 to keep every event`,
      });
    }
    if (ok('access_token_ttl') && ok('max_access_token_ttl') && v.access_token_ttl > v.max_access_token_ttl) {
      ctx.addIssue({
        code: 'custom',
        path: ['access_token_ttl'],
        message: `is longer than max_access_token_ttl (${v.max_access_token_ttl}s); lower it or raise the maximum`,
      });
    }
    if (
      ok('keys', 'rotation_interval') &&
      ok('keys', 'publish_ahead') &&
      ok('max_access_token_ttl') &&
      v.keys.rotation_interval !== undefined &&
      v.keys.rotation_interval < v.keys.publish_ahead + v.max_access_token_ttl
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['keys', 'rotation_interval'],
        message: 'must be at least keys.publish_ahead + max_access_token_ttl, or keys would pile up faster than they retire',
      });
    }
  }, always)
  .meta({ description: 'The token service (authorization server).' });

export const storeSchema = z
  .strictObject({
    driver: z
      .enum(['sqlite', 'postgres'], { error: (i) => `${quoted(i.input)} is not a store driver; use "sqlite" or "postgres"` })
      .default('sqlite')
      .meta({ description: '`sqlite`: an embedded file under `data_dir` (one instance). `postgres`: shared by several instances.' }),
    sqlite: z
      .strictObject({
        path: filePath().optional().meta({
          description:
            'Database file (default `<data_dir>/tessera.db`; relative to `data_dir`). Its directory must be the user’s own (or root’s) and writable by it alone, as `data_dir` must.',
        }),
        busy_timeout: duration(
          'How long a write, or a read, waits for another process holding a lock it needs (retried off the event loop: the server keeps answering meanwhile).',
          60,
        ).prefault('5s'),
      })
      .prefault({})
      .meta({ description: 'SQLite settings.' }),
    postgres: z
      .strictObject({
        url: z
          .string()
          .refine((v) => /^postgres(ql)?:\/\//.test(v), { message: 'write a postgres:// URL, normally ${DATABASE_URL}' })
          .meta({ description: 'Connection URL, normally `${DATABASE_URL}` (keep the password out of the file).' }),
        schema: z
          .string()
          .regex(/^[a-z_][a-z0-9_]{0,62}$/, 'a lower-case SQL identifier')
          .default('tessera')
          .meta({ description: "Schema holding Tessera's tables (created when absent)." }),
        pool_size: z.number().int().min(1).max(100).default(10).meta({ description: 'Connections per instance.' }),
        request_timeout: duration(
          'How long a store call of a request (or of a CLI command) may take, retries included, before it fails with 503 `store_unavailable` and its connection is closed (the wait for a pool connection comes before it, bounded by the shorter of this and 5 s); PostgreSQL gives up on each of its statements a little sooner (`lock_timeout`, `statement_timeout`). Not the schema migrations; a revocation of grants (`tessera revoke`, the admin API) may take 10 s, or this when longer.',
          60,
          0.1,
        )
          .refine((v) => v >= 0.1, { message: 'write at least 0.1s: every call would fail' })
          .prefault('5s'),
      })
      .optional()
      .meta({ description: 'PostgreSQL settings (required with `driver: postgres`).' }),
  })
  .superRefine((v, ctx) => {
    const ok = trusted(ctx.issues);
    if (ok('driver') && ok('postgres') && v.driver === 'postgres' && v.postgres === undefined) {
      ctx.addIssue({ code: 'custom', path: ['postgres'], message: 'driver is postgres: add postgres: { url: "${DATABASE_URL}" }' });
    }
  }, always)
  .meta({ description: 'Where Tessera keeps clients, keys, grants, revocations and audit events.' });

/**
 * Whether `path` is the token service's under `tessera serve`: everything under `/oauth2/` (at the
 * root, which serve reserves whatever the issuer's path, and under the issuer's path), its JWKS and
 * its RFC 8414 metadata (and below). Compared without case, as the reservation of `/oauth2/` is.
 */
export function tokenServicePath(path: string, issuerPath: string): boolean {
  const p = path.toLowerCase();
  const under = (base: string) => p === base || p.startsWith(`${base}/`) || p.startsWith(`${base}?`);
  const ip = issuerPath.toLowerCase();
  return (
    under('/oauth2') || under(`${ip}/oauth2`) || p === `${ip}/.well-known/jwks.json` || under('/.well-known/oauth-authorization-server')
  );
}

const OPS_PATHS = ['health_path', 'ready_path', 'metrics_path'] as const;

/**
 * `token_service.operations`: its peers are addresses or CIDRs, its three paths differ, and none is
 * a path the token service answers itself (its handler answers first: the probe or metrics would
 * never be reached).
 */
function operationsChecks(
  ts: TokenServiceConfig,
  ok: Trusted,
  server: { readonly host: string; readonly port: number; readonly public_url?: string | undefined },
): ConfigIssue[] {
  const ops = ts.operations;
  if (ops === undefined || !ok('token_service', 'operations')) return [];
  const issues: ConfigIssue[] = [];
  peerList(ops.metrics_allowed_peers, 'token_service.operations.metrics_allowed_peers', issues);
  const paths = OPS_PATHS.map((k) => ops[k]);
  if (new Set(paths).size !== paths.length)
    issues.push({ path: 'token_service.operations', message: 'health, readiness and metrics paths must differ' });
  if (ok('server') && ok('token_service', 'issuer')) {
    const issuerPath = new URL(resolveTokenService({ token_service: ts, server }).issuer).pathname.replace(/\/+$/, '');
    for (const key of OPS_PATHS) {
      if (tokenServicePath(ops[key], issuerPath))
        issues.push({
          path: `token_service.operations.${key}`,
          message: `${JSON.stringify(ops[key])} is the token service’s own (it answers /oauth2/, /.well-known/jwks.json and /.well-known/oauth-authorization-server); write a path outside them`,
        });
    }
  }
  return issues;
}

/**
 * Checks of the token service against other sections, in the same parse: dynamic registration may
 * not grant the admin scope; with a scope catalogue, the scopes it may grant must be in it (a
 * registration asking for one would otherwise be refused at run time, every time).
 */
export function tokenServiceChecks(
  ts: TokenServiceConfig | undefined,
  ok: Trusted,
  scopes: { readonly known?: ReadonlySet<string> | undefined },
  server: { readonly host: string; readonly port: number; readonly public_url?: string | undefined },
): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  if (ts === undefined) return issues;
  issues.push(...operationsChecks(ts, ok, server));
  if (ts.authorization.oidc !== undefined && ok('server') && ok('token_service', 'issuer') && ok('token_service', 'authorization')) {
    // The login cookies are Secure and __Host- only on https; on plain http elsewhere than loopback
    // they would be readable on the wire and settable by anyone on the path (login CSRF).
    const issuer = new URL(resolveTokenService({ token_service: ts, server }).issuer);
    if (issuer.protocol !== 'https:' && !['localhost', '127.0.0.1', '[::1]'].includes(issuer.hostname)) {
      issues.push({
        path: 'token_service.authorization.oidc',
        message: `the login cookies need https, but the issuer is ${issuer.origin}: set server.public_url (or token_service.issuer) to the https URL people reach Tessera at`,
      });
    }
  }
  if (ok('token_service', 'registration', 'scopes') && ok('token_service', 'admin')) {
    // A registered client gets the whole maximum, whatever it asks for: the admin scope there would
    // make every registered client (with open registration, anyone's) an administrator.
    for (const [i, s] of ts.registration.scopes.entries()) {
      if (s === ts.admin.scope) {
        issues.push({
          path: `token_service.registration.scopes[${i}]`,
          message: `${quoted(s)} is the admin scope (token_service.admin.scope): it is given only to clients added with tessera clients add --scopes ${s}, never by registration`,
        });
      }
    }
  }
  if (scopes.known === undefined || !ok('token_service', 'registration', 'scopes')) return issues;
  for (const [i, s] of ts.registration.scopes.entries()) {
    if (!isWildcard(s) && !scopes.known.has(s) && s !== ts.admin.scope) {
      issues.push({
        path: `token_service.registration.scopes[${i}]`,
        message: `${quoted(s)} is not in the scope catalogue (scopes); add it there or remove it here`,
      });
    }
  }
  return issues;
}

/**
 * `issuers[].exchange_clients` on the entry of the token service's own issuer: that entry is the
 * gateway's, never token exchange's (this issuer's tokens are exchanged only by a client they name:
 * `client_id`, `aud` or `may_act`), so a list there would read as a restriction nothing enforces.
 */
export function exchangeClientsChecks(
  c: {
    readonly issuers: readonly { readonly issuer: string; readonly exchange_clients?: readonly string[] | undefined }[];
    readonly token_service?: TokenServiceConfig | undefined;
    readonly server: { readonly host: string; readonly port: number; readonly public_url?: string | undefined };
  },
  ok: Trusted,
): ConfigIssue[] {
  if (!Array.isArray(c.issuers) || !ok('server') || !ok('token_service', 'issuer')) return [];
  const own = resolveTokenService({ token_service: c.token_service, server: c.server }).issuer;
  const issues: ConfigIssue[] = [];
  for (const [n, i] of c.issuers.entries()) {
    if (!ok('issuers', n, 'issuer') || !ok('issuers', n, 'exchange_clients') || i.exchange_clients === undefined) continue;
    if (i.issuer === own) {
      issues.push({
        path: `issuers[${n}].exchange_clients`,
        message: `${quoted(i.issuer)} is the token service’s own issuer, whose tokens are exchanged only by a client they name (client_id, aud or may_act); remove exchange_clients here`,
      });
    }
  }
  return issues;
}

/**
 * The token service's own issuer trusted in `issuers` with an algorithm allowlist that leaves out
 * `token_service.keys.algorithm`: the keys it generates sign tokens this configuration's own gateway
 * and verifier refuse, from the next rotation on (or at once on a new store).
 */
export function ownIssuerAlgorithmChecks(
  c: {
    readonly issuers: readonly { readonly issuer: string; readonly algorithms: readonly string[] }[];
    readonly token_service?: TokenServiceConfig | undefined;
    readonly server: { readonly host: string; readonly port: number; readonly public_url?: string | undefined };
  },
  ok: Trusted,
): ConfigIssue[] {
  if (!Array.isArray(c.issuers) || !ok('server') || !ok('token_service', 'issuer') || !ok('token_service', 'keys')) return [];
  const resolved = resolveTokenService({ token_service: c.token_service, server: c.server });
  const alg = resolved.keys.algorithm;
  const issues: ConfigIssue[] = [];
  for (const [n, i] of c.issuers.entries()) {
    if (!ok('issuers', n, 'issuer') || !ok('issuers', n, 'algorithms') || i.issuer !== resolved.issuer) continue;
    if (i.algorithms.includes(alg)) continue;
    issues.push({
      path: `issuers[${n}].algorithms`,
      message: `${quoted(i.issuer)} is the token service’s own issuer and token_service.keys.algorithm is ${alg}: its tokens would be refused; add ${alg} here (or remove algorithms)`,
    });
  }
  return issues;
}

/** The `token_service` section of `tessera.yaml`, validated (docs/configuration.md). */
export type TokenServiceConfig = z.output<typeof tokenServiceSchema>;
/** The `store` section of `tessera.yaml`, validated. */
export type StoreConfig = z.output<typeof storeSchema>;

/** The token-service settings with defaults applied and the issuer resolved. */
export interface ResolvedTokenServiceConfig extends TokenServiceConfig {
  readonly issuer: string;
  readonly adminAudience: string;
}

/**
 * Resolve what depends on other parts of `tessera.yaml`: the issuer (from `server.public_url` or
 * the listener) and the admin audience. Missing sections take their defaults.
 */
export function resolveTokenService(config: {
  readonly token_service?: TokenServiceConfig | undefined;
  readonly server: { readonly host: string; readonly port: number; readonly public_url?: string | undefined };
}): ResolvedTokenServiceConfig {
  const ts = config.token_service ?? tokenServiceSchema.parse({});
  const host = config.server.host.includes(':') ? `[${config.server.host}]` : config.server.host;
  const issuer = (ts.issuer ?? config.server.public_url ?? `http://${host}:${config.server.port}`).replace(/\/+$/, '');
  return Object.freeze({ ...ts, issuer, adminAudience: ts.admin.audience ?? issuer });
}

/** The resolved store settings: the SQLite path made absolute under `data_dir`, or PostgreSQL's. */
export type ResolvedStore =
  | { readonly driver: 'sqlite'; readonly path: string; readonly busyTimeoutMs: number }
  | {
      readonly driver: 'postgres';
      readonly url: string;
      readonly schema: string;
      readonly poolSize: number;
      readonly requestTimeoutMs: number;
    };

/** How long one store call of a request may take: PostgreSQL's `request_timeout`, SQLite's `busy_timeout`. */
export function storeRequestTimeoutMs(s: ResolvedStore): number {
  return s.driver === 'postgres' ? s.requestTimeoutMs : s.busyTimeoutMs;
}

/** The store `tessera.yaml` configures (`store`), with its defaults and paths resolved against `data_dir`. */
export function resolveStore(config: { readonly store?: StoreConfig | undefined; readonly data_dir: string }): ResolvedStore {
  const s = config.store ?? storeSchema.parse({});
  if (s.driver === 'postgres' && s.postgres !== undefined) {
    return {
      driver: 'postgres',
      url: s.postgres.url,
      schema: s.postgres.schema,
      poolSize: s.postgres.pool_size,
      requestTimeoutMs: Math.round(s.postgres.request_timeout * 1000),
    };
  }
  const path = s.sqlite.path ?? 'tessera.db';
  return {
    driver: 'sqlite',
    path: path === ':memory:' || isAbsolute(path) ? path : join(config.data_dir, path),
    busyTimeoutMs: Math.round(s.sqlite.busy_timeout * 1000),
  };
}
