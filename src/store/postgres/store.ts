/**
 * The PostgreSQL store: the same contract as the SQLite one, for several gateway and issuer
 * instances sharing state. It passes the same contract suite.
 *
 * Concurrency, since here several processes really do write at once:
 * - grant trees: creating a child and revoking a subtree both take a transaction-scoped advisory
 *   lock on the tree's root (after the schema's trees key, shared), so a revocation always sees
 *   every child committed before it and no child can be added under a grant being revoked. A
 *   revocation meeting more trees than the shared lock table could hold locks takes the trees key
 *   exclusively instead ({@link PostgresStore.#lockRoots}). Revoking by subject or by client also holds
 *   every new grant of that subject (an advisory lock) or client (its row, `FOR UPDATE` against
 *   the `FOR SHARE` of grant creation) off until it commits: else a tree begun between finding
 *   the trees and revoking them would be revoked without its root locked, and a child added to it
 *   meanwhile could outlive its revoked parent. Revoking an access token's exchanged grants
 *   (`exchangedFrom`) takes that token's advisory lock exclusively first, and the creation of a
 *   grant exchanged from the token takes it shared before its other locks, so the creation reads
 *   the token's revocation entry or is revoked by it;
 * - refresh rotation: the token's tree is locked first (its root's advisory lock, as a revocation
 *   takes it before any grant or token row), then the token row (`FOR UPDATE`), so of concurrent
 *   rotations exactly one finds it current, a revocation of the tree either commits first (the
 *   token is then revoked) or waits and revokes the successor too, and a reuse cascade meets a
 *   revocation with the locks in one order. Creating a refresh token takes the tree's lock too,
 *   and stores the token revoked under a grant revoked meanwhile. Redemptions of one
 *   authorization code queue on its advisory lock first; a reuse of the code then takes the
 *   code's row, then its grant's tree, the order a revocation by subject or by client takes its
 *   unredeemed codes' rows and its trees in. Remembered consents are deleted after the trees'
 *   locks, by a revocation as by a reuse cascade;
 * - rows: a grant's or refresh token's row is written only under its tree's lock (a revocation, a
 *   rotation or a reuse cascade; a prune skips locked rows and never waits), so two writers of one
 *   such row never run at once and the order of a multi-row UPDATE's row locks does not matter.
 *   The rows no tree's lock covers that a transaction deletes several of at once (a subject's or
 *   client's unredeemed codes, its remembered consents, a client's on its removal) are locked
 *   first in their key's order ({@link PostgresStore.#deleteInKeyOrder}), so deletes overlapping by
 *   any number of rows queue on the first one they share: a DELETE locks in its scan's order, and
 *   PostgreSQL synchronizes sequential scans of a table larger than a quarter of shared_buffers
 *   (each starting where one under way is), so a subject's and a client's revocation met their
 *   shared codes in opposite orders and deadlocked. An audit prune locks its batch in id order,
 *   skipping rows another holds;
 * - the revocation log: appends hold an exclusive lock on the log table until commit, so sequence
 *   numbers become visible in order and a reader's cursor never skips an entry committed late.
 *
 * Every transaction that appends to the revocation log also sends a notification on the schema's
 * channel ({@link revocationChannel}); PostgreSQL delivers it on commit and drops it on rollback, so
 * {@link PostgresStore.watchRevocations} hears exactly the appends that became visible, from this
 * process, the CLI or any other instance. A change to a client (update, removal) sends one too,
 * with the payload `clients`, heard as a hint without a sequence number.
 *
 * @module
 */
import pg from 'pg';
import type { AuditEvent, AuditQuery } from '../../audit/event.ts';
import { idFloor } from '../../audit/id.ts';
import type {
  A2aIdKind,
  A2aTaskRecord,
  AddSigningKeyOptions,
  AuthorizationCodeRecord,
  ClientLimit,
  ClientPatch,
  ClientRecord,
  CodeRedemption,
  CodeRedemptionOptions,
  CreateGrantOptions,
  GrantCreation,
  GrantRecord,
  GrantSelector,
  NewGrant,
  RefreshRotation,
  RefreshRotationOptions,
  RefreshTokenRecord,
  RememberedConsentRecord,
  RemovedSigningKeyRecord,
  RevocationEntry,
  RevokedGrant,
  RevokeOptions,
  SigningKeyRecord,
  Store,
  StoreVersions,
} from '../contract.ts';
import {
  CODE_RETENTION,
  MAX_TREE_READ,
  REVOCATION_ENTRY_SKEW,
  REVOCATIONS_PAGE,
  StoreCapacityError,
  StoreConflictError,
  StoreOpenError,
  StoreUnavailableError,
} from '../contract.ts';
import { type PruneStep, type PruneTuning, pruneInBatches, pruneTuning } from '../prune.ts';
import {
  a2aTaskFrom,
  a2aTaskKey,
  auditEventFrom,
  auditLookup,
  auditQueryLimit,
  auditValues,
  checkA2aOwner,
  clientFrom,
  clientPatchColumns,
  clientValues,
  codeFrom,
  codeValues,
  consentFrom,
  consentValues,
  createdGrant,
  grantFrom,
  grantValues,
  isActiveGrant,
  isRetry,
  num,
  type Row,
  refreshFrom,
  removedSigningKeyFrom,
  revocationEntryFrom,
  rotatedSuccessor,
  signingKeyFrom,
  signingKeyValues,
  spentKeptUntil,
  strOrNull,
  tokenEntryKey,
  unloggedEntries,
} from '../rows.ts';
import { SUBTREE } from '../subtree.ts';
import { Listener } from './listener.ts';

/** Options for {@link PostgresStore.open}. */
export interface PostgresStoreOptions extends PruneTuning {
  /** `postgres://user:pass@host:port/db`. */
  readonly connectionString: string;
  /** Schema holding Tessera's tables (created when absent). */
  readonly schema?: string;
  /** Pool size. */
  readonly max?: number;
  /**
   * How long a call waits for a connection (every one in use, or PostgreSQL not answering) before
   * it fails with {@link StoreUnavailableError}, a 503, instead of waiting for ever. Default 5000, or
   * {@link requestTimeoutMillis} when that is shorter.
   */
  readonly connectionTimeoutMillis?: number;
  /**
   * PostgreSQL ends a session of this store that sits idle inside a transaction for longer
   * (`idle_in_transaction_session_timeout`), rolling it back and releasing its locks. A store's
   * transactions send their statements back to back; one left open is an instance cut off or
   * stalled mid-transaction, whose locks (a grant tree's, a client's row, the revocation log's)
   * would otherwise hold every other instance's grants and revocations back until PostgreSQL hears
   * of the loss, which TCP keepalive takes hours to. Default 30000.
   */
  readonly idleInTransactionTimeoutMillis?: number;
  /**
   * How long the reads a running instance polls with ({@link PostgresStore.versions},
   * {@link PostgresStore.revocationsSince}) wait for an answer. One unanswered by then fails with
   * {@link StoreUnavailableError} and its connection is destroyed: a pooled connection whose peer
   * silently vanished (a partition, a failover behind a stateful firewall: no reset, no close)
   * would otherwise hold the poll, and with it every revocation made elsewhere, until TCP gives
   * up, minutes later or never. The next poll goes out on another connection. Default 5000.
   */
  readonly readTimeoutMillis?: number;
  /**
   * How long the housekeeping writes a running instance's sync awaits ({@link PostgresStore.prune},
   * {@link PostgresStore.pruneAudit}'s batches, and the key maintenance's
   * {@link PostgresStore.addSigningKey} and {@link PostgresStore.deleteSigningKey}) may take, from
   * their first statement to their commit (for the prune, each of its batches). One not done by
   * then fails with {@link StoreUnavailableError}, and its connection is destroyed (PostgreSQL rolls
   * it back): a write held up by a lock, a stuck statement or a silently dead connection would
   * otherwise hold the sync, and with it every later poll of the revocation log, for as long as it
   * lasts. The server bounds them too, a little sooner ({@link serverTimeout}: `lock_timeout` and
   * `statement_timeout`), so a statement the client gave up on does not go on waiting for a lock
   * on the server, and keep the row locks it took, until that lock is freed (a server does not
   * notice a lost client while it waits). The next sync tries again. Default 10000.
   *
   * {@link PostgresStore.revokeGrants} is bounded by the longer of this and
   * {@link requestTimeoutMillis} (see there).
   */
  readonly maintenanceTimeoutMillis?: number;
  /**
   * How long every other call may take (what a request waits for: a grant written for a token
   * exchange, a refresh rotation, a code redemption, a DPoP or assertion `jti` recorded, a
   * revocation, an introspection read, an audit append, an A2A task claim; and the CLI's calls),
   * from its first statement to its commit, a transaction's retries after a deadlock included. One
   * not done by then fails with {@link StoreUnavailableError} (a 503) and its connection is
   * destroyed (PostgreSQL rolls it back): a lock held by a stuck session, a stuck statement or a
   * silently dead pooled connection would otherwise hold the request, and its pool connection,
   * until the caller gives up, and the pool, once every connection is so held, every request. The
   * server bounds each of their statements a little sooner ({@link serverTimeout}: `lock_timeout`
   * and `statement_timeout`, the pool sessions' defaults), so one held up by a lock fails there
   * (`store_busy`), rolled back, its connection fine; and a transaction's session idle for the
   * whole bound (its client gone) is ended, releasing its locks. Waiting for a pool connection
   * is bounded apart ({@link connectionTimeoutMillis}). Schema migrations are not bounded.
   * Default 5000.
   *
   * A revocation ({@link PostgresStore.revokeGrants}: by subject, client or grant, from the CLI,
   * the admin API or the revocation endpoint) gets the longer of this and
   * {@link maintenanceTimeoutMillis}: it writes a row per grant of the trees it revokes (about 2 s
   * for 100,000 grants, and one exchange per agent call can make that many under one person's
   * grant), and one given up on at the bound revokes nothing, the worst outcome of a deliberate
   * security action.
   */
  readonly requestTimeoutMillis?: number;
  /**
   * Told, in one line, when a pooled connection is lost while idle (PostgreSQL restarted or failed
   * over, a backend terminated, a pooler recycling its server connections) and when a call was run
   * again on a new connection for that reason (see {@link PostgresStore.#tx}). Only the SQLSTATE or
   * socket error code: never the connection string (its password) nor the server's message.
   */
  readonly onWarning?: (message: string) => void;
}

/** Default {@link PostgresStoreOptions.requestTimeoutMillis}. */
export const REQUEST_TIMEOUT_MS = 5000;
/** Default {@link PostgresStoreOptions.readTimeoutMillis}. */
export const READ_TIMEOUT_MS = 5000;
/** Default {@link PostgresStoreOptions.maintenanceTimeoutMillis}. */
export const MAINTENANCE_TIMEOUT_MS = 10_000;

/**
 * The server-side bound (`lock_timeout`, `statement_timeout`, milliseconds) of a transaction with
 * a client-side timeout of `clientMs`: a tenth sooner (at most a second), so that the server gives
 * up first, answers with an error and the connection can be used again; the client's timeout is
 * left for a server or network that does not answer at all.
 */
export const serverTimeout = (clientMs: number): number => Math.max(1, clientMs - Math.min(1000, Math.ceil(clientMs / 10)));

/**
 * How many times in all {@link PostgresStore.#tx} runs a transaction PostgreSQL aborted to break a
 * deadlock or for a serialization failure. A real deadlock costs its victim `deadlock_timeout`
 * (1 s by default) a run, so the request's bound usually ends the runs first.
 */
export const TX_RUNS = 5;

/**
 * The pause (milliseconds) before the run after run `attempt` of a transaction PostgreSQL aborted:
 * random within [d/2, d], d = 20 ms doubled with each run (10-20, 20-40, 40-80, 80-160 ms; 300 ms
 * at most in all). Run again at once, the victim of a deadlock can take back a row it held before
 * the transaction it deadlocked with does (PostgreSQL wakes that one, but holds no place for it in
 * the row's queue: the row is free for whoever asks first), and the same deadlock follows, a
 * second apart, until the runs are spent. The pause lets the survivor finish first; its randomness
 * keeps two transactions that each failed from running again in step.
 */
export const retryPause = (attempt: number): number => {
  const d = 20 * 2 ** (Math.min(attempt, TX_RUNS) - 1);
  return d / 2 + Math.random() * (d / 2);
};

// lock_not_available (lock_timeout) and query_canceled (statement_timeout).
const SERVER_TIMEOUT_SQLSTATE = new Set(['55P03', '57014']);

// SQLSTATE class 53 (insufficient resources) but 53300 (too many connections, see unavailable):
// PostgreSQL out of memory (53200, also `out of shared memory`: its shared lock table full, which
// holds about max_locks_per_transaction × max_connections locks for every session at once) or disk
// (53100), or a configured limit reached (53400, temp_file_limit). The server's state, not the
// request's: a 503 (`store_busy`) the caller may retry, never a 500. The connection is fine.
const EXHAUSTED_SQLSTATE = /^53(?!300$)[0-9A-Z]{3}$/;

/** A {@link StoreUnavailableError} caused by `e` when PostgreSQL ran out of a resource, else undefined. */
function exhausted(e: unknown): StoreUnavailableError | undefined {
  const code = (e as { code?: unknown })?.code;
  if (typeof code !== 'string' || !EXHAUSTED_SQLSTATE.test(code)) return undefined;
  return new StoreUnavailableError('store_busy', `PostgreSQL ran out of a resource (${code}): ${(e as Error).message}`, { cause: e });
}

type Q = Pick<pg.PoolClient, 'query'>;

const MIGRATIONS: readonly { version: number; sql: string }[] = [
  {
    version: 1,
    sql: `
      CREATE TABLE meta (name text PRIMARY KEY, value bigint NOT NULL);
      INSERT INTO meta (name, value) VALUES ('keys_version', 0), ('clients_version', 0), ('revocations_seq', 0);
      CREATE TABLE clients (
        id text PRIMARY KEY, auth_method text NOT NULL, secret_hash text, jwks text, jwks_uri text,
        scopes text NOT NULL, audiences text NOT NULL, grant_types text NOT NULL, access_token_ttl integer,
        disabled boolean NOT NULL DEFAULT false, created_at bigint NOT NULL, updated_at bigint NOT NULL);
      CREATE TABLE signing_keys (
        kid text PRIMARY KEY, alg text NOT NULL, public_jwk text NOT NULL, sealed_private_key text NOT NULL,
        created_at bigint NOT NULL, activates_at bigint NOT NULL);
      CREATE TABLE grants (
        id text PRIMARY KEY, parent_id text, root_id text NOT NULL, depth integer NOT NULL, kind text NOT NULL,
        issuer text NOT NULL, subject text NOT NULL, client_id text NOT NULL, act text, scopes text NOT NULL,
        audiences text NOT NULL, created_at bigint NOT NULL, expires_at bigint, revoked_at bigint, revoked_reason text);
      CREATE INDEX grants_parent ON grants (parent_id);
      CREATE INDEX grants_subject ON grants (subject);
      CREATE INDEX grants_client ON grants (client_id);
      CREATE INDEX grants_expires ON grants (expires_at);
      CREATE TABLE refresh_tokens (
        hash text PRIMARY KEY, grant_id text NOT NULL, client_id text NOT NULL, created_at bigint NOT NULL,
        expires_at bigint NOT NULL, rotated_at bigint, revoked_at bigint);
      CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);
      CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);
      CREATE TABLE revocations (
        seq bigint PRIMARY KEY, kind text NOT NULL, value text NOT NULL, issuer text, at bigint NOT NULL,
        expires_at bigint NOT NULL);
      CREATE INDEX revocations_expires ON revocations (expires_at);
      CREATE TABLE replay (key text PRIMARY KEY, expires_at bigint NOT NULL);
      CREATE INDEX replay_expires ON replay (expires_at);
      CREATE TABLE audit_events (
        seq bigserial PRIMARY KEY, id text COLLATE "C" NOT NULL UNIQUE, time bigint NOT NULL, kind text NOT NULL,
        subject text, client_id text, delegation_id text, request_id text, event text NOT NULL);
      CREATE INDEX audit_subject ON audit_events (subject);
      CREATE INDEX audit_client ON audit_events (client_id);
      CREATE INDEX audit_delegation ON audit_events (delegation_id);
      CREATE INDEX audit_request ON audit_events (request_id);
    `,
  },
  {
    version: 2,
    sql: 'ALTER TABLE clients ADD COLUMN exchange_retarget_audiences boolean NOT NULL DEFAULT false;',
  },
  {
    // Client-credentials standing grants expire: open-ended ones end once their last token can have.
    version: 3,
    sql: `UPDATE grants SET expires_at = extract(epoch FROM now())::bigint + 86460
          WHERE kind = 'client_credentials' AND expires_at IS NULL;`,
  },
  {
    // audit_events.jti and token_hash, indexed: `tessera trace` finds a token by either (filled in for existing events).
    version: 4,
    sql: `
      ALTER TABLE audit_events ADD COLUMN jti text, ADD COLUMN token_hash text;
      UPDATE audit_events SET jti = event::jsonb ->> 'jti', token_hash = event::jsonb ->> 'token_hash'
        WHERE event::jsonb ?| array['jti', 'token_hash'];
      CREATE INDEX audit_jti ON audit_events (jti);
      CREATE INDEX audit_token_hash ON audit_events (token_hash);
    `,
  },
  {
    // Authorization code grant: clients.redirect_uris and clients.name, authorization_codes (by hash).
    version: 5,
    sql: `
      ALTER TABLE clients ADD COLUMN redirect_uris text NOT NULL DEFAULT '[]';
      ALTER TABLE clients ADD COLUMN name text;
      CREATE TABLE authorization_codes (
        hash text PRIMARY KEY, client_id text NOT NULL, redirect_uri text, code_challenge text NOT NULL,
        subject text NOT NULL, issuer text NOT NULL, scopes text NOT NULL, audiences text NOT NULL,
        created_at bigint NOT NULL, expires_at bigint NOT NULL, consumed_at bigint, grant_id text);
      CREATE INDEX authorization_codes_expires ON authorization_codes (expires_at);
    `,
  },
  {
    // refresh_tokens.jkt: a public client's refresh token bound to its DPoP key (RFC 9449 §5).
    version: 6,
    sql: 'ALTER TABLE refresh_tokens ADD COLUMN jkt text;',
  },
  {
    // removed_signing_keys: a deleted key keeps its public part (no private key), so `tessera scan` recognises its tokens.
    version: 7,
    sql: `
      CREATE TABLE removed_signing_keys (
        kid text PRIMARY KEY, alg text NOT NULL, public_jwk text NOT NULL, created_at bigint NOT NULL, activates_at bigint NOT NULL);
    `,
  },
  {
    // audit_events.event holds only the fields without a column of their own; no data changes, but
    // an older Tessera, which reads the whole event from that column, must refuse the database.
    version: 8,
    sql: 'SELECT 1;',
  },
  {
    // remembered_consents: a person's approval of a client kept for `authorization.remember_consent`, one per (subject, client).
    version: 9,
    sql: `
      CREATE TABLE remembered_consents (
        subject text NOT NULL, client_id text NOT NULL, issuer text NOT NULL, identity_source text NOT NULL,
        scopes text NOT NULL, scopes_digest text NOT NULL, audiences text NOT NULL, redirect_uri text NOT NULL, client_fingerprint text NOT NULL, approval_hash text NOT NULL,
        created_at bigint NOT NULL, expires_at bigint NOT NULL, PRIMARY KEY (subject, client_id));
      CREATE INDEX remembered_consents_client ON remembered_consents (client_id);
      CREATE INDEX remembered_consents_expires ON remembered_consents (expires_at);
    `,
  },
  {
    // The case-insensitive client lookup (a person's subject passing for a client) reads an index
    // instead of every client; dynamic registration can make many. Client ids are ASCII.
    // authorization_codes.jkt: a code bound to a DPoP key by the request's dpop_jkt (RFC 9449 §10).
    version: 10,
    sql: `
      CREATE INDEX clients_id_lower ON clients (lower(id));
      ALTER TABLE authorization_codes ADD COLUMN jkt text;
    `,
  },
  {
    // revocations_subject: a root grant from another issuer's token is refused inside its insert
    // when its subject was revoked after the token was issued, a lookup of the subject entries.
    version: 11,
    sql: "CREATE INDEX revocations_subject ON revocations (value, issuer, at) WHERE kind = 'subject';",
  },
  {
    // a2a_tasks: which principal each A2A task and context of a gateway route belongs to
    // (`a2a.bind_tasks`), shared by every instance; keyed by a digest of route, kind and id.
    version: 12,
    sql: `
      CREATE TABLE a2a_tasks (key text PRIMARY KEY, owner text NOT NULL, expires_at bigint NOT NULL);
      CREATE INDEX a2a_tasks_expires ON a2a_tasks (expires_at);
    `,
  },
  {
    // a2a_tasks.route, indexed with owner and expiry: the live records of one principal on one
    // route are counted (`a2a.max_tasks_per_principal`) by a range of the index. Records made
    // before have no route and are not counted until renewed.
    version: 13,
    sql: `
      ALTER TABLE a2a_tasks ADD COLUMN route text NOT NULL DEFAULT '';
      CREATE INDEX a2a_tasks_owner ON a2a_tasks (route, owner, expires_at);
    `,
  },
  {
    // revocations_token: introspection looks up a token's `jti` in the revocation log, so a token
    // revoked by another process (the CLI, another instance) is inactive before this one syncs.
    version: 14,
    // IF NOT EXISTS: on a large log, an operator may build it beforehand, CONCURRENTLY.
    sql: "CREATE INDEX IF NOT EXISTS revocations_token ON revocations (value) WHERE kind = 'token';",
  },
  {
    // authorization_codes.approval_since: since when the approval of a code stood (the login
    // session's start), so a code approved by an instance that had not yet read a revocation of the
    // subject is refused at its redemption. NULL in codes made before: their created_at stands for it.
    version: 15,
    sql: 'ALTER TABLE authorization_codes ADD COLUMN approval_since bigint;',
  },
  {
    // clients.secret_method: the one method (client_secret_basic or client_secret_post) a secret
    // client registered for (RFC 7591 token_endpoint_auth_method), enforced at the token,
    // revocation and introspection endpoints. NULL, in every client registered before, accepts either.
    version: 16,
    sql: 'ALTER TABLE clients ADD COLUMN secret_method text;',
  },
  {
    // clients.allowed_origins: the origins (JSON array) whose pages may call the token, revocation
    // and introspection endpoints as the client (CORS, Hydra's allowed_cors_origins). Empty, in
    // every client registered before (and written by an older instance), leaves it to
    // token_service.cors.allowed_origins.
    version: 17,
    sql: "ALTER TABLE clients ADD COLUMN allowed_origins text NOT NULL DEFAULT '[]';",
  },
  {
    // grants.subject_jti and grants.actor_jti: the access tokens (subject_token, actor_token) a grant
    // was exchanged from, so revoking one revokes the grants exchanged from it with their subtrees.
    // actor_jti is indexed; subject_jti is found among the token's grant's children (grants_parent),
    // sparing every exchange an index update. NULL in every grant made before (and in those an
    // older instance writes).
    version: 18,
    sql: `
      ALTER TABLE grants ADD COLUMN subject_jti text, ADD COLUMN actor_jti text;
      CREATE INDEX grants_actor_jti ON grants (actor_jti) WHERE actor_jti IS NOT NULL;
    `,
  },
  {
    // signing_keys.mac and removed_signing_keys.mac: a MAC under the master key over a key's kid,
    // alg, public key and schedule, so that rows written without the master key are refused (a
    // schedule moved, a removed key planted). NULL in rows written before, which the first start
    // with the master key seals again.
    version: 19,
    sql: 'ALTER TABLE signing_keys ADD COLUMN mac text; ALTER TABLE removed_signing_keys ADD COLUMN mac text;',
  },
  {
    // clients.dpop_bound_access_tokens: the client always uses DPoP (RFC 9449 §5.2), so a token
    // request of it without a DPoP proof is refused. False, in every client registered before (and
    // written by an older instance), leaves DPoP to each request.
    version: 20,
    sql: 'ALTER TABLE clients ADD COLUMN dpop_bound_access_tokens boolean NOT NULL DEFAULT false;',
  },
  {
    // revocations_scoped_token: a login session's sign-out is one entry of the revocation log,
    // however many instances sign it out at once (appended if absent, INSERT … ON CONFLICT DO
    // NOTHING). Duplicates written before are removed first, the one that lasts longest kept, under
    // the lock every append takes (an older instance appending one meanwhile would fail the build).
    // IF NOT EXISTS: on a large log, an operator may build it beforehand, CONCURRENTLY.
    version: 21,
    sql: `
      LOCK TABLE revocations IN EXCLUSIVE MODE;
      DELETE FROM revocations r WHERE r.kind = 'token' AND r.issuer IS NOT NULL AND EXISTS (
        SELECT 1 FROM revocations d
        WHERE d.kind = 'token' AND d.value = r.value AND d.issuer = r.issuer
          AND (d.expires_at > r.expires_at OR (d.expires_at = r.expires_at AND d.seq < r.seq)));
      CREATE UNIQUE INDEX IF NOT EXISTS revocations_scoped_token ON revocations (value, issuer) WHERE kind = 'token' AND issuer IS NOT NULL;
    `,
  },
  {
    // signing_keys.seq: each key numbered in the order it was added (a sequence, never reused), so
    // that of two keys with the same schedule (two `tessera keys rotate --now` in the same second)
    // the later one signs, not the one whose kid sorts last. The keys stored before are numbered in
    // the order they were used (activation, creation, kid in byte order, as Tessera compared them),
    // so the active key stays the same. A default, so a key an older instance adds is numbered too.
    version: 22,
    sql: `
      CREATE SEQUENCE signing_keys_seq;
      ALTER TABLE signing_keys ADD COLUMN seq bigint;
      UPDATE signing_keys k SET seq = o.n
        FROM (SELECT kid, row_number() OVER (ORDER BY activates_at, created_at, kid COLLATE "C") AS n FROM signing_keys) o
        WHERE k.kid = o.kid;
      SELECT setval('signing_keys_seq', (SELECT count(*) FROM signing_keys) + 1, false);
      ALTER TABLE signing_keys ALTER COLUMN seq SET DEFAULT nextval('signing_keys_seq'), ALTER COLUMN seq SET NOT NULL;
      ALTER SEQUENCE signing_keys_seq OWNED BY signing_keys.seq;
    `,
  },
  {
    // grants.actor_grant_id: the grant of the actor token (RFC 8693 actor_token) a grant was
    // exchanged with, so revoking the actor's grant revokes the grants exchanged with its tokens,
    // with their subtrees, transitively; indexed for the cascade. NULL in every grant made before
    // (and in those an older instance writes: they outlive their actor's grant, as before).
    // IF NOT EXISTS: on a large grants table, an operator may build the index beforehand, CONCURRENTLY.
    version: 23,
    sql: `
      ALTER TABLE grants ADD COLUMN IF NOT EXISTS actor_grant_id text;
      CREATE INDEX IF NOT EXISTS grants_actor_grant ON grants (actor_grant_id) WHERE actor_grant_id IS NOT NULL;
    `,
  },
  {
    // refresh_tokens.successor_hash: the hash of the token a refresh token was rotated to, so that
    // within token_service.refresh_reuse_interval a retry of the token rotated one generation ago
    // (its successor still current) is told from a reuse. NULL in every token rotated before (their
    // retry is a reuse, as before), in those an older instance rotates, and in a successor a retry
    // retired.
    version: 24,
    sql: 'ALTER TABLE refresh_tokens ADD COLUMN IF NOT EXISTS successor_hash text;',
  },
  {
    // signing_keys.retires_at and successor_kid (kept in removed_signing_keys too): a key's end,
    // sealed into its own row (its mac then covering it) in the same write as its successor's
    // row, so that past it the key never signs, whatever the other rows say (its successor's row
    // deleted or rewritten). NULL in every row written before, which the next rotation seals (a
    // migration holds no master key), and in those an older instance writes.
    version: 25,
    sql: `
      ALTER TABLE signing_keys ADD COLUMN IF NOT EXISTS retires_at bigint, ADD COLUMN IF NOT EXISTS successor_kid text;
      ALTER TABLE removed_signing_keys ADD COLUMN IF NOT EXISTS retires_at bigint, ADD COLUMN IF NOT EXISTS successor_kid text;
    `,
  },
];

/**
 * Inside {@link PostgresStore.rotateRefreshToken}'s transaction (the tree locked), for `token`,
 * rotated already to `successorHash`: when it is a retry within the reuse interval
 * ({@link isRetry}), the successor retired (rotated, no successor: presenting it is a reuse), the
 * new one inserted and made `token`'s successor; undefined otherwise, nothing written.
 */
async function retryRotation(
  c: Q,
  token: RefreshTokenRecord,
  successorHash: unknown,
  o: RefreshRotationOptions,
): Promise<RefreshRotation | undefined> {
  if ((o.reuseIntervalSeconds ?? 0) <= 0 || typeof successorHash !== 'string') return undefined;
  const [s] = (await c.query('SELECT * FROM refresh_tokens WHERE hash = $1 FOR UPDATE', [successorHash])).rows as Row[];
  const [g] = (await c.query('SELECT * FROM grants WHERE id = $1', [token.grantId])).rows as Row[];
  const successor = s ? refreshFrom(s) : undefined;
  const grant = g ? grantFrom(g) : undefined;
  if (grant === undefined || !isRetry(token, successor, grant, o)) return undefined;
  await c.query('UPDATE refresh_tokens SET rotated_at = $1, expires_at = $2, successor_hash = NULL WHERE hash = $3', [
    o.now,
    Math.max(successor.expiresAt, spentKeptUntil(grant, o)),
    successor.hash,
  ]);
  await c.query('UPDATE refresh_tokens SET successor_hash = $1 WHERE hash = $2', [o.nextHash, token.hash]);
  const next = rotatedSuccessor(token, grant, o);
  await c.query(
    'INSERT INTO refresh_tokens (hash, grant_id, client_id, created_at, expires_at, rotated_at, revoked_at, jkt) VALUES ($1, $2, $3, $4, $5, NULL, NULL, $6)',
    [next.hash, next.grantId, next.clientId, next.createdAt, next.expiresAt, next.jkt ?? null],
  );
  return { status: 'rotated', grant, next, retry: true };
}

/** Whether the log holds a revocation of `subject` at `issuer` dated `since` or later (by the revocations_subject index). */
async function subjectRevokedSince(c: Q, subject: string, issuer: string, since: number): Promise<boolean> {
  const { rows } = await c.query("SELECT 1 FROM revocations WHERE kind = 'subject' AND value = $1 AND issuer = $2 AND at >= $3 LIMIT 1", [
    subject,
    issuer,
    since,
  ]);
  return rows.length > 0;
}

const isUnique = (e: unknown) => (e as { code?: string })?.code === '23505';
const clientRow = (r: Row): ClientRecord => clientFrom(r, (v) => v === true);

// Failures that say the server cannot be reached now, not that the request is wrong: socket errors,
// SQLSTATE class 08 (connection exception), 57P01-57P03 (shutting down, starting up), 25P03 and
// 57P05 (the session ended by a timeout) and 53300 (too many connections); pg's own messages for a
// lost connection and a pool connect timeout.
const NETWORK_ERRORS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
]);
// Connection exceptions, authentication refused (class 28), shutdown and too many connections, a
// session ended for idling inside a transaction (25P03) or idling (57P05), and the database gone
// (3D000) or not accepting connections (55000 with that message, raised at connect time; 55000
// otherwise is a statement's own fault).
const UNAVAILABLE_SQLSTATE = /^(?:08|28|57P0[1-35]$|25P03$|53300$|3D000$)/;
const NOT_ACCEPTING = /not (?:currently )?accepting connections/;
const UNAVAILABLE_MESSAGE = /^(?:Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error)/;

/** `e`, or a {@link StoreUnavailableError} caused by it when it means PostgreSQL is out of reach. */
function unavailable(e: unknown): unknown {
  if (!(e instanceof Error) || e instanceof StoreUnavailableError) return e;
  const code = (e as { code?: unknown }).code;
  const down =
    (typeof code === 'string' &&
      (NETWORK_ERRORS.has(code) || UNAVAILABLE_SQLSTATE.test(code) || (code === '55000' && NOT_ACCEPTING.test(e.message)))) ||
    UNAVAILABLE_MESSAGE.test(e.message);
  return down ? new StoreUnavailableError('store_unreachable', `PostgreSQL is unreachable: ${e.message}`, { cause: e }) : e;
}

// A connection lost, as opposed to a statement refused: the server ended the session (57P01
// admin_shutdown: pg_terminate_backend, a fast shutdown, a failover or a pooler recycling its server
// connections; 57P02 crash_shutdown; 57P03 cannot_connect_now; 57P05 idle_session_timeout), the
// socket was reset or closed under it, or pg knew it dead already and sent nothing. Not a session
// ended for idling inside a transaction (25P03: a stall, the request's own), nor this store's own
// timeout (it destroys the socket: "Connection terminated", told apart by the caller).
const LOST_SQLSTATE = new Set(['57P01', '57P02', '57P03', '57P05']);
const LOST_SOCKET = new Set(['ECONNRESET', 'EPIPE']);
const LOST_MESSAGE = /^(?:Connection terminated unexpectedly|Client has encountered a connection error and is not queryable)$/;

/** Whether `e` says the connection was lost; then what to report of it: its code, never its message. */
function lostConnection(e: unknown): string | undefined {
  if (!(e instanceof Error)) return undefined;
  const code = (e as { code?: unknown }).code;
  if (typeof code === 'string' && (LOST_SQLSTATE.has(code) || LOST_SOCKET.has(code))) return code;
  return LOST_MESSAGE.test(e.message) ? 'connection closed' : undefined;
}

/** The code of a connection error, fit for a log line (a SQLSTATE or a socket error name), else ''. */
function errorCode(e: unknown): string {
  const code = (e as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && /^[A-Z0-9_]{1,32}$/.test(code) ? code : '';
}

/** One {@link PostgresStore.#tx} connection's state, kept across the runs of its transaction. */
interface TxConnection {
  /** Set once the connection must not be handed to the next caller; it is then destroyed on release. */
  broken?: Error;
  /** The connection was lost (what {@link lostConnection} said of it). */
  lost?: string;
  /** ... before its transaction began (at `BEGIN`): nothing of it can have taken effect. */
  lostBeforeBegin?: boolean;
}

/**
 * The LISTEN/NOTIFY channel on which appends to `schema`'s revocation log are announced. Channel
 * names are cut at 63 bytes as identifiers are; two schemas sharing the first 43 characters would
 * share a channel, which costs each a needless read of its log, nothing more.
 */
export function revocationChannel(schema: string): string {
  return `tessera.revocations.${schema}`.slice(0, 63);
}

/**
 * Per revocation, across the runs of its transaction: whether to hold every tree (the trees key
 * exclusively) from the start, because an earlier run's cascade reached, through actor links, more
 * trees than root locks are taken for (see `#revokeTree`).
 */
interface WidenedRevocation {
  everyTree: boolean;
}

/** Revocation log entries inserted per statement (see {@link PostgresStore.#log}). */
const LOG_CHUNK = 20_000;

/**
 * A revocation meeting more trees than this takes the schema's trees key exclusively instead of
 * one lock per root (see {@link PostgresStore.#lockRoots}). PostgreSQL's shared lock table holds
 * about `max_locks_per_transaction` × `max_connections` locks (6,400 at the defaults) for every
 * session at once, so a lock per tree cannot scale to a client 20,000 people consented to; a few
 * hundred fit comfortably alongside everyone else's.
 */
const BULK_REVOCATION_ROOTS = 256;

// The trees key: (hashtext('tessera.grants'), hashtext(schema)) in the two-integer key space, which
// no single-key advisory lock (the roots', the subjects') can collide with.
// `param`: the placeholder of the schema's name.
const treesKey = (param: string) => `hashtext('tessera.grants'), hashtext(${param})`;

/**
 * @example
 * ```ts
 * const store = await PostgresStore.open({ connectionString: process.env.DATABASE_URL! });
 * ```
 */
export class PostgresStore implements Store {
  readonly kind = 'postgres';
  readonly #pool: pg.Pool;
  readonly #connectionString: string;
  readonly #channel: string;
  readonly #schema: string;
  readonly #listeners = new Set<Listener>();

  readonly #readTimeout: number;
  readonly #maintenanceTimeout: number;
  readonly #requestTimeout: number;
  readonly #idleInTransactionTimeout: number;
  readonly #prune: { readonly batch: number; readonly budget: number };
  readonly #warn: (message: string) => void;
  /** Connection losses seen so far, by a call or on an idle pooled connection (see {@link PostgresStore.#connect}). */
  #losses = 0;
  /** Per pooled connection, {@link PostgresStore.#losses} when it was last known alive: opened, or a call on it done. */
  readonly #alive = new WeakMap<pg.ClientBase, number>();

  private constructor(
    pool: pg.Pool,
    connectionString: string,
    schema: string,
    timeouts: { readonly read: number; readonly maintenance: number; readonly request: number; readonly idleInTransaction: number },
    prune: PruneTuning,
    warn: (message: string) => void,
  ) {
    this.#pool = pool;
    // A listener that throws must not end the process from a pool event.
    this.#warn = (m) => {
      try {
        warn(m);
      } catch {}
    };
    // An idle pooled connection that PostgreSQL closes (restart, failover, a backend terminated,
    // idle_session_timeout) is reported on the pool; without a listener that event would end the
    // process. The pool drops the client itself. Its code only: the message of a connection error
    // is the driver's or the server's, and this store never logs what it did not write.
    pool.on('error', (e) => {
      this.#losses++;
      const code = errorCode(e);
      this.#warn(`PostgreSQL closed an idle pooled connection${code ? ` (${code})` : ''}; a new one is opened when needed`);
    });
    pool.on('connect', (c) => this.#alive.set(c, this.#losses));
    this.#connectionString = connectionString;
    this.#channel = revocationChannel(schema);
    this.#schema = schema;
    this.#readTimeout = timeouts.read;
    this.#maintenanceTimeout = timeouts.maintenance;
    this.#requestTimeout = timeouts.request;
    this.#idleInTransactionTimeout = timeouts.idleInTransaction;
    this.#prune = pruneTuning(prune);
  }

  /** Connect, create the schema when absent and migrate (one migrator at a time). */
  static async open(options: PostgresStoreOptions): Promise<PostgresStore> {
    const schema = options.schema ?? 'tessera';
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) throw new TypeError(`invalid schema name "${schema}"`);
    const request = Math.max(1, Math.floor(options.requestTimeoutMillis ?? REQUEST_TIMEOUT_MS));
    const idleInTransaction = Math.max(1, Math.floor(options.idleInTransactionTimeoutMillis ?? 30_000));
    // Every statement of the pool's sessions is bounded on the server (a transaction may set its
    // own bound: the housekeeping's, or none for a migration).
    const server = serverTimeout(request);
    const pool = new pg.Pool({
      connectionString: options.connectionString,
      max: options.max ?? 10,
      // A shorter request bound shortens the wait for a connection too (which it does not cover).
      connectionTimeoutMillis: options.connectionTimeoutMillis ?? Math.min(5000, request),
      options: `-c search_path=${schema} -c idle_in_transaction_session_timeout=${idleInTransaction} -c lock_timeout=${server} -c statement_timeout=${server}`,
    });
    const store = new PostgresStore(
      pool,
      options.connectionString,
      schema,
      {
        read: Math.max(1, Math.floor(options.readTimeoutMillis ?? READ_TIMEOUT_MS)),
        maintenance: Math.max(1, Math.floor(options.maintenanceTimeoutMillis ?? MAINTENANCE_TIMEOUT_MS)),
        request,
        idleInTransaction,
      },
      options,
      options.onWarning ?? (() => {}),
    );
    try {
      // Not bounded: a migration may rewrite large tables, and waits for another instance's.
      await store.#tx(async (c) => {
        await c.query("SELECT pg_advisory_xact_lock(hashtext('tessera.migrate'))");
        // Created only when absent, looked up first: CREATE … IF NOT EXISTS checks the CREATE privilege
        // before it looks, which an instance's role need not have once its owner migrated the schema.
        const [found] = (
          await c.query('SELECT to_regnamespace($1) IS NOT NULL AS schema, to_regclass($2) IS NOT NULL AS migrations', [
            schema,
            `${schema}.schema_migrations`,
          ])
        ).rows as Row[];
        if (found?.schema !== true) await c.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
        if (found?.migrations !== true) {
          await c.query('CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at bigint NOT NULL)');
        }
        const current = num((await c.query('SELECT coalesce(max(version), 0) AS v FROM schema_migrations')).rows[0]?.v);
        const latest = MIGRATIONS.at(-1)?.version ?? 0;
        if (current > latest) {
          throw new StoreOpenError(
            'schema_newer',
            `schema ${schema}: the database schema is at version ${current}, newer than this Tessera knows (${latest}); upgrade Tessera`,
          );
        }
        for (const m of MIGRATIONS) {
          if (m.version <= current) continue;
          try {
            await c.query(m.sql);
          } catch (e) {
            // The server out of reach or of a resource, or a deadlock (run again), stays what it is.
            const code = (e as { code?: unknown }).code;
            if (!(e instanceof Error) || code === '40P01' || code === '40001' || exhausted(e) || unavailable(e) !== e) throw e;
            // Every migration of this start runs in this one transaction, rolled back whole.
            throw new StoreOpenError(
              'migration_failed',
              `schema ${schema}: migration ${m.version} failed (the database stays at version ${current}): ${e.message}`,
              { cause: e },
            );
          }
          await c.query('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)', [m.version, Math.floor(Date.now() / 1000)]);
        }
      }, null);
    } catch (e) {
      await pool.end();
      throw e;
    }
    return store;
  }

  /**
   * A pooled connection. With `fresh` (a call run again after a connection loss), one opened or
   * known alive since the last loss seen: the others were idle through it, and a restart, a
   * failover or a pooler's recycle ends every session at once, so another idle one is likely dead
   * too, and would fail the call a second time. Those are destroyed as they come out of the pool.
   */
  async #connect(fresh: boolean): Promise<pg.PoolClient> {
    for (;;) {
      let c: pg.PoolClient;
      try {
        c = await this.#pool.connect();
      } catch (e) {
        // A session refused at startup for want of memory (class 53) as a single statement's is.
        throw exhausted(e) ?? unavailable(e);
      }
      if (!fresh || (this.#alive.get(c) ?? this.#losses) >= this.#losses) return c;
      c.release(new Error('idle through a connection loss'));
    }
  }

  /**
   * Run `fn` in a transaction. One that PostgreSQL aborted to break a deadlock (two transactions
   * taking the same locks in opposite orders) or a serialization failure is run again, up to
   * {@link TX_RUNS} times in all, after a pause ({@link retryPause}): `fn` touches only the
   * database, and the abort undid everything it did. Aborted on each run, it fails with
   * {@link StoreUnavailableError} `store_busy` (a 503).
   *
   * A transaction whose connection is found lost at its `BEGIN` (a pooled connection that died
   * while idle: PostgreSQL restarted or failed over, its backend terminated, a pooler recycled
   * it) is run once more, on a new connection ({@link PostgresStore.#connect}): nothing of it was
   * sent, let alone committed. Only then. A connection lost later, before the `COMMIT` was sent, is
   * rolled back too, but was alive when the transaction began: an operator ending a runaway
   * transaction, or a failover under it, is not undone behind their back; the caller gets a 503
   * and may retry. And a connection lost once the `COMMIT` was sent leaves the outcome unknown:
   * PostgreSQL may have committed and lost only its answer. Run again then, a write that did
   * commit would be applied twice, and some are not idempotent: a refresh token rotated twice is a
   * reuse (its family revoked), a code redeemed twice a replay, a DPoP `jti` recorded twice a
   * replayed proof. So that one fails with {@link StoreUnavailableError} (a 503), and the caller
   * reads the state to learn what happened.
   *
   * Bounded by `timeoutMs` (by default {@link PostgresStoreOptions.requestTimeoutMillis}; the sync's
   * housekeeping passes {@link PostgresStoreOptions.maintenanceTimeoutMillis}), its pauses and runs
   * again included: each attempt gets what is left, and a run again is begun only if a tenth of
   * the bound is left after its pause (else it fails with {@link StoreUnavailableError}
   * `store_busy`). See {@link PostgresStore.#attempt}.
   * `null`: not bounded (the migrations).
   */
  async #tx<T>(fn: (c: pg.PoolClient) => Promise<T>, timeoutMs: number | null = this.#requestTimeout): Promise<T> {
    const deadline = timeoutMs === null ? undefined : Date.now() + timeoutMs;
    // What is left of the bound, less a tenth of it: a run begun with less would likely be cut off by
    // the timeout, its connection destroyed, rather than fail as what it is.
    const left = () => (deadline === undefined || timeoutMs === null ? Number.POSITIVE_INFINITY : deadline - Date.now() - timeoutMs / 10);
    for (let connection = 1; ; connection++) {
      const c = await this.#connect(connection > 1);
      const conn: TxConnection = {};
      // A connection lost between two queries is reported as an event; unheard, it ends the process.
      const onError = (e: Error) => {
        conn.broken ??= e;
      };
      c.on('error', onError);
      try {
        const result = await this.#runs(c, conn, fn, deadline, timeoutMs, left);
        this.#alive.set(c, this.#losses);
        return result;
      } catch (e) {
        if (conn.lost === undefined) throw e;
        this.#losses++;
        if (connection > 1 || conn.lostBeforeBegin !== true || left() <= 0) throw e;
        this.#warn(`PostgreSQL connection found lost (${conn.lost}) before a transaction began; running it on a new connection`);
      } finally {
        c.off('error', onError);
        c.release(conn.broken);
      }
    }
  }

  /** The runs of one {@link PostgresStore.#tx} on its connection `c`: again after a deadlock, up to {@link TX_RUNS}. */
  async #runs<T>(
    c: pg.PoolClient,
    conn: TxConnection,
    fn: (c: pg.PoolClient) => Promise<T>,
    deadline: number | undefined,
    timeoutMs: number | null,
    left: () => number,
  ): Promise<T> {
    // Every run on this one connection: a run again never queues for a pool connection behind
    // other callers, which could hold it past the deadline.
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#attempt(c, conn, fn, deadline === undefined ? null : Math.max(1, deadline - Date.now()));
      } catch (e) {
        const code = (e as { code?: unknown }).code;
        if (code !== '40P01' && code !== '40001') throw e;
        if (conn.broken !== undefined) {
          throw new StoreUnavailableError('store_unreachable', `PostgreSQL's connection was lost after an abort (${code})`, { cause: e });
        }
        // Aborted on every run: contention on the server, not the request's fault (a 503, not a 500).
        if (attempt >= TX_RUNS) {
          throw new StoreUnavailableError('store_busy', `PostgreSQL aborted the transaction (${code}) on each of ${attempt} runs`, {
            cause: e,
          });
        }
        // A run again is begun only with a tenth of the bound left after its pause, checked again
        // once the pause is over (a timer can fire late): one begun with less would likely be cut
        // off by the timeout, its connection destroyed, rather than fail as what it is: contention.
        const pause = retryPause(attempt);
        if (left() < pause) {
          throw new StoreUnavailableError('store_busy', `PostgreSQL kept aborting the transaction (${code}) for ${timeoutMs} ms`, {
            cause: e,
          });
        }
        await new Promise((resolve) => setTimeout(resolve, pause));
        if (left() < 0) {
          throw new StoreUnavailableError('store_busy', `PostgreSQL kept aborting the transaction (${code}) for ${timeoutMs} ms`, {
            cause: e,
          });
        }
      }
    }
  }

  /**
   * One attempt of {@link PostgresStore.#tx}, on its connection `c` (`conn.broken` set when it must
   * not be used again; `conn.lost` when it was lost, and `conn.lostBeforeBegin` when that was at
   * its `BEGIN`). With `timeoutMs`, one not committed by then fails with
   * {@link StoreUnavailableError} and its connection is destroyed, which rolls it back; and the
   * transaction's statements have a server-side `lock_timeout` and `statement_timeout` of
   * {@link serverTimeout}(`timeoutMs`), which fail it (a {@link StoreUnavailableError} too,
   * `store_busy`) on the server first, and its session an `idle_in_transaction_session_timeout` of
   * `timeoutMs` at most: idle that long inside it, its client has given up (a connection lost
   * without a reset), and the server rolls it back then, releasing its locks.
   */
  async #attempt<T>(c: pg.PoolClient, conn: TxConnection, fn: (c: pg.PoolClient) => Promise<T>, timeoutMs: number | null): Promise<T> {
    let timedOut = false;
    let begun = false;
    const timer =
      timeoutMs === null
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            // The statement under way then fails ("Connection terminated"). Not end(): it waits for
            // an answer from a server that may never give one. PostgreSQL rolls back a session it lost.
            c.connection.stream.destroy();
          }, timeoutMs);
    try {
      if (timeoutMs === null) await c.query('BEGIN; SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0');
      else {
        const server = serverTimeout(timeoutMs);
        const idle = Math.min(this.#idleInTransactionTimeout, timeoutMs);
        await c.query(
          `BEGIN; SET LOCAL lock_timeout = ${server}; SET LOCAL statement_timeout = ${server}; SET LOCAL idle_in_transaction_session_timeout = ${idle}`,
        );
      }
      begun = true;
      const result = await fn(c);
      await c.query('COMMIT');
      return result;
    } catch (e) {
      if (timedOut) {
        conn.broken = new StoreUnavailableError('store_unreachable', `PostgreSQL did not finish within ${timeoutMs} ms`, { cause: e });
        throw conn.broken;
      }
      const lost = lostConnection(e);
      if (lost !== undefined) {
        conn.lost = lost;
        conn.lostBeforeBegin = !begun;
      }
      // A connection whose rollback failed may still be inside the transaction: never reused.
      await c.query('ROLLBACK').catch((r: unknown) => {
        conn.broken ??= r instanceof Error ? r : new Error('ROLLBACK failed');
      });
      const code = (e as { code?: unknown }).code;
      if (timeoutMs !== null && typeof code === 'string' && SERVER_TIMEOUT_SQLSTATE.has(code)) {
        // The server gave up on a lock or a statement (see serverTimeout): rolled back, the
        // connection fine.
        throw new StoreUnavailableError('store_busy', `PostgreSQL gave up within ${serverTimeout(timeoutMs)} ms: ${(e as Error).message}`, {
          cause: e,
        });
      }
      const busy = exhausted(e);
      if (busy) throw busy;
      const mapped = unavailable(e);
      // A connection that failed is closed rather than handed to the next caller.
      if (mapped instanceof StoreUnavailableError) conn.broken = mapped;
      throw mapped;
    } finally {
      clearTimeout(timer);
      // Destroyed, however the attempt ended: never handed to the next caller.
      if (timedOut) conn.broken ??= new Error('destroyed after its timeout');
    }
  }

  /**
   * A read (one `SELECT`, or `WITH` … `SELECT`), bounded by `timeoutMs` (by default
   * {@link PostgresStoreOptions.requestTimeoutMillis}; the poll's reads pass
   * {@link PostgresStoreOptions.readTimeoutMillis}): one unanswered by then fails with
   * {@link StoreUnavailableError}, and its connection is destroyed rather than reused. The server
   * gives up on it first when it waits for a lock or runs long (the session's `lock_timeout` and
   * `statement_timeout`): `store_busy`. One whose connection was lost (a pooled connection that
   * died while idle, say) is run once more on a new connection ({@link PostgresStore.#connect}),
   * within what is left of the bound: a read changes nothing. Writes go through
   * {@link PostgresStore.#tx}, whose `BEGIN` tells a connection lost before it from one lost at
   * its commit.
   */
  async #q(sql: string, args: unknown[] = [], timeoutMs: number = this.#requestTimeout): Promise<Row[]> {
    if (!/^\s*(?:SELECT|WITH)\b/.test(sql)) throw new TypeError('PostgresStore.#q runs reads only: a write goes through #tx');
    const deadline = Date.now() + timeoutMs;
    for (let connection = 1; ; connection++) {
      const c = await this.#connect(connection > 1);
      // Checked out, a connection's 'error' event has no listener of the pool's: unheard, it ends
      // the process. The failure reaches the query anyway.
      const onError = () => {};
      c.on('error', onError);
      let failed: Error | undefined;
      try {
        // query_timeout: a pg option its types leave out of QueryConfig.
        const query: pg.QueryConfig & { query_timeout: number } = {
          text: sql,
          values: args,
          query_timeout: Math.max(1, deadline - Date.now()),
        };
        const { rows } = await c.query<Row>(query);
        this.#alive.set(c, this.#losses);
        return rows;
      } catch (e) {
        // Destroyed rather than reused, whatever the failure (as pg's Pool.query does).
        failed = e instanceof Error ? e : new Error('query failed');
        if (e instanceof Error && e.message === 'Query read timeout') {
          throw new StoreUnavailableError('store_unreachable', `PostgreSQL did not answer within ${timeoutMs} ms`, { cause: e });
        }
        const lost = lostConnection(e);
        if (lost !== undefined) {
          this.#losses++;
          if (connection === 1 && deadline - Date.now() > timeoutMs / 10) {
            this.#warn(`PostgreSQL connection found lost (${lost}) during a read; reading again on a new connection`);
            continue;
          }
        }
        const code = (e as { code?: unknown }).code;
        if (typeof code === 'string' && SERVER_TIMEOUT_SQLSTATE.has(code)) {
          throw new StoreUnavailableError('store_busy', `PostgreSQL gave up on a statement: ${(e as Error).message}`, { cause: e });
        }
        throw exhausted(e) ?? unavailable(e);
      } finally {
        c.off('error', onError);
        c.release(failed);
      }
    }
  }

  /** One write statement in a transaction of its own ({@link PostgresStore.#tx}); its `rowCount`. */
  async #write(sql: string, args: unknown[]): Promise<number> {
    return this.#tx(async (c) => (await c.query(sql, args)).rowCount ?? 0);
  }

  async #bump(c: Q, name: string): Promise<void> {
    await c.query('UPDATE meta SET value = value + 1 WHERE name = $1', [name]);
  }

  // Clients.

  async createClient(x: ClientRecord, options: { readonly limit?: ClientLimit } = {}): Promise<void> {
    const { limit } = options;
    try {
      await this.#tx(async (c) => {
        if (limit !== undefined) {
          // Creations under one limit take turns (held to the commit), so each counts every one
          // committed before it: READ COMMITTED gives the count its own snapshot, taken after the lock.
          await c.query("SELECT pg_advisory_xact_lock(hashtext('tessera.client_limit:' || $1))", [limit.idPrefix]);
          // starts_with, not a range on id: ranges follow the database's collation, which need not be bytewise.
          const r = await c.query('SELECT count(*) AS n FROM (SELECT 1 FROM clients WHERE starts_with(id, $1) LIMIT $2) s', [
            limit.idPrefix,
            limit.max,
          ]);
          if (num((r.rows[0] as Row).n) >= limit.max) {
            throw new StoreCapacityError('client_limit_reached', `${limit.max} clients with ids starting "${limit.idPrefix}" exist`);
          }
        }
        await c.query(
          `INSERT INTO clients (id, auth_method, secret_method, secret_hash, jwks, jwks_uri, scopes, audiences, grant_types, access_token_ttl, exchange_retarget_audiences, redirect_uris, allowed_origins, name, disabled, created_at, updated_at, dpop_bound_access_tokens)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`,
          clientValues(x, (v) => v),
        );
        await this.#bump(c, 'clients_version');
      });
    } catch (e) {
      if (isUnique(e)) throw new StoreConflictError('client_exists', `a client with id "${x.id}" exists`);
      throw e;
    }
  }

  async getClient(id: string): Promise<ClientRecord | undefined> {
    const [r] = await this.#q('SELECT * FROM clients WHERE id = $1', [id]);
    return r ? clientRow(r) : undefined;
  }

  async findClientIdIgnoringCase(id: string): Promise<string | undefined> {
    // Client ids are ASCII, which lower() folds alike in every locale.
    const [r] = await this.#q('SELECT id FROM clients WHERE lower(id) = lower($1) LIMIT 1', [id]);
    return r ? (r.id as string) : undefined;
  }

  async listClients(): Promise<ClientRecord[]> {
    return (await this.#q('SELECT * FROM clients ORDER BY id')).map(clientRow);
  }

  async updateClient(id: string, patch: ClientPatch, now: number): Promise<ClientRecord | undefined> {
    const columns = clientPatchColumns((v) => v);
    const values: unknown[] = [now];
    const sets = ['updated_at = $1'];
    for (const [key, value] of Object.entries(patch) as [keyof ClientPatch, never][]) {
      if (value === undefined) continue;
      const [column, encode] = columns[key];
      values.push(encode(value));
      sets.push(`${column} = $${values.length}`);
    }
    values.push(id);
    return this.#tx(async (c) => {
      const r = await c.query(`UPDATE clients SET ${sets.join(', ')} WHERE id = $${values.length} RETURNING *`, values);
      if (r.rowCount === 0) return undefined;
      await this.#bump(c, 'clients_version');
      await this.#notifyClients(c);
      return clientRow(r.rows[0] as Row);
    });
  }

  async deleteClient(id: string): Promise<boolean> {
    return this.#tx(async (c) => {
      const r = await c.query('DELETE FROM clients WHERE id = $1', [id]);
      await this.#deleteInKeyOrder(c, 'remembered_consents', 'client_id = $1', [id]);
      if (r.rowCount === 0) return false;
      await this.#bump(c, 'clients_version');
      await this.#notifyClients(c);
      return true;
    });
  }

  /**
   * Tell watchers, on commit, that a client changed (disabled, removed, its settings): a payload
   * that is no sequence number, which {@link PostgresStore.watchRevocations} reports as `undefined`,
   * so every instance re-reads its clients within milliseconds rather than at its next poll, and
   * none goes on authenticating a client disabled or removed elsewhere until then.
   */
  async #notifyClients(c: pg.PoolClient): Promise<void> {
    await c.query('SELECT pg_notify($1, $2)', [this.#channel, 'clients']);
  }

  // Signing keys.

  async listSigningKeys(): Promise<SigningKeyRecord[]> {
    // With the poll's read timeout: the sync reloads the keys when their version moved.
    return (await this.#q('SELECT * FROM signing_keys ORDER BY activates_at, created_at, seq', [], this.#readTimeout)).map(signingKeyFrom);
  }

  async addSigningKey(k: SigningKeyRecord, options: AddSigningKeyOptions = {}): Promise<boolean> {
    try {
      return await this.#tx(async (c) => {
        // Rows locked in one order (by kid): two rotations sealing the same keys wait on each
        // other; the second then reads the first's MAC, not its own `from`, and adds nothing.
        const seals = [...(options.seal ?? [])].sort((a, b) => (a.kid < b.kid ? -1 : a.kid > b.kid ? 1 : 0));
        for (const s of seals) {
          const r = await c.query('SELECT mac FROM signing_keys WHERE kid = $1 FOR UPDATE', [s.kid]);
          if (r.rows[0]?.mac !== s.from)
            throw new StoreConflictError('signing_key_stale', `signing key ${s.kid} changed since it was read`);
        }
        if (options.unlessPendingAfter !== undefined) {
          // Conflicts with itself (and with every write to the table), not with reads: two
          // conditional adds take turns, and the second sees the first's key.
          await c.query('LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE');
          const pending = await c.query('SELECT 1 FROM signing_keys WHERE activates_at > $1 LIMIT 1', [options.unlessPendingAfter]);
          if ((pending.rowCount ?? 0) > 0) return false;
        }
        await c.query(
          `INSERT INTO signing_keys (kid, alg, public_jwk, sealed_private_key, created_at, activates_at, mac, retires_at, successor_kid)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
          signingKeyValues(k),
        );
        for (const s of seals) {
          await c.query('UPDATE signing_keys SET retires_at = $1, successor_kid = $2, mac = $3 WHERE kid = $4', [
            s.retiresAt,
            s.successorKid,
            s.mac,
            s.kid,
          ]);
        }
        await this.#bump(c, 'keys_version');
        return true;
      }, this.#maintenanceTimeout);
    } catch (e) {
      if (isUnique(e)) throw new StoreConflictError('signing_key_exists', `a signing key with kid "${k.kid}" exists`);
      throw e;
    }
  }

  async deleteSigningKey(kid: string): Promise<boolean> {
    return this.#tx(async (c) => {
      await c.query(
        `INSERT INTO removed_signing_keys (kid, alg, public_jwk, created_at, activates_at, mac, retires_at, successor_kid)
         SELECT kid, alg, public_jwk, created_at, activates_at, mac, retires_at, successor_kid FROM signing_keys WHERE kid = $1
         ON CONFLICT (kid) DO NOTHING`,
        [kid],
      );
      const r = await c.query('DELETE FROM signing_keys WHERE kid = $1', [kid]);
      if (r.rowCount === 0) return false;
      await this.#bump(c, 'keys_version');
      return true;
    }, this.#maintenanceTimeout);
  }

  async listRemovedSigningKeys(): Promise<RemovedSigningKeyRecord[]> {
    return (await this.#q('SELECT * FROM removed_signing_keys ORDER BY activates_at, created_at')).map(removedSigningKeyFrom);
  }

  async upgradeSigningKeys(update: Parameters<Store['upgradeSigningKeys']>[0]): Promise<boolean> {
    // Rows locked in one order (by kid) whatever order the caller listed them in: two instances
    // upgrading at once then wait on each other instead of deadlocking on keys of equal times.
    const keys = [...update.keys].sort((a, b) => (a.kid < b.kid ? -1 : a.kid > b.kid ? 1 : 0));
    return this.#tx(async (c) => {
      for (const k of keys) {
        const r = await c.query('SELECT sealed_private_key FROM signing_keys WHERE kid = $1 FOR UPDATE', [k.kid]);
        if (r.rows[0]?.sealed_private_key !== k.from) return false;
      }
      for (const k of keys) {
        await c.query('UPDATE signing_keys SET sealed_private_key = $1, mac = $2 WHERE kid = $3', [k.sealedPrivateKey, k.mac, k.kid]);
      }
      for (const r of update.removed) {
        await c.query('UPDATE removed_signing_keys SET mac = $1 WHERE kid = $2 AND mac IS NULL', [r.mac, r.kid]);
      }
      if (update.keys.length > 0) await this.#bump(c, 'keys_version');
      return true;
    }, this.#maintenanceTimeout);
  }

  // Grants.

  /**
   * Serialize every change to the trees rooted at `roots` for the rest of the transaction; with
   * `sharedRoots` (a grant's creation: the tree of its actor's grant), hold a revocation of those
   * trees off without holding off other creations acting with them.
   *
   * Every tree writer takes the schema's trees key shared first, then its root's lock, in one
   * statement (the select list is evaluated in order); a revocation of at most
   * {@link BULK_REVOCATION_ROOTS} trees does the same with its roots sorted, one after another in one
   * statement. A revocation of more trees takes the trees key exclusively and no root lock: it waits
   * for every tree writer in flight and holds every new one off (each then reads what it committed)
   * until it commits, in a single lock whatever the number of trees; a lock per root would not fit
   * in PostgreSQL's shared lock table (`out of shared memory`, and nothing revoked). Tree writers of
   * other trees wait for it too, for as long as it runs (under 2 s for 20,000 trees).
   *
   * Lock order: the trees key, then roots, always after a subject's lock and a client's row (the
   * order grant creation and revocation take them in), so the exclusive key makes no new cycle.
   * An instance from before this key takes root locks only: a large revocation holds it off only
   * once every instance is upgraded (docs/token-service.md).
   */
  async #lockRoots(c: Q, roots: readonly string[], sharedRoots: readonly string[] = []): Promise<void> {
    const sorted = [...new Set(roots)].sort();
    const shared = new Set(sharedRoots.filter((r) => !sorted.includes(r)));
    if (shared.size > 0 && sorted.length <= BULK_REVOCATION_ROOTS) {
      // A grant's creation: its parent's tree exclusively and its actor's tree shared (a few locks),
      // all in the roots' order, as every other taker of root locks takes them.
      await c.query(`SELECT pg_advisory_xact_lock_shared(${treesKey('$1')})`, [this.#schema]);
      for (const r of [...sorted, ...shared].sort()) {
        const fn = shared.has(r) ? 'pg_advisory_xact_lock_shared' : 'pg_advisory_xact_lock';
        await c.query(`SELECT ${fn}(hashtext('tessera.grant:' || $1))`, [r]);
      }
      return;
    }
    if (sorted.length > BULK_REVOCATION_ROOTS) {
      await c.query(`SELECT pg_advisory_xact_lock(${treesKey('$1')})`, [this.#schema]);
    } else if (sorted.length === 1) {
      await c.query(`SELECT pg_advisory_xact_lock_shared(${treesKey('$2')}), pg_advisory_xact_lock(hashtext('tessera.grant:' || $1))`, [
        sorted[0],
        this.#schema,
      ]);
    } else if (sorted.length > 1) {
      await c.query(`SELECT pg_advisory_xact_lock_shared(${treesKey('$1')})`, [this.#schema]);
      await c.query(
        "SELECT pg_advisory_xact_lock(hashtext('tessera.grant:' || r)) FROM (SELECT r FROM unnest($1::text[]) WITH ORDINALITY AS t(r, n) ORDER BY n) s",
        [sorted],
      );
    }
  }

  /**
   * Serialize the revocation of the access token `jti` (exclusive) with the creation of grants
   * exchanged from it (shared) for the rest of the transaction: a creation reads the token's entry
   * under the lock, so a revocation that finished meanwhile is seen, and one that follows waits for
   * the creation to commit and revokes its grant. Taken before any other lock of either.
   */
  async #lockToken(c: Q, jtis: readonly string[], mode: 'shared' | 'exclusive'): Promise<void> {
    const fn = mode === 'shared' ? 'pg_advisory_xact_lock_shared' : 'pg_advisory_xact_lock';
    for (const jti of [...new Set(jtis)].sort()) await c.query(`SELECT ${fn}(hashtext('tessera.token:' || $1))`, [jti]);
  }

  /** Hold off every other grant creation for `subject`, and its revocation, until this commits. */
  async #lockSubject(c: Q, subject: string): Promise<void> {
    await c.query("SELECT pg_advisory_xact_lock(hashtext('tessera.subject:' || $1))", [subject]);
  }

  async createGrant(g: NewGrant, now: number, options: CreateGrantOptions = {}): Promise<GrantCreation> {
    try {
      return await this.#tx(async (c) => {
        // FOR SHARE holds off a concurrent disable or removal of the client until this commits, so
        // the revocation that follows it sees this grant.
        const [client] = (await c.query('SELECT disabled FROM clients WHERE id = $1 FOR SHARE', [g.clientId])).rows as Row[];
        if (!client || client.disabled === true) return 'client_inactive' as const;
        // The subject and actor tokens' revocations commit their entry with the cascade of the grants
        // exchanged from them, under the token's lock: read under it, one that finished meanwhile is
        // seen now, one that follows sees this grant.
        const jtis = [g.subjectJti, g.actorJti].filter((j): j is string => j != null);
        if (jtis.length > 0) {
          await this.#lockToken(c, jtis, 'shared');
          const { rows } = await c.query("SELECT value FROM revocations WHERE kind = 'token' AND value = ANY($1::text[])", [jtis]);
          const revoked = new Set(rows.map((r: Row) => String(r.value)));
          if (g.subjectJti != null && revoked.has(g.subjectJti)) return 'subject_revoked' as const;
          if (g.actorJti != null && revoked.has(g.actorJti)) return 'actor_inactive' as const;
        }
        // The actor's grant (apart from the parent, read below when it is the same grant): a
        // revocation of it (or of an ancestor, which revoked it with its subtree) is seen under its
        // tree's lock, taken shared below (exchanges acting with one agent's grant do not queue on
        // each other), which a revocation takes exclusively: one that finished meanwhile is seen
        // then, one that follows waits for this commit and revokes this grant by its actor_grant_id.
        const { actorGrantId } = options;
        let actorRoot: string | undefined;
        if (actorGrantId !== undefined && actorGrantId !== g.parentId) {
          const [actor] = (await c.query('SELECT root_id, expires_at, revoked_at FROM grants WHERE id = $1', [actorGrantId])).rows as Row[];
          if (!isActiveGrant(actor, now)) return 'actor_inactive' as const;
          actorRoot = String(actor.root_id);
        }
        await this.#lockSubject(c, g.subject);
        let rootId = g.id;
        let depth = 0;
        let issuer = g.issuer;
        if (g.parentId !== null) {
          const [found] = (await c.query('SELECT root_id FROM grants WHERE id = $1', [g.parentId])).rows as Row[];
          if (!found) return 'parent_inactive' as const;
          await this.#lockRoots(c, [String(found.root_id)], actorRoot === undefined ? [] : [actorRoot]);
          if (actorRoot !== undefined && !(await this.#activeGrant(c, actorGrantId as string, now))) return 'actor_inactive' as const;
          // Read again under the lock: a revocation that finished meanwhile is seen now.
          const [parent] = (await c.query('SELECT root_id, depth, issuer, expires_at, revoked_at FROM grants WHERE id = $1', [g.parentId]))
            .rows as Row[];
          if (!isActiveGrant(parent, now)) return 'parent_inactive' as const;
          rootId = String(parent.root_id);
          depth = num(parent.depth) + 1;
          issuer = String(parent.issuer);
        } else {
          if (actorRoot !== undefined) {
            await this.#lockRoots(c, [], [actorRoot]);
            if (!(await this.#activeGrant(c, actorGrantId as string, now))) return 'actor_inactive' as const;
          }
          // Read under the subject's lock, which a subject revocation holds until it commits with
          // its entry: one that finished meanwhile is seen now, one that follows sees this grant.
          if (options.subjectIssuedAt !== undefined && (await subjectRevokedSince(c, g.subject, g.issuer, options.subjectIssuedAt))) {
            return 'subject_revoked' as const;
          }
        }
        await c.query(
          `INSERT INTO grants (id, parent_id, root_id, depth, kind, issuer, subject, client_id, act, scopes, audiences, created_at, expires_at, subject_jti, actor_jti, actor_grant_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
          grantValues(g, issuer, rootId, depth, actorGrantId ?? null),
        );
        return createdGrant(g, issuer, rootId, depth, actorGrantId ?? null);
      });
    } catch (e) {
      if (isUnique(e)) throw new StoreConflictError('grant_exists', `a grant with id "${g.id}" exists`);
      throw e;
    }
  }

  /** Whether grant `id` is active at `now`, read by a statement of its own (after the locks taken before it). */
  async #activeGrant(c: Q, id: string, now: number): Promise<boolean> {
    const [row] = (await c.query('SELECT expires_at, revoked_at FROM grants WHERE id = $1', [id])).rows as Row[];
    return isActiveGrant(row, now);
  }

  async getGrant(id: string): Promise<GrantRecord | undefined> {
    const [r] = await this.#q('SELECT * FROM grants WHERE id = $1', [id]);
    return r ? grantFrom(r) : undefined;
  }

  async grantSubtree(id: string, limit = MAX_TREE_READ): Promise<GrantRecord[]> {
    // Level by level, each level in order and cut at what is left: the first `limit` grants in tree
    // order are read, never the rest of the tree.
    if (limit < 1) return [];
    const rows = await this.#q('SELECT * FROM grants WHERE id = $1', [id]);
    let level = rows;
    while (level.length > 0 && rows.length < limit) {
      level = await this.#q('SELECT * FROM grants WHERE parent_id = ANY($1::text[]) ORDER BY created_at, id LIMIT $2', [
        level.map((r) => String(r.id)),
        limit - rows.length,
      ]);
      // Not push(...level): a level can hold more grants than a call takes arguments.
      for (const r of level) rows.push(r);
    }
    return rows.map(grantFrom);
  }

  async grantAncestors(id: string, limit = MAX_TREE_READ): Promise<GrantRecord[]> {
    const sql = `
      WITH RECURSIVE up(id, parent_id, n) AS (
        SELECT id, parent_id, 0 FROM grants WHERE id = $1
        UNION ALL
        SELECT g.id, g.parent_id, up.n + 1 FROM grants g JOIN up ON g.id = up.parent_id WHERE up.n < $2::integer
      )
      SELECT g.* FROM grants g JOIN up USING (id) WHERE g.id <> $1 ORDER BY g.depth`;
    return (await this.#q(sql, [id, limit])).map(grantFrom);
  }

  /**
   * The cascade inside a transaction: lock the trees, revoke the subtrees, forget the consents that
   * approved them, log each grant. `forget` (a subject's or a client's remembered consents) is
   * deleted with them, after the trees' locks, whether or not anything was revoked.
   */
  async #revokeTree(
    c: Q,
    widen: WidenedRevocation,
    seed: string,
    args: unknown[],
    at: number,
    reason: string,
    entryExpiresAt: number,
    forget?: { readonly where: string; readonly args: unknown[] },
  ): Promise<RevokedGrant[]> {
    // The recursive query's row estimate is wild (millions for a subject's grants), which has the
    // planner JIT-compile it: a fifth of a second, every time, for a plan that runs in milliseconds.
    await c.query('SET LOCAL jit = off');
    // Every tree at once: a run again of a revocation whose cascade reached more trees than root
    // locks can be taken for (below).
    let everyTree = widen.everyTree;
    const locked = new Set<string>();
    if (everyTree) {
      await c.query(`SELECT pg_advisory_xact_lock(${treesKey('$1')})`, [this.#schema]);
    } else {
      const roots = ((await c.query(`SELECT DISTINCT root_id FROM grants WHERE id IN (${seed})`, args)).rows as Row[]).map((r) =>
        String(r.root_id),
      );
      await this.#lockRoots(c, roots);
      everyTree = new Set(roots).size > BULK_REVOCATION_ROOTS;
      for (const r of roots) locked.add(r);
    }
    const cascade = async (seedSql: string, seedArgs: unknown[]): Promise<Row[]> => {
      const n = seedArgs.length;
      return (
        await c.query(
          `${SUBTREE(seedSql)}
           UPDATE grants SET revoked_at = $${n + 1}, revoked_reason = $${n + 2}
           WHERE id IN (SELECT id FROM sub) AND revoked_at IS NULL
           RETURNING id, parent_id, root_id, kind, issuer, subject, client_id, expires_at`,
          [...seedArgs, at, reason],
        )
      ).rows as Row[];
    };
    const rows = await cascade(seed, args);
    // The cascade followed actor links into other trees (grants exchanged with an actor token of a
    // revoked grant): those trees are locked now, and the cascade run again from what it revoked, a
    // statement with a later snapshot, until it reaches no new tree. A child or an exchange acting
    // with a grant of such a tree that committed before its lock was taken is then seen; one after
    // waits for this commit and finds its parent or actor revoked. Actor links only point from an
    // exchange to grants older than it, so this ends.
    for (;;) {
      if (everyTree) break;
      const extra = [...new Set(rows.map((r) => String(r.root_id)))].filter((r) => !locked.has(r));
      if (extra.length === 0) break;
      if (locked.size + extra.length > BULK_REVOCATION_ROOTS) {
        // More trees than root locks fit for: run again, the trees key taken exclusively first.
        widen.everyTree = true;
        throw Object.assign(new Error('the revocation reaches more trees than root locks are taken for: run again holding every tree'), {
          code: '40001',
        });
      }
      // After the locks already held (the trees key shared among them), as a cascade of several trees takes them.
      for (const r of extra.sort()) {
        await c.query("SELECT pg_advisory_xact_lock(hashtext('tessera.grant:' || $1))", [r]);
        locked.add(r);
      }
      for (const r of await cascade('SELECT unnest($1::text[])', [rows.map((r) => String(r.id))])) rows.push(r);
    }
    // Consent rows only under the trees' locks, as a reuse cascade deletes its tree's: a sign-out
    // (or a client's revocation) that deleted them before waiting for a tree held by a cascade
    // wanting one of them deadlocked with it, a second a pair (deadlock_timeout).
    if (forget !== undefined) await this.#deleteInKeyOrder(c, 'remembered_consents', forget.where, forget.args);
    if (rows.length === 0) return [];
    // The consents that approved the revoked trees begun by a person's approval, in one statement.
    const approved = rows.filter((r) => r.parent_id === null && r.kind === 'authorization_code');
    if (approved.length > 0) {
      await this.#deleteInKeyOrder(c, 'remembered_consents', '(subject, client_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))', [
        approved.map((r) => String(r.subject)),
        approved.map((r) => String(r.client_id)),
      ]);
    }
    const ids = rows.map((r) => String(r.id));
    await c.query('UPDATE refresh_tokens SET revoked_at = $1 WHERE grant_id = ANY($2) AND revoked_at IS NULL', [at, ids]);
    await this.#log(
      c,
      rows.map((r) => ({
        kind: 'grant' as const,
        value: String(r.id),
        issuer: null,
        at,
        expiresAt: r.expires_at === null ? entryExpiresAt : Math.min(num(r.expires_at) + REVOCATION_ENTRY_SKEW, entryExpiresAt),
      })),
    );
    return rows.map((r) => ({ id: String(r.id), issuer: String(r.issuer), subject: String(r.subject), clientId: String(r.client_id) }));
  }

  /**
   * Delete the rows of `table` matching `where` (in `args`' placeholders), having locked them in
   * the order of the table's key first (`SELECT … ORDER BY key FOR UPDATE`), so that two such
   * deletes overlapping by any number of rows queue on the first row they share instead of
   * deadlocking. A plain DELETE locks rows in its plan's order, and even two sequential scans
   * differ: PostgreSQL synchronizes those of a table larger than a quarter of shared_buffers, one
   * begun while another runs starting where that one is and wrapping around. A row it waited for
   * that no longer matches then (a code redeemed meanwhile) is not deleted but stays locked, as a
   * plain DELETE's recheck left it. For the rows no tree's lock covers: a subject's or client's
   * unredeemed codes and remembered consents.
   */
  async #deleteInKeyOrder(c: Q, table: 'authorization_codes' | 'remembered_consents', where: string, args: unknown[]): Promise<void> {
    const key = table === 'authorization_codes' ? ['hash'] : ['subject', 'client_id'];
    await c.query(
      `WITH doomed AS MATERIALIZED (SELECT ${key.join(', ')} FROM ${table} WHERE ${where} ORDER BY ${key.join(', ')} FOR UPDATE)
       DELETE FROM ${table} t USING doomed d WHERE ${key.map((k) => `t.${k} = d.${k}`).join(' AND ')}`,
      args,
    );
  }

  /**
   * Append to the revocation log with sequence numbers that become visible in commit order. A
   * `token` entry (an access token's `jti`, a login session's sign-out) already in the log is
   * skipped: looked up under the table lock every append takes, so a skipped one numbers and
   * announces nothing; for a sign-out the unique index (migration 21) holds it to one entry
   * whoever writes.
   * @returns how many entries were appended (the rows the inserts added): of revocations of one
   *   token or sign-outs of one session racing, at any instance, only the one that took the lock
   *   first appends it, the others find it logged once they get the lock.
   */
  async #log(c: Q, all: readonly Omit<RevocationEntry, 'seq'>[]): Promise<number> {
    if (all.length === 0) return 0;
    await c.query('LOCK TABLE revocations IN EXCLUSIVE MODE');
    let entries = all;
    const tokens = all.filter((e) => e.kind === 'token');
    if (tokens.length > 0) {
      const { rows } = await c.query(
        `SELECT r.value, r.issuer FROM revocations r
         JOIN unnest($1::text[], $2::text[]) AS e(value, issuer) ON r.value = e.value AND r.issuer IS NOT DISTINCT FROM e.issuer
         WHERE r.kind = 'token'`,
        [tokens.map((e) => e.value), tokens.map((e) => e.issuer)],
      );
      entries = unloggedEntries(all, new Set((rows as Row[]).map((r) => tokenEntryKey(String(r.value), strOrNull(r.issuer)))));
      if (entries.length === 0) return 0;
    }
    const [row] = (await c.query("UPDATE meta SET value = value + $1 WHERE name = 'revocations_seq' RETURNING value", [entries.length]))
      .rows as Row[];
    const last = num(row?.value);
    // Numbered in the entries' order, first + 1 to last; in chunks, each one statement (a tree of
    // 100,000 grants is a few round trips, not 100,000: it has to fit in the request's bound).
    let appended = 0;
    for (let i = 0; i < entries.length; i += LOG_CHUNK) {
      const chunk = entries.slice(i, i + LOG_CHUNK);
      const inserted = await c.query(
        `INSERT INTO revocations (seq, kind, value, issuer, at, expires_at)
         SELECT $1::bigint + e.n, e.kind, e.value, e.issuer, e.at, e.expires_at
         FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[]) WITH ORDINALITY AS e(kind, value, issuer, at, expires_at, n)
         ON CONFLICT (value, issuer) WHERE kind = 'token' AND issuer IS NOT NULL DO NOTHING`,
        [
          last - entries.length + i,
          chunk.map((e) => e.kind),
          chunk.map((e) => e.value),
          chunk.map((e) => e.issuer),
          chunk.map((e) => e.at),
          chunk.map((e) => e.expiresAt),
        ],
      );
      appended += inserted.rowCount ?? 0;
    }
    // Delivered when (and only if) this transaction commits. The payload is the last seq, nothing else.
    await c.query('SELECT pg_notify($1, $2)', [this.#channel, String(last)]);
    return appended;
  }

  async revokeGrants(selector: GrantSelector, options: RevokeOptions): Promise<RevokedGrant[]> {
    let seed: string;
    let args: unknown[];
    if ('grantId' in selector) {
      seed = 'SELECT id FROM grants WHERE id = $1';
      args = [selector.grantId];
    } else if ('subject' in selector) {
      seed =
        selector.issuer === undefined
          ? 'SELECT id FROM grants WHERE subject = $1 AND revoked_at IS NULL'
          : 'SELECT id FROM grants WHERE subject = $1 AND issuer = $2 AND revoked_at IS NULL';
      args = selector.issuer === undefined ? [selector.subject] : [selector.subject, selector.issuer];
    } else if ('clientId' in selector) {
      seed = 'SELECT id FROM grants WHERE client_id = $1 AND revoked_at IS NULL';
      args = [selector.clientId];
    } else {
      // Two index lookups (the token's grant's children by grants_parent; grants_actor_jti), not one
      // scan for an OR.
      seed =
        'SELECT id FROM (SELECT id FROM grants WHERE parent_id = $2 AND subject_jti = $1 AND revoked_at IS NULL UNION SELECT id FROM grants WHERE actor_jti = $1 AND revoked_at IS NULL) s';
      args = [selector.exchangedFrom, selector.tokenGrantId];
    }
    // Longer than a request's bound when the housekeeping's is (see requestTimeoutMillis).
    const bound = Math.max(this.#requestTimeout, this.#maintenanceTimeout);
    const widen: WidenedRevocation = { everyTree: false };
    return this.#tx(async (c) => {
      // Codes approved and not yet redeemed are approvals from before this revocation: redeemed
      // after it, one would begin a new tree for the revoked subject or client. A redeemed code
      // stays, for its replay detection. Deleted before the subject or client lock, the order a
      // redemption takes them in (the code's row, then the client and the subject): a redemption
      // under way commits first, and its grant is then among those revoked below. The row of a code
      // redeemed while this waited for it stays locked (PostgreSQL's recheck locks it), so the trees
      // come after the rows here as in a replay of a code (row, then tree).
      // In the codes' key order (see #deleteInKeyOrder): a subject's revocation and a client's
      // overlapping by many codes, each scanning the table from where the other's scan was, locked
      // them in opposite orders, a deadlock.
      if ('subject' in selector) {
        await this.#deleteInKeyOrder(
          c,
          'authorization_codes',
          `subject = $1${selector.issuer === undefined ? '' : ' AND issuer = $2'} AND consumed_at IS NULL`,
          selector.issuer === undefined ? [selector.subject] : [selector.subject, selector.issuer],
        );
      } else if ('clientId' in selector) {
        await this.#deleteInKeyOrder(c, 'authorization_codes', 'client_id = $1 AND consumed_at IS NULL', [selector.clientId]);
      }
      // No new grant of this subject or client can begin until this commits (see the module's notes);
      // nor one exchanged from this token (its creation reads the token's entry appended below).
      if ('exchangedFrom' in selector) await this.#lockToken(c, [selector.exchangedFrom], 'exclusive');
      // The subject's or client's remembered consents go with its trees, deleted after their locks
      // (see #revokeTree).
      let forget: { where: string; args: unknown[] } | undefined;
      if ('subject' in selector) {
        await this.#lockSubject(c, selector.subject);
        forget =
          selector.issuer === undefined
            ? { where: 'subject = $1', args: [selector.subject] }
            : { where: 'subject = $1 AND issuer = $2', args: [selector.subject, selector.issuer] };
      } else if ('clientId' in selector) {
        await c.query('SELECT 1 FROM clients WHERE id = $1 FOR UPDATE', [selector.clientId]);
        forget = { where: 'client_id = $1', args: [selector.clientId] };
      }
      const revoked = await this.#revokeTree(c, widen, seed, args, options.at, options.reason, options.entryExpiresAt, forget);
      // Still under the subject's lock (or the client's row lock), so a grant creation waiting on
      // it reads these entries once it gets it.
      // Not inside `alsoLogged?.(…)`: an optional call evaluates no argument when there is no callee.
      const appended = await this.#log(c, options.alsoLog?.(revoked) ?? []);
      options.alsoLogged?.(appended);
      return revoked;
    }, bound);
  }

  // Refresh tokens.

  async createRefreshToken(t: RefreshTokenRecord): Promise<void> {
    try {
      await this.#tx(async (c) => {
        // Under a grant revoked since it was created (token exchange issues the token after the
        // grant commits), the token is stored revoked with it. The tree's lock first, as rotation
        // takes it: a revocation under way commits first and the insert (a later snapshot) reads
        // its revoked_at, or it waits for this commit and its cascade sees the new row.
        const [tree] = (await c.query('SELECT root_id FROM grants WHERE id = $1', [t.grantId])).rows as Row[];
        if (tree) await this.#lockRoots(c, [String(tree.root_id)]);
        await c.query(
          `INSERT INTO refresh_tokens (hash, grant_id, client_id, created_at, expires_at, rotated_at, revoked_at, jkt)
           VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, (SELECT revoked_at FROM grants WHERE id = $2)), $8)`,
          [t.hash, t.grantId, t.clientId, t.createdAt, t.expiresAt, t.rotatedAt, t.revokedAt, t.jkt ?? null],
        );
      });
    } catch (e) {
      if (isUnique(e)) throw new StoreConflictError('refresh_token_exists', 'a refresh token with this hash exists');
      throw e;
    }
  }

  async getRefreshToken(hash: string): Promise<RefreshTokenRecord | undefined> {
    const [r] = await this.#q('SELECT * FROM refresh_tokens WHERE hash = $1', [hash]);
    return r ? refreshFrom(r) : undefined;
  }

  async rotateRefreshToken(hash: string, o: RefreshRotationOptions): Promise<RefreshRotation> {
    const widen: WidenedRevocation = { everyTree: false };
    return this.#tx(async (c): Promise<RefreshRotation> => {
      // The tree's lock first, in the order a revocation takes its locks (the tree, then grant and
      // token rows): a revocation under way commits first and the token is then found revoked, or
      // it waits for this commit and its cascade (a statement with a later snapshot) sees the
      // successor inserted below. Unlocked, a cascade could miss that row and leave it unrevoked
      // under the revoked grant. A token's grant and a grant's root never change.
      const [tree] = (await c.query('SELECT g.root_id FROM refresh_tokens t JOIN grants g ON g.id = t.grant_id WHERE t.hash = $1', [hash]))
        .rows as Row[];
      if (tree) await this.#lockRoots(c, [String(tree.root_id)]);
      const [row] = (await c.query('SELECT * FROM refresh_tokens WHERE hash = $1 FOR UPDATE', [hash])).rows as Row[];
      if (!row) return { status: 'invalid' };
      const token = refreshFrom(row);
      if (token.clientId !== o.clientId || token.revokedAt !== null) return { status: 'invalid' };
      if (token.rotatedAt !== null) {
        // Under the tree's lock: a rotation of the successor, or a revocation, waits for this one.
        const retried = await retryRotation(c, token, row.successor_hash, o);
        if (retried !== undefined) return retried;
        if (o.graceSeconds > 0 && o.now - token.rotatedAt < o.graceSeconds) return { status: 'grace' };
        const revoked = await this.#revokeTree(
          c,
          widen,
          'SELECT $1::text',
          [token.grantId],
          o.now,
          'refresh_token_reused',
          o.entryExpiresAt,
        );
        return { status: 'reused', grantId: token.grantId, revokedGrantIds: revoked.map((g) => g.id) };
      }
      if (token.expiresAt <= o.now) return { status: 'invalid' };
      const [g] = (await c.query('SELECT * FROM grants WHERE id = $1', [token.grantId])).rows as Row[];
      if (!g) return { status: 'invalid' };
      const grant = grantFrom(g);
      if (grant.revokedAt !== null || (grant.expiresAt !== null && grant.expiresAt <= o.now)) return { status: 'invalid' };
      const next = rotatedSuccessor(token, grant, o);
      await c.query('UPDATE refresh_tokens SET rotated_at = $1, expires_at = $2, successor_hash = $3 WHERE hash = $4', [
        o.now,
        spentKeptUntil(grant, o),
        o.nextHash,
        hash,
      ]);
      await c.query(
        'INSERT INTO refresh_tokens (hash, grant_id, client_id, created_at, expires_at, rotated_at, revoked_at, jkt) VALUES ($1, $2, $3, $4, $5, NULL, NULL, $6)',
        [next.hash, next.grantId, next.clientId, next.createdAt, next.expiresAt, next.jkt ?? null],
      );
      return { status: 'rotated', grant, next };
    });
  }

  // Authorization codes.

  async createAuthorizationCode(x: AuthorizationCodeRecord): Promise<void> {
    try {
      await this.#write(
        `INSERT INTO authorization_codes (hash, client_id, redirect_uri, code_challenge, subject, issuer, scopes, audiences, created_at, expires_at, consumed_at, grant_id, jkt, approval_since)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
        codeValues(x),
      );
    } catch (e) {
      if (isUnique(e)) throw new StoreConflictError('authorization_code_exists', 'an authorization code with this hash exists');
      throw e;
    }
  }

  async getAuthorizationCode(hash: string): Promise<AuthorizationCodeRecord | undefined> {
    const [r] = await this.#q('SELECT * FROM authorization_codes WHERE hash = $1', [hash]);
    return r ? codeFrom(r) : undefined;
  }

  async redeemAuthorizationCode(hash: string, o: CodeRedemptionOptions): Promise<CodeRedemption> {
    const widen: WidenedRevocation = { everyTree: false };
    return this.#tx(async (c): Promise<CodeRedemption> => {
      // Redemptions of one code queue on its lock, taken first and held to the commit, so each
      // reads the code (below, a statement after the lock: a later snapshot) once the one before it
      // committed. Without it, one that read the code unredeemed and then queued on its row, behind
      // the winner, locked the tree after the row, while one begun after the winner committed
      // locked the tree, then waited for the row: a deadlock, PostgreSQL's victim aborted only
      // after deadlock_timeout (1 s) and run again, a second a pair, until many racing
      // redemptions of one code ran past the request's bound. Its own key space (two integers):
      // no other lock of the store has that first half.
      await c.query("SELECT pg_advisory_xact_lock(hashtext('tessera.code'), hashtext($1))", [hash]);
      // The row lock makes concurrent redemptions of one code queue: exactly one finds it unconsumed.
      // Taken before any tree's lock: a reuse of the code locks its grant's tree after the row (in
      // #revokeTree), as the subject's or client's revocation does, which locks the subject's
      // unredeemed codes' rows first (its DELETE keeps the row of a code redeemed meanwhile locked
      // too, having waited for it), then the trees. A reuse that locked the tree first, then waited
      // for a row such a revocation held, while the revocation waited for the tree, deadlocked.
      const [row] = (await c.query('SELECT * FROM authorization_codes WHERE hash = $1 FOR UPDATE', [hash])).rows as Row[];
      if (!row) return { status: 'invalid' };
      const code = codeFrom(row);
      if (code.clientId !== o.clientId) return { status: 'invalid' };
      if (code.consumedAt !== null) {
        const revoked =
          code.grantId === null
            ? []
            : await this.#revokeTree(c, widen, 'SELECT $1::text', [code.grantId], o.now, 'authorization_code_reused', o.entryExpiresAt);
        return { status: 'reused', grantId: code.grantId, revokedGrantIds: revoked.map((g) => g.id) };
      }
      if (code.expiresAt <= o.now) return { status: 'invalid' };
      const g = o.grant;
      const [client] = (await c.query('SELECT disabled FROM clients WHERE id = $1 FOR SHARE', [g.clientId])).rows as Row[];
      if (!client || client.disabled === true) return { status: 'client_inactive' };
      await this.#lockSubject(c, g.subject);
      // Read under the subject's lock, as a root grant from another issuer's token: a subject
      // revocation that finished meanwhile is seen now (the code was approved after it, by an
      // instance that had not read it), one that follows sees this grant.
      if (await subjectRevokedSince(c, code.subject, o.loginScope, code.approvalSince ?? code.createdAt))
        return { status: 'subject_revoked' };
      // A root grant, its values listed by grantValues as createGrant's and the SQLite store's.
      const root = { ...g, parentId: null };
      await c.query(
        `INSERT INTO grants (id, parent_id, root_id, depth, kind, issuer, subject, client_id, act, scopes, audiences, created_at, expires_at, subject_jti, actor_jti, actor_grant_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
        grantValues(root, g.issuer, g.id, 0, null),
      );
      await c.query('UPDATE authorization_codes SET consumed_at = $1, grant_id = $2 WHERE hash = $3', [o.now, g.id, hash]);
      const t = o.refreshToken;
      if (t !== null) {
        await c.query(
          'INSERT INTO refresh_tokens (hash, grant_id, client_id, created_at, expires_at, rotated_at, revoked_at, jkt) VALUES ($1, $2, $3, $4, $5, NULL, NULL, $6)',
          [t.hash, g.id, t.clientId, t.createdAt, t.expiresAt, t.jkt ?? null],
        );
      }
      const grant = createdGrant(root, g.issuer, g.id, 0, null);
      return { status: 'redeemed', grant };
    });
  }

  // Remembered consents.

  async rememberConsent(x: RememberedConsentRecord): Promise<void> {
    await this.#write(
      `INSERT INTO remembered_consents (subject, client_id, issuer, identity_source, scopes, scopes_digest, audiences, redirect_uri, client_fingerprint, approval_hash, created_at, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
       ON CONFLICT (subject, client_id) DO UPDATE SET issuer = EXCLUDED.issuer, identity_source = EXCLUDED.identity_source,
         scopes = EXCLUDED.scopes, scopes_digest = EXCLUDED.scopes_digest, audiences = EXCLUDED.audiences,
         redirect_uri = EXCLUDED.redirect_uri, client_fingerprint = EXCLUDED.client_fingerprint, approval_hash = EXCLUDED.approval_hash,
         created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at`,
      consentValues(x),
    );
  }

  async getRememberedConsent(subject: string, clientId: string, now: number): Promise<RememberedConsentRecord | undefined> {
    const [r] = await this.#q('SELECT * FROM remembered_consents WHERE subject = $1 AND client_id = $2 AND expires_at > $3', [
      subject,
      clientId,
      now,
    ]);
    return r ? consentFrom(r) : undefined;
  }

  // Revocation log.

  async appendRevocations(entries: readonly Omit<RevocationEntry, 'seq'>[]): Promise<number> {
    if (entries.length === 0) return 0;
    return this.#tx((c) => this.#log(c, entries));
  }

  async tokenRevoked(jti: string): Promise<boolean> {
    return (await this.#q("SELECT 1 FROM revocations WHERE kind = 'token' AND value = $1 LIMIT 1", [jti])).length > 0;
  }

  async revocationsSince(afterSeq: number, now: number, limit = REVOCATIONS_PAGE): Promise<RevocationEntry[]> {
    const rows = await this.#q(
      'SELECT * FROM revocations WHERE seq > $1 AND expires_at > $2 ORDER BY seq LIMIT $3',
      [afterSeq, now, limit],
      this.#readTimeout,
    );
    return rows.map(revocationEntryFrom);
  }

  // Replay cache.

  async useOnce(key: string, expiresAt: number, now: number): Promise<boolean> {
    const n = await this.#write(
      `INSERT INTO replay (key, expires_at) VALUES ($1, $2)
       ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE replay.expires_at <= $3`,
      [key, expiresAt, now],
    );
    return n === 1;
  }

  // A2A task owners.

  async claimA2aTask(
    route: string,
    kind: A2aIdKind,
    id: string,
    owner: string,
    expiresAt: number,
    now: number,
    limit?: number,
  ): Promise<A2aTaskRecord | 'full'> {
    checkA2aOwner(owner);
    const key = a2aTaskKey(route, kind, id);
    const claim = async (q: (sql: string, args: unknown[]) => Promise<{ rows: Row[] }>): Promise<A2aTaskRecord> => {
      // The upsert locks a conflicting row and leaves it when it is another owner's live record; the
      // read after it then finds that owner. Only a prune (of an expired record) can remove it
      // between the two: claimed again then.
      for (let attempt = 1; ; attempt++) {
        const claimed = await q(
          `INSERT INTO a2a_tasks (key, route, owner, expires_at) VALUES ($1, $5, $2, $3)
           ON CONFLICT (key) DO UPDATE SET
             route = EXCLUDED.route,
             owner = EXCLUDED.owner,
             expires_at = CASE WHEN a2a_tasks.expires_at <= $4 THEN EXCLUDED.expires_at ELSE GREATEST(a2a_tasks.expires_at, EXCLUDED.expires_at) END
           WHERE a2a_tasks.owner = EXCLUDED.owner OR a2a_tasks.expires_at <= $4
           RETURNING owner, expires_at`,
          [key, owner, expiresAt, now, route],
        );
        if (claimed.rows[0] !== undefined) return a2aTaskFrom(claimed.rows[0]);
        const current = await q('SELECT owner, expires_at FROM a2a_tasks WHERE key = $1', [key]);
        if (current.rows[0] !== undefined) return a2aTaskFrom(current.rows[0]);
        if (attempt >= 3) throw new StoreUnavailableError('store_busy', 'the A2A task record kept changing under its claim');
      }
    };
    if (limit === undefined) return this.#tx((c) => claim((sql, args) => c.query(sql, args)));
    return this.#tx(async (c) => {
      const current = await c.query('SELECT owner, expires_at FROM a2a_tasks WHERE key = $1', [key]);
      const row = current.rows[0] as Row | undefined;
      if (row === undefined || num(row.expires_at) <= now) {
        // A new record of `owner`: its new records on the route take turns (held to the commit), so
        // each counts every one committed before it (READ COMMITTED: the count's snapshot is taken
        // after the lock). At most `limit` index entries are read.
        await c.query("SELECT pg_advisory_xact_lock(hashtext('tessera.a2a_owner:' || $1))", [JSON.stringify([route, owner])]);
        const counted = await c.query(
          'SELECT count(*) AS n FROM (SELECT 1 FROM a2a_tasks WHERE route = $1 AND owner = $2 AND expires_at > $3 LIMIT $4) t',
          [route, owner, now, limit],
        );
        if (Number(counted.rows[0]?.n) >= limit) return 'full';
      }
      return claim((sql, args) => c.query(sql, args));
    });
  }

  async releaseA2aTask(route: string, kind: A2aIdKind, id: string, owner: string): Promise<boolean> {
    return (await this.#write('DELETE FROM a2a_tasks WHERE key = $1 AND owner = $2', [a2aTaskKey(route, kind, id), owner])) === 1;
  }

  async a2aTaskOwner(route: string, kind: A2aIdKind, id: string, now: number): Promise<A2aTaskRecord | undefined> {
    const rows = await this.#q('SELECT owner, expires_at FROM a2a_tasks WHERE key = $1 AND expires_at > $2', [
      a2aTaskKey(route, kind, id),
      now,
    ]);
    return rows[0] === undefined ? undefined : a2aTaskFrom(rows[0]);
  }

  // Audit.

  async appendAudit(events: readonly AuditEvent[]): Promise<void> {
    if (events.length === 0) return;
    const cols = ['id', 'time', 'kind', 'subject', 'client_id', 'delegation_id', 'request_id', 'jti', 'token_hash', 'event'];
    const values: unknown[] = [];
    const tuples: string[] = [];
    for (const e of events) {
      const base = values.length;
      values.push(...auditValues(e));
      tuples.push(`(${cols.map((_, i) => `$${base + i + 1}`).join(', ')})`);
    }
    await this.#write(`INSERT INTO audit_events (${cols.join(', ')}) VALUES ${tuples.join(', ')} ON CONFLICT (id) DO NOTHING`, values);
  }

  async queryAudit(q: AuditQuery): Promise<AuditEvent[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const add = (column: string, op: string, value: unknown) => {
      if (value === undefined) return;
      args.push(value);
      where.push(`${column} ${op} $${args.length}`);
    };
    add('subject', '=', auditLookup(q.subject));
    add('delegation_id', '=', auditLookup(q.delegation_id));
    add('client_id', '=', auditLookup(q.client_id));
    add('request_id', '=', auditLookup(q.request_id));
    add('jti', '=', auditLookup(q.jti));
    add('token_hash', '=', auditLookup(q.token_hash));
    if (q.kinds !== undefined) {
      args.push([...q.kinds]);
      where.push(`kind = ANY($${args.length}::text[])`);
    }
    if (q.since !== undefined) {
      add('id', '>=', idFloor(q.since));
      add('time', '>=', q.since);
    }
    // No id bound for `until`: ids can be later than their event's time (see the SQLite store).
    add('time', '<=', q.until);
    add('id', '>', q.after_id);
    args.push(auditQueryLimit(q));
    const rows = await this.#q(
      `SELECT * FROM audit_events ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id LIMIT $${args.length}`,
      args,
    );
    return rows.map(auditEventFrom);
  }

  async pruneAudit(before: number, limit: number): Promise<number> {
    // The oldest first, through the unique index on id (COLLATE "C": bytewise, as ids sort by time),
    // locked in that order, skipping those another transaction holds (another instance's batch under
    // way, which deletes them): two instances' prunes never wait on each other, so never deadlock on
    // the rows they share, which the DELETE alone locked in its plan's order. A transaction of its
    // own for the server-side bounds of the maintenance timeout.
    return this.#tx(async (c) => {
      const r = await c.query(
        'DELETE FROM audit_events WHERE seq IN (SELECT seq FROM audit_events WHERE id < $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)',
        [idFloor(before), Math.max(1, Math.floor(limit))],
      );
      return r.rowCount ?? 0;
    }, this.#maintenanceTimeout);
  }

  async versions(): Promise<StoreVersions> {
    const rows = await this.#q('SELECT name, value FROM meta', [], this.#readTimeout);
    const v = Object.fromEntries(rows.map((r) => [String(r.name), num(r.value)]));
    return { keys: v.keys_version ?? 0, clients: v.clients_version ?? 0, revocations: v.revocations_seq ?? 0 };
  }

  /**
   * In batches of `pruneBatchSize` rows, each its own transaction bounded by the maintenance
   * timeout (client and server side), so one never holds row locks or a connection for long, and a
   * call stops after `pruneBudgetMillis` (the next goes on). A batch skips rows another transaction
   * holds locked (`SKIP LOCKED`; a later call deletes them) rather than wait for them. Tables are
   * emptied one after the other: refresh tokens before the grants they belong to; a grant only once
   * no grant names it as parent.
   */
  async prune(now: number, options: { readonly grantsExpiredBefore?: number } = {}): Promise<boolean> {
    // By ctid, the condition checked again on the row deleted: a row updated since the batch was
    // chosen (a consent approved again) is deleted only if it still qualifies. Oldest first, through
    // the expires_at index: a sequential scan (chosen when most rows qualify) would read the dead
    // rows of every earlier batch again, until vacuum.
    const step = (table: string, where: string, arg: number, untilEmpty = false): PruneStep => {
      const sql = `DELETE FROM ${table} t WHERE t.ctid = ANY(ARRAY(SELECT ctid FROM ${table} t WHERE ${where} ORDER BY t.expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)) AND ${where}`;
      return {
        batch: (limit) => this.#tx(async (c) => (await c.query(sql, [arg, limit])).rowCount ?? 0, this.#maintenanceTimeout),
        untilEmpty,
      };
    };
    const steps = [
      // A spent (rotated) token is kept while its family has a token not yet due: reuse detection.
      step(
        'refresh_tokens',
        't.expires_at <= $1 AND (t.rotated_at IS NULL OR NOT EXISTS (SELECT 1 FROM refresh_tokens f WHERE f.grant_id = t.grant_id AND f.expires_at > $1))',
        now,
      ),
      step('replay', 't.expires_at <= $1', now),
      step('revocations', 't.expires_at <= $1', now),
      step('authorization_codes', 't.expires_at <= $1', now - CODE_RETENTION),
      step('remembered_consents', 't.expires_at <= $1', now),
      step('a2a_tasks', 't.expires_at <= $1', now),
    ];
    if (options.grantsExpiredBefore !== undefined) {
      // Leaves first: a child never outlives its parent, so every expired grant's children are
      // expired too and go first; a grant still stored never lacks its parent, between batches too.
      steps.push(
        step(
          'grants',
          't.expires_at IS NOT NULL AND t.expires_at < $1 AND NOT EXISTS (SELECT 1 FROM grants c WHERE c.parent_id = t.id)',
          options.grantsExpiredBefore,
          true,
        ),
      );
    }
    return pruneInBatches(steps, this.#prune);
  }

  /**
   * Hear of every committed append to the revocation log, by any process, through LISTEN on a
   * dedicated connection (not one of the pool's). `onChange` gets the last sequence number of the
   * transaction that committed, or `undefined` after the connection was re-established following a
   * loss (appends made meanwhile went unheard). A connection that fails, is closed by the server or
   * stops answering (a liveness query after 15 s of silence, unanswered for 5 s) is retried with backoff, with one warning per loss (never the URL or a password); nothing here
   * ever throws into the process. Resolves once the first connection attempt is over, LISTENing or
   * not.
   */
  async watchRevocations(
    onChange: (seq: number | undefined) => void,
    options: { readonly onWarning?: (message: string) => void } = {},
  ): Promise<() => Promise<void>> {
    const listener = new Listener({
      connectionString: this.#connectionString,
      channel: this.#channel,
      onNotify: (payload) => onChange(/^\d{1,15}$/.test(payload) ? Number(payload) : undefined),
      onReconnect: () => onChange(undefined),
      onWarning: options.onWarning ?? (() => {}),
    });
    this.#listeners.add(listener);
    await listener.start();
    return async () => {
      this.#listeners.delete(listener);
      await listener.stop();
    };
  }

  /** Close the pool and stop every revocation watch. */
  async close(): Promise<void> {
    const listeners = [...this.#listeners];
    this.#listeners.clear();
    await Promise.all(listeners.map((l) => l.stop()));
    await this.#pool.end();
  }
}
