/**
 * Configuration of the token service (authorization server) and its store: the single source of
 * their defaults, validation and docs. The top-level schema (`schema.ts`) imports both.
 *
 * @module
 */
import { isAbsolute, join } from 'node:path';
import { z } from 'zod';
import { always, trusted } from './cross-check.ts';
import { duration, secureUrl } from './verifier-schema.ts';

/** Algorithms `tessera init` and `tessera keys rotate` can generate signing keys for. */
export const SIGNING_ALGORITHMS = ['ES256', 'EdDSA', 'RS256'] as const;
export type SigningAlgorithm = (typeof SIGNING_ALGORITHMS)[number];

const keysSchema = z
  .strictObject({
    algorithm: z
      .enum(SIGNING_ALGORITHMS, {
        error: (i) => `"${String(i.input)}" cannot be generated; use one of ${SIGNING_ALGORITHMS.join(', ')}`,
      })
      .default('ES256')
      .meta({ description: 'Algorithm of newly generated signing keys: ES256 (default), EdDSA (Ed25519) or RS256 (3072-bit).' }),
    publish_ahead: duration(
      'How long a new key is published in the JWKS before it signs, so every verifier has fetched it first. At least `jwks_max_age`.',
    ).prefault('1h'),
    jwks_max_age: duration('`Cache-Control: max-age` of the JWKS response: how long verifiers may cache the key set.').prefault('10m'),
    rotation_interval: duration(
      'When set, a running server pre-publishes a new key once the active key is this old (otherwise rotate with `tessera keys rotate`).',
    ).optional(),
  })
  .prefault({})
  .meta({ description: 'Signing keys: algorithm and rotation schedule.' });

const authorizationSchema = z
  .strictObject({
    code_ttl: duration(
      'Lifetime of an authorization code: it is redeemed by the client right after the redirect (OAuth 2.1 recommends a short lifetime; at most 60 s).',
      60,
    ).prefault('60s'),
    grant_ttl: duration(
      "How long a person's approval lasts: refresh tokens rotate within it and never outlive it; after it the person is asked again.",
    ).prefault('30d'),
  })
  .prefault({})
  .meta({ description: 'The authorization code grant (a person delegating to a client, with PKCE and consent).' });

export const tokenServiceSchema = z
  .strictObject({
    issuer: secureUrl('Issuer identifier (`iss`) and base URL of the endpoints; defaults to `server.public_url`, then http://host:port.')
      .refine((v) => !URL.canParse(v) || (!new URL(v).search && !new URL(v).hash), {
        message: 'an issuer identifier has no query or fragment (RFC 8414 §2)',
      })
      .optional(),
    access_token_ttl: duration('Default access-token lifetime (clients may have their own, up to `max_access_token_ttl`).').prefault('10m'),
    max_access_token_ttl: duration('Longest access-token lifetime any client may be given.', 86_400).prefault('1h'),
    refresh_token_ttl: duration('Refresh-token lifetime, renewed at each rotation; a refresh token never outlives its grant.').prefault(
      '24h',
    ),
    refresh_reuse_grace: duration(
      'A rotated refresh token presented again within this time is refused without revoking its family (for clients that retry). 0 treats every reuse as theft.',
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
      'Longest remaining lifetime accepted for a private_key_jwt client assertion (bounds the replay cache).',
      3600,
    ).prefault('5m'),
    admin: z
      .strictObject({
        scope: z.string().min(1).default('tessera:admin').meta({ description: 'Scope an access token needs to call the admin API.' }),
        audience: z.string().min(1).optional().meta({ description: 'Audience an admin access token must carry (default: the issuer).' }),
      })
      .prefault({})
      .meta({ description: 'The admin API (revocation by grant, subject or client; grant trees).' }),
    keys: keysSchema,
    authorization: authorizationSchema,
    sync_interval: duration(
      'How often a running server reads changes made by other processes (revocations, clients, keys). In-process changes apply at once; on PostgreSQL, revocations are also pushed within milliseconds and this poll is the fallback.',
      60,
    ).prefault('1s'),
    audit_flush_interval: duration('Longest time an audit event waits in memory before it is written to the store.', 10).prefault('200ms'),
    grant_retention: duration('How long expired grants are kept (for `tessera grants tree` and audit) before they are pruned.').prefault(
      '30d',
    ),
  })
  .superRefine((v, ctx) => {
    const ok = trusted(ctx.issues);
    if (ok('keys', 'publish_ahead') && ok('keys', 'jwks_max_age') && v.keys.publish_ahead < v.keys.jwks_max_age) {
      ctx.addIssue({
        code: 'custom',
        path: ['keys', 'publish_ahead'],
        message: `must be at least keys.jwks_max_age (${v.keys.jwks_max_age}s): a verifier caching the JWKS that long would not know the new key when it starts signing`,
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
      .enum(['sqlite', 'postgres'], { error: (i) => `"${String(i.input)}" is not a store driver; use "sqlite" or "postgres"` })
      .default('sqlite')
      .meta({ description: '`sqlite`: an embedded file under `data_dir` (one instance). `postgres`: shared by several instances.' }),
    sqlite: z
      .strictObject({
        path: z
          .string()
          .min(1)
          .optional()
          .meta({ description: 'Database file (default `<data_dir>/tessera.db`; relative to `data_dir`).' }),
        busy_timeout: duration('How long a write waits for another process holding the lock.', 60).prefault('5s'),
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

export type TokenServiceConfig = z.output<typeof tokenServiceSchema>;
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
  | { readonly driver: 'postgres'; readonly url: string; readonly schema: string; readonly poolSize: number };

export function resolveStore(config: { readonly store?: StoreConfig | undefined; readonly data_dir: string }): ResolvedStore {
  const s = config.store ?? storeSchema.parse({});
  if (s.driver === 'postgres' && s.postgres !== undefined) {
    return { driver: 'postgres', url: s.postgres.url, schema: s.postgres.schema, poolSize: s.postgres.pool_size };
  }
  const path = s.sqlite.path ?? 'tessera.db';
  return {
    driver: 'sqlite',
    path: path === ':memory:' || isAbsolute(path) ? path : join(config.data_dir, path),
    busyTimeoutMs: Math.round(s.sqlite.busy_timeout * 1000),
  };
}
