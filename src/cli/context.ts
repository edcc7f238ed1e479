/**
 * What the token-service commands share: finding and loading `tessera.yaml` (or its defaults when
 * there is none), opening the store and the master key, building a token service that has read
 * the store once, and turning the expected failures into one-line CLI errors.
 */
import { existsSync, lstatSync, readlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { within } from '../audit/batching.ts';
import type { AuditEventsDropped, AuditEventsLost } from '../audit/pipeline.ts';
import { loadConfigFile, resolveConfigPaths } from '../config/load.ts';
import { type ConfigCheck, parseConfig } from '../config/parse.ts';
import { configSchema, type TesseraConfig } from '../config/schema.ts';
import { configEnv } from '../config/secrets-env.ts';
import { resolveStore } from '../config/token-service-schema.ts';
import { ConfigError } from '../core/errors.ts';
import { OAuthError } from '../core/oauth-errors.ts';
import { ClientInputError } from '../issuer/clients.ts';
import { type MasterKey, MasterKeyError } from '../issuer/secrets.ts';
import type { TokenService } from '../issuer/service.ts';
import { checkDataDir, createTokenServiceFromConfig, loadMasterKey, MASTER_KEY_ENV, openStore } from '../server/bootstrap.ts';
import { type Store, StoreConflictError, StoreUnavailableError } from '../store/contract.ts';
import { configPath } from './options.ts';
import { CliError } from './output.ts';

// The light helpers (option parsers, `--config`) live in options.ts, which every command's
// definition imports without loading the configuration, the store or the token service.
export { configPath, DEFAULT_CONFIG, hostArg, iso, list, portArg, readArg, ttlArg, ttlWithin, withConfig } from './options.ts';

/**
 * Whether the configuration file `path` exists. A symbolic link that leads to no file (its target
 * moved, a volume not mounted yet, a loop of links) is refused naming it: taken for a missing
 * `./tessera.yaml`, it would mean the defaults, and with them whatever store ./.tessera holds; for
 * `tessera init`, a file written through it somewhere else.
 */
export function configFileExists(path: string): boolean {
  if (existsSync(path)) return true;
  if (lstatSync(path, { throwIfNoEntry: false })?.isSymbolicLink() !== true) return false;
  throw new ConfigError(
    [
      {
        path: '(file)',
        message: `${path} is a symbolic link to ${readlinkSync(path)}, which leads to no file (its target is missing, or the links loop); point it at the configuration file, or remove it`,
      },
    ],
    path,
  );
}

/**
 * Load the configuration. A missing `./tessera.yaml` gives the defaults (`data_dir: .tessera`, port
 * 8080), so `tessera init` and the first commands work before any file exists; a file named by
 * `--config` or `TESSERA_CONFIG` must exist. A relative `data_dir` is resolved against the file's
 * directory; `${VAR}`s the environment leaves unset are taken from `<data_dir>/secrets.env`.
 * `check` adds the command's own checks of a file (how it runs the gateway) to the same error.
 */
export function loadConfig(
  option: string | undefined,
  options: { readonly env?: Readonly<Record<string, string | undefined>>; readonly check?: ConfigCheck<TesseraConfig> } = {},
): { config: TesseraConfig; path: string; exists: boolean } {
  const path = configPath(option);
  const exists = configFileExists(path);
  // A mistyped --config must not quietly mean the defaults, and with them whatever store
  // ./.tessera holds.
  if (!exists && (option ?? process.env.TESSERA_CONFIG) !== undefined) {
    throw new ConfigError(
      [
        {
          path: '(file)',
          message: `${path} does not exist; check --config (or TESSERA_CONFIG), or create it with \`tessera init --config ${path}\``,
        },
      ],
      path,
    );
  }
  const loaded = exists
    ? loadConfigFile(path, configEnv(path, options.env ?? process.env), { check: options.check })
    : parseConfig(configSchema, {});
  return { config: resolveConfigPaths(loaded, dirname(path)), path, exists };
}

export interface ServiceContext {
  readonly config: TesseraConfig;
  readonly store: Store;
  readonly service: TokenService;
  readonly master: MasterKey | undefined;
  /**
   * `auditTimeoutMs`: how long audit events the store refuses are retried (TokenService.close);
   * closing the store is bounded by it too (a PostgreSQL pool waits for a statement held by a lock).
   */
  close(options?: { readonly auditTimeoutMs?: number }): Promise<void>;
}

/**
 * Open the store and build a token service that has synced once. With `needMaster`, a missing
 * master key is a one-line error naming where it is looked for. `onWarning` hears the service's
 * background failures (store sync, lost revocation push); never a token or secret; `onConfigWarning`
 * its warnings about the configuration (default: `onWarning`);
 * `onAuditEventsLost` the audit events its close could not write by the deadline,
 * `onAuditEventsDropped` those a full queue dropped (`audit.on_queue_full: refuse`). `check` is
 * {@link loadConfig}'s.
 */
export async function openService(
  option: string | undefined,
  needMaster: boolean,
  runtime: {
    readonly onWarning?: (message: string) => void;
    readonly onConfigWarning?: (message: string) => void;
    readonly onAuditEventsLost?: (lost: AuditEventsLost) => void;
    readonly onAuditEventsDropped?: (dropped: AuditEventsDropped) => void;
    readonly check?: ConfigCheck<TesseraConfig>;
  } = {},
): Promise<ServiceContext> {
  const { config, path } = loadConfig(option, runtime.check ? { check: runtime.check } : {});
  if (!existsSync(config.data_dir)) {
    throw new CliError(`no data directory at ${config.data_dir}; run \`tessera init\` first`);
  }
  // Whatever the store and wherever the master key: secrets.env is read from it too.
  checkDataDir(config.data_dir);
  let master: MasterKey | undefined;
  try {
    master = loadMasterKey(config.data_dir)?.key;
  } catch (e) {
    throw new CliError(e instanceof Error ? e.message : String(e));
  }
  if (needMaster && master === undefined) {
    throw new CliError(`no master key: set ${MASTER_KEY_ENV} or run \`tessera init\` to create ${config.data_dir}/master.key`);
  }
  const store = await openStore(config, runtime.onWarning ? { onWarning: runtime.onWarning } : {});
  // Key files of the issuers token exchange trusts are the configuration file's neighbours, as for the gateway.
  const service = createTokenServiceFromConfig(config, {
    store,
    master,
    baseDir: dirname(path),
    ...(runtime.onWarning ? { onWarning: runtime.onWarning } : {}),
    ...(runtime.onConfigWarning ? { onConfigWarning: runtime.onConfigWarning } : {}),
    ...(runtime.onAuditEventsLost ? { onAuditEventsLost: runtime.onAuditEventsLost } : {}),
    ...(runtime.onAuditEventsDropped ? { onAuditEventsDropped: runtime.onAuditEventsDropped } : {}),
  });
  await service.start({ background: false });
  if (needMaster) {
    // Another master key than the store's keys were sealed with (a stale TESSERA_MASTER_KEY) would
    // seal keys and hash secrets that nothing else opens, and a server would sign nothing and check
    // no client secret behind a ready /readyz: refused before anything is written or served.
    try {
      verifyMasterKey(service, config.data_dir);
    } catch (e) {
      await service.close();
      await store.close();
      throw e;
    }
  }
  return {
    config,
    store,
    service,
    master,
    async close(options) {
      if (options?.auditTimeoutMs === undefined) {
        await service.close();
        await store.close();
        return;
      }
      const deadline = performance.now() + options.auditTimeoutMs;
      await service.close(options);
      // Given up on, the pool still ends once the server has ended the statement (its lock_timeout).
      await within(store.close(), deadline - performance.now());
    },
  };
}

/**
 * Refuse a master key that does not open the store's signing keys (`KeyManager.verifyMaster`),
 * in one line naming where it was read from (reason `master_key_mismatch`). With a single key, a
 * row altered behind the server (its schedule, the associated data of its seal) cannot be told
 * from another master key: both are named.
 */
export function verifyMasterKey(service: TokenService, dataDir: string): void {
  try {
    service.keys.verifyMaster();
  } catch (e) {
    if (!(e instanceof MasterKeyError)) throw e;
    throw new CliError(
      `the master key (${MASTER_KEY_ENV}, else ${dataDir}/master.key) does not open the signing keys in the store: it is not the one they were sealed with, or the row of the key signing now was altered in the store (\`tessera keys list\` names it and why)`,
      1,
      { reason: 'master_key_mismatch' },
    );
  }
}

/** Run `fn` with an opened service, always closing it; expected failures become CLI errors. */
export async function withService<T>(option: string | undefined, needMaster: boolean, fn: (ctx: ServiceContext) => Promise<T>): Promise<T> {
  const ctx = await openService(option, needMaster);
  try {
    return await fn(ctx);
  } catch (e) {
    throw toCliError(e);
  } finally {
    await ctx.close();
  }
}

/**
 * Run an operator's admin write (`revoke`, `clients add|update|disable|enable|remove`, `keys
 * rotate`, `token mint|exchange`, `scan --revoke|--revoke-grant`) as {@link withService} does, with every refusal on record: one `admin.action` deny with
 * `by: cli`, `detail` (the `action` and what it named; a value holding a token is written `*`)
 * and a stable reason code: a {@link CliError}'s `reason`, a {@link ClientInputError}'s or
 * {@link OAuthError}'s code, `store_unavailable`, else `server_error`. What the write does is
 * audited by the write itself (`client.created`, `key.rotated`, …, each with `by: cli`).
 * `refused`, a refusal found before the store was opened (the arguments), is audited the same
 * way, and reported as itself when no store can be opened to record it in.
 */
export async function withAdminWrite<T>(
  option: string | undefined,
  needMaster: boolean,
  detail: Readonly<Record<string, string>>,
  fn: (ctx: ServiceContext) => Promise<T>,
  refused?: CliError,
): Promise<T> {
  let ctx: ServiceContext;
  try {
    ctx = await openService(option, needMaster && refused === undefined);
  } catch (e) {
    throw refused ?? e;
  }
  try {
    if (refused !== undefined) throw refused;
    return await fn(ctx);
  } catch (e) {
    const problems: Record<string, string> =
      e instanceof ClientInputError && e.problems.length > 1 ? { problems: e.problems.map((p) => p.code).join(' ') } : {};
    ctx.service.auditCliAction(refusalCode(e), { ...detail, ...(e instanceof CliError ? e.detail : {}), ...problems });
    throw toCliError(e);
  } finally {
    await ctx.close();
  }
}

/** The stable reason code of an admin write's refusal (see {@link withAdminWrite}). */
export function refusalCode(e: unknown): string {
  if (e instanceof CliError) return e.reason ?? 'server_error';
  if (e instanceof ClientInputError || e instanceof OAuthError) return e.code;
  if (e instanceof StoreUnavailableError) return 'store_unavailable';
  if (e instanceof StoreConflictError) return e.code;
  return 'server_error';
}

/**
 * Run `fn` with the store alone (no master key, no token service), always closing it: for the
 * commands that only read (`audit`, `trace`). A SQLite store must already exist.
 */
export async function withStore<T>(option: string | undefined, fn: (store: Store) => Promise<T>): Promise<T> {
  const { config } = loadConfig(option);
  if (resolveStore(config).driver === 'sqlite' && !existsSync(config.data_dir)) {
    throw new CliError(`no data directory at ${config.data_dir}; run \`tessera init\` first or pass --config`);
  }
  const store = await openStore(config);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** Map the errors a command can expect to one clear line. */
export function toCliError(e: unknown): unknown {
  if (e instanceof OAuthError) return new CliError(`${e.error}: ${e.description} (${e.code})`);
  if (e instanceof ClientInputError || e instanceof StoreConflictError || e instanceof MasterKeyError) return new CliError(e.message);
  return e;
}
