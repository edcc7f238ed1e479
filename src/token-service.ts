/**
 * Tessera's token service as a library (`tessera/token-service`): the core, its HTTP handler, the
 * store contract and the SQLite store. Kept out of the main entry so that verifier-only users do
 * not load `node:sqlite`, which on Node 22 prints `ExperimentalWarning: SQLite is an experimental
 * feature` once when it loads (the `tessera` command silences it; the library leaves it to you).
 *
 * @example
 * ```ts
 * import { createServer } from 'node:http';
 * import {
 *   createTokenServiceFromConfig, createTokenServiceHandler, loadConfigFile, loadMasterKey, openStore,
 * } from 'tessera/token-service';
 *
 * const config = loadConfigFile('tessera.yaml');
 * const store = await openStore(config);
 * const service = createTokenServiceFromConfig(config, { store, master: loadMasterKey(config.data_dir)?.key });
 * await service.start(); // on PostgreSQL this also LISTENs for other instances' revocations
 * const tokens = createTokenServiceHandler(service);
 * createServer((req, res) => tokens(req, res) || notFound(res)).listen(8080);
 * // On shutdown: `await service.close(); await store.close();` (ends the listener's connection).
 * ```
 *
 * @module
 */

export { BatchingAuditSink } from './audit/batching.ts';
export { uuidv7 } from './audit/id.ts';
export type { AuditEventsLost } from './audit/pipeline.ts';
export { loadConfigFile } from './config/load.ts';
export {
  type ResolvedStore,
  type ResolvedTokenServiceConfig,
  resolveStore,
  resolveTokenService,
  SIGNING_ALGORITHMS,
  type SigningAlgorithm,
  type StoreConfig,
  type TokenServiceConfig,
} from './config/token-service-schema.ts';
export { isOAuthError, OAUTH_ERROR_CODES, OAuthError, type OAuthErrorCode, type OAuthErrorValue } from './core/oauth-errors.ts';
export {
  CLIENT_INPUT_ERROR_CODES,
  type ClientInput,
  ClientInputError,
  type ClientInputErrorCode,
  type ClientInputField,
  type ClientUpdate,
  type CompiledClient,
} from './issuer/clients.ts';
export { KeyManager, type KeyState, type KeyStatus } from './issuer/keys.ts';
export type { AccessTokenRevocation, RefreshTokenRevocation } from './issuer/revoke.ts';
export {
  generateMasterKey,
  MASTER_KEY_ERROR_CODES,
  type MasterKey,
  MasterKeyError,
  type MasterKeyErrorCode,
  parseMasterKey,
} from './issuer/secrets.ts';
export {
  ACCESS_TOKEN_TYPE,
  type Endpoints,
  endpointsFor,
  type OAuthRequest,
  TOKEN_EXCHANGE,
  type TokenResponse,
  TokenService,
  type TokenServiceOptions,
} from './issuer/service.ts';
export {
  checkDataDir,
  createTokenServiceFromConfig,
  DATA_DIR_ERROR_CODES,
  DataDirError,
  type DataDirErrorCode,
  ensureDataDir,
  loadMasterKey,
  MASTER_KEY_ENV,
  openStore,
  type TokenServiceRuntime,
} from './server/bootstrap.ts';
export { createTokenServiceHandler, type RequestHandler, type TokenServiceHandlerOptions } from './server/token-handler.ts';
export type {
  ClientAuthMethod,
  ClientPatch,
  ClientRecord,
  GrantKind,
  GrantRecord,
  GrantSelector,
  GrantType,
  NewGrant,
  RefreshRotation,
  RefreshTokenRecord,
  RevocationEntry,
  RevokedGrant,
  SigningKeyRecord,
  Store,
  StoreVersions,
} from './store/contract.ts';
export {
  GRANT_TYPES,
  STORE_CONFLICT_CODES,
  type StoreCapacityCode,
  StoreCapacityError,
  type StoreConflictCode,
  StoreConflictError,
  type StoreOpenCode,
  StoreOpenError,
  type StoreUnavailableCode,
  StoreUnavailableError,
} from './store/contract.ts';
export { PostgresStore, type PostgresStoreOptions } from './store/postgres/store.ts';
export { PRUNE_BATCH_SIZE, PRUNE_BUDGET_MS, type PruneTuning } from './store/prune.ts';
export { storeReplayCache } from './store/replay.ts';
export { SqliteStore, type SqliteStoreOptions } from './store/sqlite/store.ts';
