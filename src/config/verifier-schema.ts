/**
 * The verifier's configuration schema: the single source of its defaults, its validation and its
 * documentation (docs/configuration.md is generated from the descriptions here). The same shape is
 * accepted by `createVerifier(options)` and appears at the top level of `tessera.yaml`.
 *
 * @module
 */
import { z } from 'zod';
import { type ConfigIssue, quoted } from '../core/errors.ts';
import { CLIENT_ID } from '../core/identity.ts';
import { DEFAULT_DPOP_ALGORITHMS, JWS_ALGORITHMS } from '../core/jose/algorithms.ts';
import { compilePolicy } from '../core/policy.ts';
import { compileScopes, type ScopeModel } from '../core/scopes.ts';
import { loadLocalJwks } from '../jwks/local.ts';
import { addConfigIssues, always, type Trusted, trusted } from './cross-check.ts';
import { DAY, formatDuration, parseDuration, YEAR } from './duration.ts';

/** The longest `issuers[].clock_skew`, seconds. */
export const MAX_CLOCK_SKEW = 60;
/** The longest `dpop.iat_window`, seconds. */
export const MAX_DPOP_IAT_WINDOW = 3600;

/**
 * A duration: seconds as a number, or `30s`, `10m`, `24h`, `7d`. Parsed to seconds, at most `max`
 * (every duration has one: a value past it would overflow the expiry computed from it, or a timer).
 * `min` only words the advice for a value over `max`: a schema with a minimum refuses a value below
 * it itself, with its own message.
 */
export const duration = (description: string, max: number, min = 0) =>
  z
    .union([z.number(), z.string()])
    .transform((v, ctx) => {
      const s = parseDuration(v);
      if (s === undefined) {
        // A number in quotes (as Helm's `quote` and every ${VAR} give it): neither guessed to be
        // seconds nor repeated (it may have come from the environment) in the advice.
        const unitless = typeof v === 'string' && /^\d+(?:\.\d+)?$/.test(v.trim());
        ctx.addIssue({
          code: 'custom',
          message: unitless
            ? `${quoted(v)} has no unit: add one (30s, 10m, 24h, 7d), or write seconds as a number without quotes`
            : `${quoted(v)} is not a duration; write seconds (30) or a unit (30s, 10m, 24h, 7d)`,
        });
        return z.NEVER;
      }
      if (s > max) {
        ctx.addIssue({
          code: 'custom',
          message: `${v} is longer than allowed here: write a duration from ${min === 0 ? '0' : formatDuration(min)} to ${formatDuration(max)}`,
        });
        return z.NEVER;
      }
      return s;
    })
    .meta({ description, format: 'duration', maximum: max });

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

/** An https URL, or http on a loopback host (for local development and tests). */
export const secureUrl = (description: string) =>
  z
    .string()
    .refine((v) => URL.canParse(v), { message: 'not an absolute URL' })
    .refine(
      (v) => {
        if (!URL.canParse(v)) return true;
        const u = new URL(v);
        return u.protocol === 'https:' || (u.protocol === 'http:' && LOOPBACK.has(u.hostname));
      },
      { message: 'must use https (plain http is accepted only on localhost, 127.0.0.1 and [::1])' },
    )
    .refine((v) => !URL.canParse(v) || (new URL(v).username === '' && new URL(v).password === ''), {
      message: 'remove the user:password@ part: a URL here is shown on /readyz and in logs; credentials go in their own settings',
    })
    .meta({ description });

// The refinements below run even when fields already failed (`always`); they see the partly
// parsed object and check the shapes they read.
const stringsIn = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);

const algorithm = z.enum(JWS_ALGORITHMS, {
  error: (issue) =>
    `${quoted(issue.input)} is not a supported algorithm; use one of ${JWS_ALGORITHMS.join(', ')} (case-sensitive; "none" is never accepted)`,
});

/** Claims a token's scopes are read from (`scope_claim`); a closed list, so a typo is a configuration error. */
export const SCOPE_CLAIMS = ['scope', 'scopes', 'scp', 'roles', 'permissions'] as const;
/**
 * Claims a token's client is read from (`client_claim`). A closed list of claims identity providers
 * write themselves: the client is a principal (revocation by client, rate-limit keys), which a
 * claim any client can have mapped into its tokens (a custom claim, `sub`, `email`) must not name.
 */
type ScopeClaim = (typeof SCOPE_CLAIMS)[number];
export const CLIENT_CLAIMS = ['client_id', 'azp', 'appid', 'cid'] as const;

/**
 * `scope_claim`: one claim of {@link SCOPE_CLAIMS}, or a non-empty list of them without repeats.
 * Checked by hand rather than as a union of an enum and a list of it, so that a typo in a list is
 * reported at its own item (`scope_claim[1]`) with the options, as an enum's is.
 */
const scopeClaim = (description: string) =>
  // Typed as what the check lets through (a cast: a transform would hide the default from the documentation).
  (z.union([z.string(), z.array(z.unknown())]) as unknown as z.ZodType<ScopeClaim | ScopeClaim[], string | unknown[]>)
    .superRefine((v, ctx) => {
      const list: unknown[] = typeof v === 'string' ? [v] : v;
      if (list.length === 0) ctx.addIssue({ code: 'custom', message: `list at least one claim: ${SCOPE_CLAIMS.join(', ')}` });
      for (const [i, name] of list.entries()) {
        const path = typeof v === 'string' ? [] : [i];
        if (!(SCOPE_CLAIMS as readonly unknown[]).includes(name)) {
          // zod's own wording of an enum, which the configuration errors turn into "write one of … (did you mean …?)".
          ctx.addIssue({ code: 'invalid_value', values: [...SCOPE_CLAIMS], input: name, path, message: 'Invalid option' });
        } else if (list.indexOf(name) !== i) {
          ctx.addIssue({ code: 'custom', path, message: `${quoted(name)} is listed twice` });
        }
      }
    })
    .default('scope')
    // For the generated documentation (as `duration` gives its format): the shape accepted, which
    // the hand-made check above does not show.
    .meta({
      description,
      anyOf: [
        { type: 'string', enum: [...SCOPE_CLAIMS] },
        { type: 'array', items: { type: 'string', enum: [...SCOPE_CLAIMS] }, minItems: 1 },
      ],
    });

/**
 * A file or directory path: a string without a NUL byte, which no file name can hold (Node would
 * refuse it only where the path is first used, with an error naming neither the setting nor why).
 */
export const filePath = () =>
  z
    .string()
    .min(1)
    .refine((v) => !v.includes('\0'), 'holds a NUL byte (\\0), which no file or directory name can hold; remove it');

const jwksSchema = z
  .union([
    z.strictObject({
      file: filePath().meta({
        description:
          "Path to a JWKS JSON file; a relative path is read from the configuration file's directory (`createVerifier` without `baseDir`: the working directory).",
      }),
    }),
    z.strictObject({ keys: z.array(z.record(z.string(), z.unknown())).min(1).meta({ description: 'Inline JWKS keys.' }) }),
  ])
  .meta({ description: 'Local keys: `{file: path}` or `{keys: [...]}` (an inline JWKS).' });

export const issuerSchema = z
  .strictObject({
    issuer: z.string().min(1).meta({ description: 'Exact `iss` value tokens from this issuer carry.' }),
    audiences: z
      .array(z.string().min(1))
      .min(1, 'list at least one audience; accepting tokens for any audience lets a token for one API be replayed at another')
      .meta({ description: 'The token `aud` (string or array) must contain one of these.' }),
    algorithms: z
      .array(algorithm)
      .min(1)
      .default(['ES256', 'EdDSA', 'RS256', 'PS256'])
      .meta({ description: 'Algorithm allowlist. HMAC (HS*) is accepted only with an inline `oct` key of at least the hash size.' }),
    jwks: jwksSchema.optional(),
    jwks_uri: secureUrl(
      'Remote JWKS URL (cached, refreshed per Cache-Control). A response over 512 KiB or holding more than 100 keys is refused and the last good set kept; an RSA key over 8192 bits is skipped with a warning.',
    ).optional(),
    jwks_cache: z
      .strictObject({
        min_ttl: duration(
          'Shortest time a fetched key set is used before a background refresh. Whatever it and Cache-Control say, one key set is fetched at most once a second.',
          30 * DAY,
        ).prefault('1m'),
        max_ttl: duration('Longest time a fetched key set is used before a background refresh.', 30 * DAY).prefault('24h'),
        default_ttl: duration('Time used when the response has no Cache-Control max-age.', 30 * DAY).prefault('10m'),
        miss_cooldown: duration(
          'After a fetch, unknown `kid`s wait this long before another fetch (at least 1 s, also when set to 0: anyone can send a token naming a `kid`).',
          DAY,
        ).prefault('30s'),
        max_stale: duration(
          'How long past its TTL the last good key set is still used while it cannot be refreshed (IdP down, unreachable or blocked). ' +
            'Beyond that it is dropped and this issuer’s tokens get 503 `keys_stale` until a fetch succeeds; a set that expired longer ago unused is fetched again before use. ' +
            'Longer rides out a longer IdP outage; shorter bounds how long a key the IdP withdrew (after a compromise) stays trusted when Tessera cannot learn of it. 0: never past the TTL.',
          30 * DAY,
        ).prefault('24h'),
        timeout: duration('Fetch timeout.', 600).prefault('5s'),
      })
      .prefault({})
      .meta({ description: 'Remote JWKS caching.' }),
    scope_claim: scopeClaim(
      'Claim carrying granted scopes, or a list of claims whose scopes are united (`[scp, roles]` for Microsoft Entra ID, `[scope, permissions]` for Auth0 RBAC): `scope` (a space-delimited string, RFC 9068; an array there is refused), `scopes`, `scp`, `roles` or `permissions` (an array of strings or a space-delimited string). A claim not listed is never read (`roles` grants nothing unless named here); a listed claim of the wrong shape refuses the token (`token_claim_invalid` naming it). See docs/identity-providers.md.',
    ),
    client_claim: z.enum(CLIENT_CLAIMS).default('client_id').meta({
      description:
        'Claim naming the client the token was issued to: `client_id` (RFC 9068; Auth0’s rfc9068 profile), `azp` (Auth0, Microsoft Entra ID v2, Keycloak, Google), `appid` (Entra ID v1 tokens) or `cid` (Okta). Principals carry it as their client: the audit trail’s `client_id`, identity headers, `rate_limit.key`, revocation by client. Absent: no client; "" or anything but a string refuses the token (`token_claim_invalid` naming the claim). Only this claim is read (a `client_id` beside an `azp` then counts for nothing); claim conditions of rules still name the token’s own claims (`claims: {azp: …}`).',
    }),
    token_type: z.string().min(1).optional().meta({
      description:
        'Required `typ` header, e.g. `at+jwt` (RFC 9068); `application/` prefix and case are ignored. Unset: any `typ`, or none, except one naming another kind of JWT (`<kind>+jwt` other than `at+jwt`: a logout token’s `logout+jwt`, `secevent+jwt`, `dpop+jwt`), which is refused (`token_typ_invalid`, RFC 8725 §3.11).',
    }),
    required_claims: z.array(z.string().min(1)).default(['iat']).meta({
      description:
        'Claims that must be present in addition to `iss`, `aud` and `exp` (always required). Where revocations apply (`tessera serve`, token exchange at the token service) `iat` is required whatever this says: without it a token signed before a subject revocation cannot be told from one signed after.',
    }),
    clock_skew: duration('Tolerated clock difference for `exp`, `nbf` and `iat` (at most 60s).', MAX_CLOCK_SKEW).prefault('30s'),
    max_lifetime: duration('Longest accepted token lifetime (`exp` − `iat`).', YEAR).prefault('24h'),
    delegation_claim: z.string().min(1).default('grant_id').meta({ description: 'Claim carrying the delegation (grant) id.' }),
    exchange_clients: z
      .array(
        z.string().regex(CLIENT_ID, {
          error: (i) =>
            `${quoted(i.input)} is not a client id: write the id of a token-service client (1-128 letters, digits, ".", "_" or "-", as tessera clients list shows it)`,
        }),
      )
      .optional()
      .meta({
        description:
          'Token exchange at the token service (`tessera serve`): the clients (by id) that may present this issuer’s tokens as `subject_token` or `actor_token`. Any other client gets 400 `invalid_request`, the answer an invalid token gets (the audit trail says `subject_token_client_not_allowed` or `actor_token_client_not_allowed`). `[]`: no client (the issuer is trusted by the gateway only). Unset: every client registered for token exchange may, as before this setting, and `tessera serve` warns at every start and reload; set it on every issuer other than Tessera, since `audiences` names what the IdP’s tokens are for, not which client may exchange them. Not read by the gateway, `tessera gateway` or `createVerifier`, nor for the gateway’s own exchange (`gateway.exchange_client`, which exchanges the callers it verified); refused on the token service’s own issuer, whose tokens are exchanged only by a client they name.',
      }),
  })
  .superRefine((v, ctx) => {
    if ((v.jwks === undefined) === (v.jwks_uri === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['jwks_uri'], message: 'give exactly one of jwks_uri (remote) or jwks ({file} or {keys})' });
    }
    if (v.jwks_uri !== undefined && stringsIn(v.algorithms).some((a) => a.startsWith('HS'))) {
      ctx.addIssue({
        code: 'custom',
        path: ['algorithms'],
        message: 'HMAC algorithms need a shared secret and cannot come from a remote JWKS; remove HS* or use an inline oct key',
      });
    }
  }, always)
  .meta({ description: 'A trusted JWT issuer with its own keys, audiences, algorithms and scope claim.' });

export const staticTokenSchema = z
  .strictObject({
    id: z.string().min(1).meta({ description: 'Name of this token in audit events (never the token itself).' }),
    token: z
      .string()
      .min(
        32,
        'a static token must be at least 32 characters of random data; generate one with `tessera init` or `openssl rand -base64 32`',
      )
      .meta({
        description:
          'The token value, normally `${STATIC_TOKEN}` from the environment. Never the value of a route’s `upstream.credential.token` (refused at load: the upstream could present it to the gateway).',
      }),
    subject: z.string().min(1).optional().meta({ description: 'Subject principals from this token carry (default `static:<id>`).' }),
    scopes: z.array(z.string().min(1)).default([]).meta({ description: 'Scopes this token grants.' }),
  })
  .meta({ description: 'A static gateway token, compared in constant time. List several to rotate with an overlap.' });

export const introspectionSchema = z
  .strictObject({
    endpoint: secureUrl('RFC 7662 introspection endpoint.'),
    client_id: z.string().min(1).meta({ description: 'Client id for client_secret_basic authentication.' }),
    client_secret: z.string().min(1).meta({ description: 'Client secret, normally from the environment.' }),
    issuer: z.string().min(1).optional().meta({
      description:
        'The issuer principals from this endpoint carry (identity headers, audit, `rate_limit.key: subject`, revocation by subject or client). An active answer whose `iss` is another string (compared exactly: a trailing slash differs) is refused 401 `token_issuer_unknown`; one without `iss` names this issuer. Default: the endpoint’s origin (`https://as.example.com` for `https://as.example.com/oauth2/introspect`); set it when the authorization server’s issuer has a path or a trailing slash.',
    }),
    audiences: z.array(z.string().min(1)).optional().meta({ description: 'When set, the response `aud` must contain one of these.' }),
    cache_max_ttl: duration(
      'Longest time an active result is cached (never past the token `exp`); an inactive one is not cached. Concurrent requests with one token not in the cache share one call to the endpoint. At the gateway, exchanges in flight on an introspected token (WebSockets, streams) are introspected again this often (never more often than once a second), through the cache: one no longer active is closed (`token_inactive`), one still active whose scope no longer grants what its route rule requires is closed (`token_scope_narrowed`), one whose answer no longer satisfies a claim condition of that rule (`policy_condition_failed`) or no longer names the route audience (`token_audience_invalid`) likewise, one whose answer names another `sub`, `client_id`, `iss` or (with `trust_sub_id`) `sub_id` issuer than when it began (`token_identity_changed`: its upstream was given that identity) likewise, and one whose endpoint gives no answer at two rechecks in a row is closed (`introspection_unavailable`).',
      DAY,
    ).prefault('60s'),
    timeout: duration('Request timeout.', 600).prefault('5s'),
    max_in_flight: z.number().int().min(1).default(64).meta({
      description:
        'Calls to the endpoint under way at once (per verifier: a gateway has one for its `auth: introspection` routes). A token that would need one more is refused at once with 503 `introspection_unavailable` and Retry-After, never queued, so a flood of distinct tokens reaches the endpoint with at most this many calls at a time. Requests with a token whose call is under way share it and take no slot. Applies to a library verifier (the adapters) as to the gateway: more concurrent uncached tokens than this get 503. A WebSocket or stream whose recheck finds no free slot twice in a row is closed as `introspection_unavailable`, as when the endpoint gives no answer. Default 64.',
    }),
    clock_skew: duration(
      "Tolerated clock difference for the answer `nbf` and `iat` (at most 60s), as for an issuer; an `exp` already past is refused. Counts, as an issuer's does, for the clock skew DPoP proofs get (`dpop.iat_window`).",
      60,
    ).prefault('30s'),
    scope_claim: scopeClaim(
      'Response member carrying granted scopes, or a list of members whose scopes are united: `scope` (a space-delimited string, RFC 7662), `scopes`, `scp`, `roles` or `permissions` (an array of strings or a space-delimited string). The client is the answer’s `client_id` (RFC 7662).',
    ),
    trust_sub_id: z.boolean().default(false).meta({
      description:
        'Believe an active answer’s RFC 9493 `sub_id` (`iss_sub` format, naming the answer’s own `sub`) as the issuer the subject belongs to: at the gateway, identity header `subject_issuer`, `rate_limit.key: subject` and the audit event’s `subject_issuer`. Turn on when the endpoint is a Tessera token service (its answer names the identity provider of a subject it took from one) or another authorization server that writes `sub_id` only for subjects it verified itself; off, the subject belongs to `issuer`. Default: off.',
    }),
  })
  .meta({
    description:
      'Opaque tokens checked by RFC 7662 introspection. A verifier that also has `issuers` introspects every token that is no compact JWS (three base64url segments, a JSON header), dots or not, and never a JWS; a gateway route with `auth: introspection` introspects every token. When the endpoint gives no answer (down, slow, an HTTP error such as 401 to the client credentials, an answer too large or not JSON), callers get 503 `introspection_unavailable` and a warning (`verifier_warning` at the gateway, at most one per 30 s) says why, never with the token or the secret.',
  });

const scopeRequirement = z.union([
  z.array(z.string().min(1)),
  z.strictObject({
    all: z.array(z.string().min(1)).optional().meta({ description: 'Every one of these scopes is required.' }),
    any: z.array(z.string().min(1)).min(1).optional().meta({ description: 'At least one of these scopes is required.' }),
  }),
]);

export const ruleSchema = z
  .strictObject({
    id: z.string().min(1).optional().meta({ description: 'Rule id for audit events (default `rules[i]`).' }),
    methods: z
      .array(z.string())
      .min(1)
      .transform((a) => a.map((m) => m.toUpperCase()))
      .optional()
      .meta({
        description:
          'HTTP methods; omitted means any. GET also matches HEAD, so a HEAD is decided by the rule its GET would be (frameworks run GET handlers for it).',
      }),
    path: z.string().optional().meta({
      description:
        'Path pattern: literal segments, `:param`, `*` (one segment), final `**` (any rest). A parameter is named with letters, digits and `_`, once per pattern, and not for a member every JavaScript object has (`:__proto__`, `:constructor`).',
    }),
    tool: z.string().min(1).optional().meta({ description: 'MCP tool name or glob (`files.*`) for `tools/call`.' }),
    rpc: z
      .string()
      .min(1)
      .optional()
      .meta({ description: 'MCP JSON-RPC method or glob (`resources/read`, `prompts/*`), matched exactly (case-sensitive).' }),
    scopes: scopeRequirement.optional().meta({ description: 'Required scopes: a list (all of them) or `{all: [...], any: [...]}`.' }),
    claims: z
      .record(z.string(), z.union([z.string(), z.number(), z.boolean(), z.array(z.union([z.string(), z.number()]))]))
      .optional()
      .meta({ description: 'Claim conditions: a literal, a list of literals, or `:param` to equal a path parameter.' }),
  })
  .meta({ description: 'One authorization rule; the first matching rule decides, unmatched requests are denied.' });

export const scopeCatalogSchema = z
  .record(
    z.string(),
    z
      .strictObject({
        description: z.string().optional().meta({ description: 'What the scope allows (for people; not enforced).' }),
        implies: z.array(z.string().min(1)).optional().meta({ description: 'Scopes (or `prefix:*`) this scope also grants.' }),
      })
      .nullable()
      .transform((v) => v ?? {}),
  )
  .meta({ description: 'Scope catalogue with inheritance. When present, rules may only name scopes defined here.' });

export const dpopSchema = z
  .strictObject({
    mode: z
      .enum(['disabled', 'allowed', 'required'])
      .default('allowed')
      .meta({ description: '`allowed`: DPoP-bound tokens need proofs, bearer tokens pass; `required`: bearer tokens are refused.' }),
    algorithms: z
      .array(algorithm)
      .min(1)
      .default([...DEFAULT_DPOP_ALGORITHMS])
      .meta({
        description:
          'Algorithms accepted for proofs (asymmetric only), by the gateway and at the token endpoint, whose metadata advertises these (`dpop_signing_alg_values_supported`), so that a client picks one every resource server of this configuration accepts.',
      }),
    iat_window: duration(
      'How old a proof may be. A proof is accepted while its `iat` is at most `iat_window` plus the largest `clock_skew` of `issuers` and `introspection` in the past (90 s with the defaults: 60 s + 30 s) and at most that clock skew in the future, its `jti` remembered until then; at the gateway every route gets that one clock skew, whether its tokens are JWTs or introspected. A reload that lengthens it (or a `clock_skew`) applies to proofs made after the reload; a proof the replaced configuration may have recorded is still refused once that configuration would have refused it (it may have been forgotten).',
      MAX_DPOP_IAT_WINDOW,
    ).prefault('60s'),
    nonce: z.boolean().default(false).meta({
      description:
        'Require server-issued nonces in proofs sent to resource servers (RFC 9449 §9, 401 `use_dpop_nonce`). The gateway hands out one kind for all its routes, still accepted after a reload; they are MACed with a key from `dpop.nonce_secret` when it is set, else, under `tessera serve`, one derived from the master key (every instance sharing either accepts them, also after a restart), else one random key per process (`tessera gateway`, the library: a restart or another instance refuses them, and the client retries with a new one). The token endpoint has its own, under another key: `token_service.dpop.nonce`.',
    }),
    nonce_secret: z
      .string()
      .min(32, 'use at least 32 characters, normally `${DPOP_NONCE_SECRET}` from the environment (e.g. `openssl rand -base64 32`)')
      .optional()
      .meta({
        description:
          'Key material for the nonces of `dpop.nonce`, normally `${DPOP_NONCE_SECRET}` from the environment; the MAC key is derived from it (HKDF), never the secret itself. Gateways and verifiers with the same secret accept each other’s nonces, across restarts: give it to every `tessera gateway` behind one load balancer (each still remembers proofs in its own memory, so a proof used at one may be presented again at another within `iat_window`; `tessera serve` records them in its store). Also under `tessera serve`, where it replaces the key derived from the master key. Changed by a reload, it applies at once: a nonce handed out under the old secret is refused from then on (401 `use_dpop_nonce` with a new one; the client retries). Default: under `tessera serve`, a key derived from the master key; under `tessera gateway` and in the library, a random key per process (nonces then end with the process and stay on one instance).',
      }),
    replay_cache_size: z.number().int().positive().default(100_000).meta({
      description:
        'Proof `jti`s remembered in memory, where no store keeps them (`tessera gateway`, the library); `tessera serve` records them in its store. One proof key may hold at most max(1000, this / 16) of them (6250 of the default: about 68 requests a second by one key with the default `iat_window` and `clock_skew`), and is refused with 429 `dpop_key_rate_limited` past that, so one bound token cannot fill the cache for every other caller.',
    }),
  })
  .superRefine((v, ctx) => {
    for (const [i, a] of (Array.isArray(v.algorithms) ? v.algorithms : []).entries()) {
      if (typeof a === 'string' && a.startsWith('HS'))
        ctx.addIssue({
          code: 'custom',
          path: ['algorithms', i],
          message: 'DPoP proofs are signed with asymmetric keys; remove HMAC algorithms',
        });
    }
  }, always)
  .meta({ description: 'DPoP (RFC 9449) sender-constrained tokens.' });

/** Everything the verifier reads. */
export const verifierFields = {
  issuers: z.array(issuerSchema).default([]).meta({ description: 'Trusted JWT issuers.' }),
  static_tokens: z.array(staticTokenSchema).default([]).meta({ description: 'Static gateway tokens.' }),
  introspection: introspectionSchema.optional(),
  scopes: scopeCatalogSchema.optional(),
  rules: z
    .array(ruleSchema)
    .optional()
    .meta({ description: 'Authorization rules evaluated by `verify` (the gateway has per-route rules).' }),
  case_insensitive_paths: z.boolean().default(false).meta({
    description:
      'Match `rules` paths ignoring case (`/Admin` is `/admin`), as Express routes by default; the Express adapter refuses to run case-sensitive rules under case-insensitive routing. Only literal segments: a `:param` keeps the case sent and claim conditions compare exactly. ASCII letters only: a path with a character that a case mapping makes an ASCII letter (`ı`, `ſ`, `İ`, Kelvin `K`, `ß`, `ﬁ`) is refused (`request_path_invalid`), as is one NFKC makes ASCII (fullwidth `ａ` and `／`, `ĳ`, `𝐚`, `²`; a soft hyphen or zero-width space in an otherwise ASCII segment), and a literal segment outside ASCII is refused at load. A trailing slash never matters.',
  }),
  transport: z
    .strictObject({
      form_body: z.boolean().default(false).meta({ description: 'Accept `access_token` in an urlencoded body (RFC 6750 §2.2).' }),
      query: z.boolean().default(false).meta({
        description:
          'Accept `access_token` in the URI query (RFC 6750 §2.3). Leaks tokens into logs. The gateway removes it before the upstream; its forward-auth endpoint refuses it (`forward_auth_query_token_refused`), since the proxy would forward it.',
      }),
    })
    .prefault({})
    .meta({ description: 'Where access tokens are accepted besides the Authorization header (RFC 6750 §2).' }),
  dpop: dpopSchema.prefault({}),
  max_token_size: z
    .number()
    .int()
    .min(256)
    .max(65536)
    .default(8192)
    .meta({ description: 'Tokens longer than this (bytes) are refused before decoding.' }),
  cache: z
    .strictObject({
      max_entries: z.number().int().min(0).default(10_000).meta({
        description:
          'Verified-result cache entries (0 disables), evicted oldest first. A JWT is cached from its second presentation, so tokens used once never displace tokens in steady use.',
      }),
    })
    .prefault({})
    .meta({
      description:
        'Verified-result cache, never serving a result past `exp`. A hit is an exact match of the whole token; entries live in memory only.',
    }),
  realm: z.string().optional().meta({ description: '`realm` in WWW-Authenticate challenges.' }),
  resource_metadata: z.string().optional().meta({ description: 'RFC 9728 metadata URL advertised in challenges.' }),
};

export const verifierConfigSchema = z
  .strictObject(verifierFields)
  .superRefine((v, ctx) => {
    // An invalid (non-list) value counts as configured: its own error is enough.
    const count = (x: unknown) => (Array.isArray(x) ? x.length : x === undefined ? 0 : 1);
    if (count(v.issuers) === 0 && count(v.static_tokens) === 0 && v.introspection === undefined) {
      ctx.addIssue({ code: 'custom', path: ['issuers'], message: 'configure at least one of issuers, static_tokens or introspection' });
    }
  }, always)
  .superRefine((v, ctx) => addConfigIssues(ctx, verifierChecks(v, trusted(ctx.issues)).issues), always);

/**
 * A rule that failed stands in as `{}`, keeping its id when that parsed (ids are compared across
 * rules): the others keep their paths, and nothing more is said about it than its own errors.
 * `unchecked` lists their positions, for the policy not to read the stand-in as a catch-all that
 * leaves every later rule unreached.
 */
export function parsedRules<R extends { readonly id?: string | undefined }>(
  rules: readonly R[],
  ok: Trusted,
): { rules: (R | { id?: string })[]; unchecked: Set<number> } {
  const unchecked = new Set<number>();
  const out = rules.map((rule, j) => {
    if (ok(j)) return rule;
    unchecked.add(j);
    return ok(j, 'id') && rule.id !== undefined ? { id: rule.id } : {};
  });
  return { rules: out, unchecked };
}

/**
 * The checks across the verifier's options, in the same parse as the field checks and on every
 * part that parsed: the scope catalogue (unknown implied scopes, cycles, names), the rules
 * (patterns, methods, repeated ids, and their scope names against the catalogue once the catalogue
 * parses), an issuer or a static token listed twice, inline keys that cannot be used. Key files are read when
 * the verifier is built. Returns the scope model names were checked against.
 */
export function verifierChecks(v: VerifierConfig, ok: Trusted): { scopes: ScopeModel; issues: ConfigIssue[] } {
  const compiled = compileScopes(ok('scopes') ? v.scopes : undefined, 'scopes');
  const issues = [...compiled.issues];
  if (Array.isArray(v.rules)) {
    const { rules, unchecked } = parsedRules(v.rules, (...p) => ok('rules', ...p));
    const options = { caseInsensitivePaths: ok('case_insensitive_paths') && v.case_insensitive_paths, unchecked };
    issues.push(...compilePolicy(rules, compiled.model, 'rules', options).issues);
  }
  const tokens = new Set<string>();
  for (const [n, s] of (Array.isArray(v.static_tokens) ? v.static_tokens : []).entries()) {
    if (!ok('static_tokens', n, 'token')) continue;
    if (tokens.has(s.token)) issues.push({ path: `static_tokens[${n}].token`, message: 'the same token value is configured twice' });
    tokens.add(s.token);
  }
  const issuers = new Set<string>();
  for (const [n, i] of (Array.isArray(v.issuers) ? v.issuers : []).entries()) {
    if (!ok('issuers', n, 'issuer')) continue;
    // Tokens are routed to their issuer's settings by `iss`: two entries would be two answers.
    if (issuers.has(i.issuer)) issues.push({ path: `issuers[${n}].issuer`, message: `issuer ${quoted(i.issuer)} is listed twice` });
    issuers.add(i.issuer);
  }
  for (const [n, i] of (Array.isArray(v.issuers) ? v.issuers : []).entries()) {
    // The keys the verifier will use: not with jwks_uri beside them (that is refused as it is).
    if (!['jwks', 'jwks_uri', 'algorithms'].every((p) => ok('issuers', n, p)) || i.jwks_uri !== undefined) continue;
    if (i.jwks !== undefined && 'keys' in i.jwks) loadLocalJwks(i.jwks, i.algorithms, `issuers[${n}].jwks`, issues);
  }
  return { scopes: compiled.model, issues };
}

/** Verifier options as written (before defaults). */
export type VerifierConfigInput = z.input<typeof verifierConfigSchema>;
/** Verifier options after validation and defaults. */
export type VerifierConfig = z.output<typeof verifierConfigSchema>;
