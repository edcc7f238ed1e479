/**
 * `createVerifier(options)`: validate options once, load keys, and return the compiled verifier.
 *
 * @module
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { everything, type Trusted } from './config/cross-check.ts';
import { parseConfig } from './config/parse.ts';
import {
  MAX_CLOCK_SKEW,
  type VerifierConfig,
  type VerifierConfigInput,
  verifierChecks,
  verifierConfigSchema,
} from './config/verifier-schema.ts';
import { ConfigError, type ConfigIssue } from './core/errors.ts';
import type { VerificationKey } from './core/jose/jwk.ts';
import { compilePolicy } from './core/policy.ts';
import type { Clock, Introspector, KeySource, ReplayCache } from './core/ports.ts';
import { printable } from './core/printable.ts';
import { createDpopNonces, type DpopNonceSource, type DpopWindowHistory, dpopNonceKeyFromSecret } from './core/verify/dpop.ts';
import { STATIC_SUBJECT_PREFIX } from './core/verify/principal.ts';
import { MemoryReplayCache } from './core/verify/replay.ts';
import type { RevocationCheck } from './core/verify/revocation.ts';
import { compileVerifier, dpopClockSkew, type IssuerOptions, type Verifier } from './core/verify/verifier.ts';
import { createIntrospectionClient, IntrospectionFailure } from './introspection/client.ts';
import { loadLocalJwks } from './jwks/local.ts';
import { RemoteJwks, type RemoteJwksStatus } from './jwks/remote.ts';

/** At most one introspection warning per this many ms; the failures between are counted in the next. */
const INTROSPECTION_WARNING_INTERVAL_MS = 30_000;

/**
 * The introspector, saying why it failed through `warn`: the caller only gets 503
 * `introspection_unavailable`, and the operator must learn whether the endpoint is down, slow or
 * refuses the gateway's client credentials. Throttled (an endpoint that is down fails every
 * request); only an {@link IntrospectionFailure}'s message is repeated, which names no secret.
 */
function warnOnFailure(introspector: Introspector, origin: string, clock: Clock, warn: ((m: string) => void) | undefined): Introspector {
  if (warn === undefined) return introspector;
  let last = Number.NEGATIVE_INFINITY;
  let suppressed = 0;
  return {
    introspect: (token) =>
      introspector.introspect(token).catch((e: unknown) => {
        const now = clock();
        if (now - last < INTROSPECTION_WARNING_INTERVAL_MS) suppressed++;
        else {
          const why = e instanceof IntrospectionFailure ? e.message : 'the introspector failed';
          const more = suppressed > 0 ? ` (${suppressed} more since the last warning)` : '';
          warn(`introspection at ${origin} failed: ${why}; requests get 503 introspection_unavailable${more}`);
          last = now;
          suppressed = 0;
        }
        throw e;
      }),
  };
}

/** At most one revocation-check warning per this many ms; the failures between are counted in the next. */
const REVOCATION_WARNING_INTERVAL_MS = 30_000;

/**
 * Why the application's revocation check gave no answer, through `warn`: the caller only gets 503
 * `revocation_unavailable`. Throttled (a check whose database is down fails every request); `why`
 * names the thrown error's class, never its message, which may quote the token.
 */
function revocationWarning(clock: Clock, warn: ((m: string) => void) | undefined): ((why: string) => void) | undefined {
  if (warn === undefined) return undefined;
  let last = Number.NEGATIVE_INFINITY;
  let suppressed = 0;
  return (why) => {
    const now = clock();
    if (now - last < REVOCATION_WARNING_INTERVAL_MS) {
      suppressed++;
      return;
    }
    const more = suppressed > 0 ? ` (${suppressed} more since the last warning)` : '';
    warn(`revocation check (isRevoked) ${why}; requests get 503 revocation_unavailable${more}`);
    last = now;
    suppressed = 0;
  };
}

/**
 * The introspector, with at most `max` calls under way: one more is refused at once (the caller
 * gets 503 `introspection_unavailable`), never queued, so a flood of distinct tokens costs the
 * endpoint at most `max` calls at a time and the process no unbounded list of pending ones.
 */
function boundInFlight(introspector: Introspector, max: number): Introspector {
  let inFlight = 0;
  const release = () => {
    inFlight--;
  };
  return {
    introspect(token) {
      if (inFlight >= max) {
        return Promise.reject(new IntrospectionFailure(`${max} calls were under way already (introspection.max_in_flight)`));
      }
      inFlight++;
      try {
        return introspector.introspect(token).finally(release);
      } catch (e) {
        release();
        return Promise.reject(e);
      }
    },
  };
}

/** Dependencies and code-only settings that do not belong in a YAML file. */
export interface VerifierRuntime {
  /** Clock in epoch milliseconds (tests). */
  readonly clock?: Clock;
  /**
   * Revocation view consulted on every request (the token service provides one). `isRevoked` must
   * answer `true` or `false` synchronously: one that throws or answers anything else (a promise:
   * an `async` function is not awaited) refuses the request with 503 `revocation_unavailable` and
   * `Retry-After` (fail closed), never a rejected `verify`; `onWarning` is told the thrown error's
   * class, never its message.
   */
  readonly revocation?: RevocationCheck;
  /** `fetch` for remote JWKS and introspection. */
  readonly fetch?: typeof fetch;
  /** Directory that relative `jwks.file` paths resolve against. */
  readonly baseDir?: string;
  /**
   * Replay cache for DPoP proof `jti`s (default: in memory, `dpop.replay_cache_size`, for this
   * verifier alone, each proof key holding at most max(1000, size / 16) of it). Instances, and a
   * process that restarts, share one kept in the store: `storeReplayCache(store)` from
   * `tessera/token-service`. `use` may be async; when it rejects or answers `'full'`, the proof is
   * refused with `dpop_replay_unavailable` (503); `'owner_full'` (the proof key's share is full)
   * refuses it with `dpop_key_rate_limited` (429).
   */
  readonly replay?: ReplayCache;
  /**
   * Nonce source when `dpop.nonce` is on and `dpop.nonce_secret` is not set (default: a random
   * secret for this verifier alone). Give verifiers one source for them to accept each other's
   * nonces (a gateway shares one across its verifiers and reloads). `dpop.nonce_secret`, when set,
   * wins: every verifier with the same secret accepts the others' nonces.
   */
  readonly dpopNonces?: DpopNonceSource;
  /**
   * The DPoP windows of the verifiers this one replaces, sharing its `replay` cache (a gateway's
   * reloads): a proof is held to the shortest window that may have recorded it, so a longer
   * `iat_window` or `clock_skew` does not accept again a proof its predecessor forgot. Call
   * {@link ManagedVerifier.retire} on a verifier once it is replaced.
   */
  readonly dpopWindows?: DpopWindowHistory;
  /**
   * The clock skew DPoP proofs get, seconds (default: the largest `clock_skew` of `issuers` and
   * `introspection`). A gateway gives every verifier it builds, one per kind of token, the value of
   * its whole configuration, so a proof gets the same on every route.
   */
  readonly dpopClockSkew?: number;
  /** Key sources by issuer, replacing `jwks`/`jwks_uri` (the in-process token service). */
  readonly keySources?: Readonly<Record<string, KeySource>>;
  /**
   * Introspector replacing the HTTP client built from `introspection`. It must settle within a
   * bounded time (a timeout of its own): a call that never settles holds one of the
   * `introspection.max_in_flight` slots for good.
   */
  readonly introspector?: Introspector;
  /**
   * Warnings (JWKS fetch failures, skipped keys, a revocation check that failed, at most one per
   * 30 s). Never contains key material or tokens.
   */
  readonly onWarning?: (message: string) => void;
  /** Environment for `${VAR}` substitution (default `process.env`). */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/** A verifier with its lifecycle. */
export interface ManagedVerifier extends Verifier {
  /** The validated, frozen options. */
  readonly config: VerifierConfig;
  /** Resolves when every remote JWKS has been fetched once (successfully or not). */
  ready(): Promise<void>;
  /** Remote JWKS status, for readiness probes (each `url` without its query values). */
  jwksStatus(): RemoteJwksStatus[];
  /**
   * The keys read from each issuer's `jwks.file` when the verifier was built, by issuer: one opaque
   * text per key, equal in this process for the same key (`kid`, material, and the algorithms it
   * verifies) read again. A gateway reload compares them to tell a file rewritten at the same path.
   * Optional for verifiers built otherwise.
   */
  readonly fileKeys?: ReadonlyMap<string, ReadonlySet<string>>;
  /**
   * Say that this verifier was replaced (a reload): with {@link VerifierRuntime.dpopWindows}, the
   * proofs it accepted, and any it still accepts in flight, are held by its successors to its DPoP
   * window. Optional for verifiers built otherwise.
   */
  retire?(): void;
}

// Key texts are MACs under a key of this process: a file may hold an `oct` key, whose RFC 7638
// thumbprint is a hash of the secret, and the texts are reachable on the verifier.
const keyTextKey = randomBytes(32);

/** A key as {@link ManagedVerifier.fileKeys} names it. */
function keyText(k: VerificationKey): string {
  return createHmac('sha256', keyTextKey)
    .update(JSON.stringify([k.kid ?? null, k.thumbprint, [...k.checks.keys()].sort()]))
    .digest('base64url');
}

/**
 * Create a verifier from options in the shape of `tessera.yaml`.
 *
 * @throws {ConfigError} listing every invalid option with its path.
 *
 * @example
 * ```ts
 * import { createVerifier } from 'tessera';
 *
 * const verifier = createVerifier({
 *   issuers: [{
 *     issuer: 'https://auth.example.com',
 *     audiences: ['https://api.example.com'],
 *     jwks_uri: 'https://auth.example.com/.well-known/jwks.json',
 *   }],
 *   scopes: { 'api:read': {}, 'api:write': { implies: ['api:read'] } },
 *   rules: [{ methods: ['GET'], path: '/items/**', scopes: ['api:read'] }],
 * });
 * const result = await verifier.verify({ method: 'GET', url: '/items/1', headers: req.headersDistinct });
 * if (result.ok) console.log(result.principal.subject);
 * else console.log(result.error.status, result.error.code, verifier.challenges(result.error));
 * ```
 */
export function createVerifier(options: VerifierConfigInput, runtime: VerifierRuntime = {}): ManagedVerifier {
  const config = parseConfig(verifierConfigSchema, options, {
    ...(runtime.env ? { env: runtime.env } : {}),
    // Key files in the same pass, so that their problems are reported with every other.
    check: (v, ok) => keyFileChecks(v, ok, runtime),
  });
  return createVerifierFromConfig(config, runtime);
}

/** Read the key files (`jwks.file`) of the issuers that parsed, as building the verifier will. */
function keyFileChecks(v: VerifierConfig, ok: Trusted, runtime: VerifierRuntime): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  for (const [n, i] of (Array.isArray(v.issuers) ? v.issuers : []).entries()) {
    if (!['issuer', 'jwks', 'jwks_uri', 'algorithms'].every((p) => ok('issuers', n, p))) continue;
    if (i.jwks === undefined || !('file' in i.jwks) || i.jwks_uri !== undefined || runtime.keySources?.[i.issuer]) continue;
    loadLocalJwks(i.jwks, i.algorithms, `issuers[${n}].jwks`, issues, runtime.baseDir);
  }
  return issues;
}

/**
 * The resource-server nonces (RFC 9449 §9): under `dpop.nonce_secret` when it is set (so instances
 * sharing it accept each other's, whatever their host gives), else the host's source, else a
 * random key of this verifier.
 */
function dpopNonceSource(secret: string | undefined, host: DpopNonceSource | undefined, clock: Clock): DpopNonceSource {
  if (secret !== undefined) return createDpopNonces({ secret: dpopNonceKeyFromSecret(secret), clock });
  return host ?? createDpopNonces({ clock });
}

/** Like {@link createVerifier} for options that were already validated (by a larger config). */
export function createVerifierFromConfig(config: VerifierConfig, runtime: VerifierRuntime = {}, prefix = ''): ManagedVerifier {
  // Warnings quote what others chose (a key set's kid, an introspection endpoint's answer): escaped
  // once here for every source, so a caller's own logger or callback gets one safe line.
  const warn = runtime.onWarning;
  if (warn) runtime = { ...runtime, onWarning: (m: string) => warn(printable(m)) };
  const at = (p: string) => (prefix ? `${prefix}.${p}` : p);
  const clock = runtime.clock ?? Date.now;

  // The schema ran these checks already; they run again for options built without it. What only
  // building finds is a key file that cannot be read.
  const checked = verifierChecks(config, everything);
  const issues: ConfigIssue[] = checked.issues.map((i) => ({ path: at(i.path), message: i.message }));
  const scopes = checked.scopes;
  const policy = config.rules
    ? compilePolicy(config.rules, scopes, at('rules'), { caseInsensitivePaths: config.case_insensitive_paths }).policy
    : undefined;

  const remotes: RemoteJwks[] = [];
  const fileKeys = new Map<string, ReadonlySet<string>>();
  const issuers: IssuerOptions[] = config.issuers.map((i, n) => {
    let keys: KeySource;
    const provided = runtime.keySources?.[i.issuer];
    if (provided) keys = provided;
    else if (i.jwks_uri !== undefined) {
      const remote = new RemoteJwks({
        url: i.jwks_uri,
        algorithms: i.algorithms,
        minTtl: i.jwks_cache.min_ttl,
        maxTtl: i.jwks_cache.max_ttl,
        defaultTtl: i.jwks_cache.default_ttl,
        missCooldown: i.jwks_cache.miss_cooldown,
        maxStale: i.jwks_cache.max_stale,
        timeout: i.jwks_cache.timeout,
        clock,
        ...(runtime.fetch ? { fetch: runtime.fetch } : {}),
        ...(runtime.onWarning ? { onWarning: runtime.onWarning } : {}),
      });
      remotes.push(remote);
      keys = remote;
    } else {
      const jwks = i.jwks as NonNullable<typeof i.jwks>;
      // Inline keys were checked with the rest.
      const set = loadLocalJwks(jwks, i.algorithms, at(`issuers[${n}].jwks`), 'file' in jwks ? issues : [], runtime.baseDir);
      if ('file' in jwks) fileKeys.set(i.issuer, new Set(set.keys.map(keyText)));
      keys = set;
    }
    return {
      issuer: i.issuer,
      audiences: i.audiences,
      algorithms: i.algorithms,
      keys,
      scopeClaim: i.scope_claim,
      clientClaim: i.client_claim,
      typ: i.token_type === undefined ? undefined : i.token_type.toLowerCase().replace(/^application\//, ''),
      requiredClaims: i.required_claims,
      clockSkew: i.clock_skew,
      maxLifetime: i.max_lifetime,
      delegationClaim: i.delegation_claim,
    };
  });

  const staticTokens = config.static_tokens.map((s) => ({
    id: s.id,
    digest: createHash('sha256').update(s.token).digest(),
    subject: s.subject ?? `${STATIC_SUBJECT_PREFIX}${s.id}`,
    scopes: Object.freeze([...s.scopes]),
  }));

  const intro = config.introspection;
  const introspection = intro
    ? {
        introspector: warnOnFailure(
          boundInFlight(
            runtime.introspector ??
              createIntrospectionClient({
                endpoint: intro.endpoint,
                clientId: intro.client_id,
                clientSecret: intro.client_secret,
                timeout: intro.timeout,
                ...(runtime.fetch ? { fetch: runtime.fetch } : {}),
              }),
            intro.max_in_flight,
          ),
          new URL(intro.endpoint).origin,
          clock,
          runtime.onWarning,
        ),
        issuer: intro.issuer ?? new URL(intro.endpoint).origin,
        audiences: intro.audiences,
        cacheMaxTtl: intro.cache_max_ttl,
        clockSkew: intro.clock_skew,
        scopeClaim: intro.scope_claim,
      }
    : undefined;

  if (issues.length > 0) throw new ConfigError(issues);

  const dpopAlgorithms = config.dpop.algorithms;
  const windows = config.dpop.mode === 'disabled' ? undefined : runtime.dpopWindows;
  const dpopSkew = runtime.dpopClockSkew ?? dpopClockSkew(issuers, introspection);
  // Fail closed: NaN would let every iat pass the window check.
  if (!(Number.isFinite(dpopSkew) && dpopSkew >= 0 && dpopSkew <= MAX_CLOCK_SKEW)) {
    throw new TypeError(`dpopClockSkew must be a number of seconds from 0 to ${MAX_CLOCK_SKEW}`);
  }
  const ownWindow = windows?.open(config.dpop.iat_window + dpopSkew);
  const verifier = compileVerifier({
    issuers,
    staticTokens,
    introspection,
    transport: { formBody: config.transport.form_body, query: config.transport.query },
    maxTokenSize: config.max_token_size,
    scopes,
    policy,
    dpop: {
      mode: config.dpop.mode,
      algorithms: new Set(dpopAlgorithms),
      iatWindow: config.dpop.iat_window,
      clockSkew: dpopSkew,
      replay: runtime.replay ?? new MemoryReplayCache({ maxEntries: config.dpop.replay_cache_size, clock }),
      nonces: config.dpop.nonce ? dpopNonceSource(config.dpop.nonce_secret, runtime.dpopNonces, clock) : undefined,
      ...(windows && ownWindow ? { history: { windows, own: ownWindow } } : {}),
    },
    cacheSize: config.cache.max_entries,
    revocation: runtime.revocation,
    onRevocationFailure: revocationWarning(clock, runtime.onWarning),
    clock,
    challenge: {
      ...(config.realm !== undefined ? { realm: config.realm } : {}),
      ...(config.resource_metadata !== undefined ? { resourceMetadata: config.resource_metadata } : {}),
      schemes: config.dpop.mode === 'disabled' ? ['Bearer'] : config.dpop.mode === 'required' ? ['DPoP'] : ['Bearer', 'DPoP'],
      dpopAlgorithms,
    },
  });

  let readyPromise: Promise<void> | undefined;
  return Object.freeze({
    ...verifier,
    config,
    ready: () => {
      readyPromise ??= Promise.all(remotes.map((r) => r.load())).then(() => undefined);
      return readyPromise;
    },
    jwksStatus: () => remotes.map((r) => r.status),
    fileKeys,
    retire: () => {
      if (windows && ownWindow) windows.retire(ownWindow);
    },
  });
}
