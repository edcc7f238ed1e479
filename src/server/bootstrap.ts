/**
 * Wiring the token service from `tessera.yaml`: the store (SQLite under `data_dir`), the master key
 * (`TESSERA_MASTER_KEY`, else `<data_dir>/master.key`), the verifier for trusted external issuers
 * (subject tokens of token exchange), and remote JWKS for `private_key_jwt` clients. The CLI and
 * `tessera serve` both start here.
 *
 * @module
 */
import { chmodSync, existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { AuditEventsDropped, AuditEventsLost } from '../audit/pipeline.ts';
import { readOwnerOnlyFile } from '../config/owner-only-file.ts';
import type { TesseraConfig } from '../config/schema.ts';
import { resolveStore, resolveTokenService } from '../config/token-service-schema.ts';
import { ASYMMETRIC_ALGORITHMS } from '../core/jose/algorithms.ts';
import type { Clock } from '../core/ports.ts';
import { RevocationList } from '../core/verify/revocation.ts';
import { generateMasterKey, type MasterKey, MasterKeyError, parseMasterKey } from '../issuer/secrets.ts';
import { TokenService } from '../issuer/service.ts';
import { RemoteJwks } from '../jwks/remote.ts';
import type { Store } from '../store/contract.ts';
import { PostgresStore } from '../store/postgres/store.ts';
import { SqliteStore } from '../store/sqlite/store.ts';
import { createVerifierFromConfig } from '../verifier.ts';
import { checkDataDir, checkStoreDir } from './data-dir.ts';

export { checkDataDir, DATA_DIR_ERROR_CODES, DataDirError, type DataDirErrorCode } from './data-dir.ts';

/** The environment variable holding the master key, which takes precedence over `<data_dir>/master.key`. */
export const MASTER_KEY_ENV = 'TESSERA_MASTER_KEY';
export const MASTER_KEY_FILE = 'master.key';

/**
 * Create `data_dir` (owner-only) when it does not exist; refuse an existing one other users could
 * change ({@link checkDataDir}: neither the user's own nor root's, or writable by its group or others) with a
 * {@link DataDirError}.
 */
export function ensureDataDir(dataDir: string): string | undefined {
  if (existsSync(dataDir)) {
    checkDataDir(dataDir);
    return undefined;
  }
  return makeDirectories(dataDir);
}

/**
 * `mkdir -p`, one directory at a time, each owner-only; returns the first directory it made (what
 * a caller undoing its work may remove). Not `mkdirSync(…, { recursive: true })`: where mkdir
 * answers ENOENT under a parent that exists (/proc) it loops at full CPU for ever. One made by
 * another process meanwhile is taken as there.
 */
function makeDirectories(dir: string): string | undefined {
  const missing: string[] = [];
  for (let d = resolve(dir); !existsSync(d); d = dirname(d)) {
    missing.unshift(d);
    if (dirname(d) === d) break;
  }
  let first: string | undefined;
  for (const d of missing) {
    try {
      mkdirSync(d, { mode: 0o700 });
      first ??= d;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || !statSync(d).isDirectory()) throw e;
    }
  }
  return first;
}

/**
 * The master key: `TESSERA_MASTER_KEY` when set, else `<data_dir>/master.key`. With `create`, a
 * missing file is generated with mode 0600 (development). A key file readable by group or others is
 * refused.
 *
 * @returns the key and where it came from, or `undefined` when there is none and `create` is off.
 */
export function loadMasterKey(
  dataDir: string,
  options: { readonly env?: Readonly<Record<string, string | undefined>>; readonly create?: boolean } = {},
): { key: MasterKey; source: 'env' | 'file' | 'generated' } | undefined {
  const env = options.env ?? process.env;
  const fromEnv = env[MASTER_KEY_ENV];
  if (fromEnv !== undefined && fromEnv !== '') {
    try {
      return { key: parseMasterKey(fromEnv), source: 'env' };
    } catch (e) {
      throw new MasterKeyError('master_key_malformed', `${MASTER_KEY_ENV}: ${(e as Error).message}`);
    }
  }
  const file = join(dataDir, MASTER_KEY_FILE);
  if (existsSync(file)) {
    // Whoever may write to the directory may replace the key (or what it opens) with their own.
    checkDataDir(dataDir);
    // As for secrets.env: a regular file of the user Tessera runs as, not a link that another
    // user could point elsewhere, and not readable by others; checked on what is read.
    let text: string;
    try {
      text = readOwnerOnlyFile(file, (message) => new MasterKeyError('master_key_file_unsafe', message));
    } catch (e) {
      if (e instanceof MasterKeyError) throw e;
      throw new MasterKeyError('master_key_unreadable', `${file}: ${(e as Error).message}`);
    }
    try {
      return { key: parseMasterKey(text), source: 'file' };
    } catch (e) {
      throw new MasterKeyError(e instanceof MasterKeyError ? e.code : 'master_key_unreadable', `${file}: ${(e as Error).message}`);
    }
  }
  if (!options.create) return undefined;
  ensureDataDir(dataDir);
  const { key, text } = generateMasterKey();
  writeFileSync(file, `${text}\n`, { mode: 0o600, flag: 'wx' });
  chmodSync(file, 0o600);
  return { key, source: 'generated' };
}

/**
 * Open the configured store (creating the SQLite file and `data_dir`, or the PostgreSQL schema).
 * `onWarning` hears the PostgreSQL store's lost connections (one line each, never the URL).
 * A data directory, or a `store.sqlite.path` directory, that other local users could change is
 * refused with a {@link DataDirError} ({@link checkDataDir}, {@link checkStoreDir}).
 * On Node 22, loading `tessera/token-service` prints Node's `ExperimentalWarning: SQLite is an
 * experimental feature` once (README, Node 22); the library leaves that warning to the application.
 *
 * @example
 * ```ts
 * import { loadConfigFile, openStore } from 'tessera/token-service';
 *
 * const store = await openStore(loadConfigFile('tessera.yaml'));
 * console.log(store.kind); // sqlite or postgres
 * await store.close();
 * ```
 */
export async function openStore(config: TesseraConfig, options: { readonly onWarning?: (message: string) => void } = {}): Promise<Store> {
  const s = resolveStore(config);
  if (s.driver === 'postgres') {
    return PostgresStore.open({
      connectionString: s.url,
      schema: s.schema,
      max: s.poolSize,
      requestTimeoutMillis: s.requestTimeoutMs,
      ...(options.onWarning ? { onWarning: options.onWarning } : {}),
    });
  }
  if (s.path !== ':memory:') {
    ensureDataDir(config.data_dir);
    // A database elsewhere (store.sqlite.path) gets the data directory's check on its own directory.
    const dir = dirname(s.path);
    if (resolve(dir) !== resolve(config.data_dir) && existsSync(dir)) checkStoreDir(s.path);
  }
  return SqliteStore.open({ path: s.path, busyTimeoutMs: s.busyTimeoutMs });
}

/** What {@link createTokenServiceFromConfig} needs besides the configuration: the store and the master key. */
export interface TokenServiceRuntime {
  readonly store: Store;
  readonly master: MasterKey | undefined;
  readonly clock?: Clock;
  readonly revocations?: RevocationList;
  readonly fetch?: typeof fetch;
  readonly onWarning?: (message: string) => void;
  /**
   * Told of each warning about the configuration itself (an issuer of `issuers` without
   * `exchange_clients`), apart from the service's own failures; default: {@link onWarning}.
   * `tessera serve` logs these as it logs those of a reload, `event: config_warning`.
   */
  readonly onConfigWarning?: (message: string) => void;
  /** `TokenServiceOptions.onAuditEventsLost`: the audit events `close()` could not write by its deadline. */
  readonly onAuditEventsLost?: (lost: AuditEventsLost) => void;
  /** `TokenServiceOptions.onAuditEventsDropped`: with `audit.on_queue_full: refuse`, the events a full queue dropped. */
  readonly onAuditEventsDropped?: (dropped: AuditEventsDropped) => void;
  /** Directory that relative `issuers[].jwks.file` paths resolve against: the configuration file's (default: the working directory). */
  readonly baseDir?: string;
}

/**
 * The verifier the token service uses for subject and actor tokens of the other issuers in
 * `issuers` (token exchange), the longest lifetime they allow (how long a revocation of one of
 * their subjects is kept), their identifiers, the clients each lets exchange its tokens
 * (`exchange_clients`; an issuer without the setting is absent: any exchange client), and a
 * warning for each issuer without it. `undefined` when Tessera is the only issuer.
 */
export function externalIssuers(
  config: TesseraConfig,
  revocations: RevocationList,
  runtime: Pick<TokenServiceRuntime, 'clock' | 'fetch' | 'onWarning' | 'baseDir'> = {},
): {
  verifier: ReturnType<typeof createVerifierFromConfig> | undefined;
  maxLifetime: number;
  issuers: readonly string[];
  exchangeClients: ReadonlyMap<string, ReadonlySet<string>>;
  warnings: readonly string[];
} {
  const ts = resolveTokenService(config);
  const external = config.issuers.filter((i) => i.issuer !== ts.issuer);
  const verifier =
    external.length === 0
      ? undefined
      : createVerifierFromConfig(
          { ...config, issuers: external, static_tokens: [], introspection: undefined, rules: undefined },
          {
            ...(runtime.clock ? { clock: runtime.clock } : {}),
            revocation: revocations,
            ...(runtime.fetch ? { fetch: runtime.fetch } : {}),
            ...(runtime.onWarning ? { onWarning: runtime.onWarning } : {}),
            ...(runtime.baseDir !== undefined ? { baseDir: runtime.baseDir } : {}),
          },
        );
  const exchangeClients = new Map<string, ReadonlySet<string>>();
  const warnings: string[] = [];
  for (const [n, i] of config.issuers.entries()) {
    if (i.issuer === ts.issuer) continue;
    if (i.exchange_clients !== undefined) exchangeClients.set(i.issuer, new Set(i.exchange_clients));
    else {
      warnings.push(
        `issuers[${n}] (${i.issuer}): every client registered for token exchange may exchange this issuer’s tokens; list the clients that may in issuers[${n}].exchange_clients, or write exchange_clients: [] if none should (the gateway alone trusts the issuer)`,
      );
    }
  }
  return {
    verifier,
    maxLifetime: Math.max(86_400, ...external.map((i) => i.max_lifetime)),
    issuers: external.map((i) => i.issuer),
    exchangeClients,
    warnings,
  };
}

/**
 * Build the token service for a validated configuration. Call `start()` on the result, and
 * `close()` before closing the store.
 *
 * @example
 * ```ts
 * import { createTokenServiceFromConfig, loadConfigFile, loadMasterKey, openStore } from 'tessera/token-service';
 *
 * const config = loadConfigFile('tessera.yaml');
 * const store = await openStore(config);
 * const service = createTokenServiceFromConfig(config, { store, master: loadMasterKey(config.data_dir)?.key });
 * await service.start();
 * console.log(service.issuer);
 * ```
 */
export function createTokenServiceFromConfig(config: TesseraConfig, runtime: TokenServiceRuntime): TokenService {
  const ts = resolveTokenService(config);
  // One list for the service and the external verifier, so a revoked subject's IdP tokens are refused too.
  const revocations = runtime.revocations ?? new RevocationList();
  const external = externalIssuers(config, revocations, runtime);
  const configWarning = runtime.onConfigWarning ?? runtime.onWarning;
  for (const w of external.warnings) configWarning?.(w);
  return new TokenService({
    config: ts,
    store: runtime.store,
    master: runtime.master,
    scopes: config.scopes,
    externalVerifier: external.verifier,
    externalMaxLifetime: external.maxLifetime,
    externalIssuers: external.issuers,
    externalExchangeClients: external.exchangeClients,
    // The gateway's verifiers accept these: the token endpoint binds tokens to keys they take proofs of.
    dpopAlgorithms: config.dpop.algorithms,
    remoteKeys: (url) =>
      new RemoteJwks({
        url,
        algorithms: ASYMMETRIC_ALGORITHMS,
        minTtl: 60,
        maxTtl: 86_400,
        defaultTtl: 600,
        missCooldown: 30,
        maxStale: 86_400,
        timeout: 5,
        ...(runtime.clock ? { clock: runtime.clock } : {}),
        ...(runtime.fetch ? { fetch: runtime.fetch } : {}),
        ...(runtime.onWarning ? { onWarning: runtime.onWarning } : {}),
      }),
    revocations,
    ...(runtime.clock ? { clock: runtime.clock } : {}),
    ...(runtime.onWarning ? { onWarning: runtime.onWarning } : {}),
    ...(runtime.onAuditEventsLost ? { onAuditEventsLost: runtime.onAuditEventsLost } : {}),
    ...(runtime.onAuditEventsDropped ? { onAuditEventsDropped: runtime.onAuditEventsDropped } : {}),
    // The top-level audit section bounds the token service's queue too, and says what happens when it is full.
    ...(config.audit !== undefined ? { auditMaxQueue: config.audit.max_queue, auditOnQueueFull: config.audit.on_queue_full } : {}),
  });
}
