/**
 * The embedded store: one SQLite file through `node:sqlite`, in WAL mode (readers never block the
 * writer; `synchronous=NORMAL` makes a commit an append to the WAL without an fsync, durable at
 * the next checkpoint and always consistent), with a busy timeout so the CLI and a running server
 * can share the file (waited out with timers, not in SQLite's busy handler, by writes and by the
 * reads that meet a lock), versioned migrations, and `BEGIN IMMEDIATE` transactions for every
 * write that spans rows.
 *
 * `node:sqlite` is synchronous: inside one process each method runs to completion before another
 * starts, and across processes the write lock serializes transactions.
 *
 * @module
 */
import { chmodSync, existsSync } from 'node:fs';
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
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
} from '../rows.ts';
import { SUBTREE } from '../subtree.ts';
import { MIGRATIONS, type Migration } from './migrations.ts';

/** What one group commit of grants has read: client id → enabled, parent (or actor) grant id → its row. */
interface BatchReads {
  readonly clients: Map<string, boolean>;
  readonly parents: Map<string, Row>;
}

/** Options for {@link SqliteStore}. */
export interface SqliteStoreOptions extends PruneTuning {
  /** Database file (`:memory:` for a private in-memory database). */
  readonly path: string;
  /** How long a write (or a read) waits for another process's lock, milliseconds. */
  readonly busyTimeoutMs?: number;
  /**
   * Crash-test hook: the name of a failpoint at which the process SIGKILLs itself in the middle of
   * a transaction (`refresh.rotate`, `grants.revoke`). Defaults to `TESSERA_FAILPOINT`.
   */
  readonly failpoint?: string;
  /**
   * The migrations this store knows (default: this Tessera's, {@link MIGRATIONS}): a test stands
   * in for a newer Tessera with one more.
   */
  readonly migrations?: readonly Migration[];
}

const clientRow = (r: Row): ClientRecord => clientFrom(r, (v) => num(v ?? 0) !== 0);
/** A boolean column's value: 0 or 1. */
const sqliteFlag = (v: boolean): number => (v ? 1 : 0);

function isConstraintError(e: unknown): boolean {
  return e instanceof Error && /UNIQUE constraint|PRIMARY KEY/.test(e.message);
}

/**
 * `e`, or a {@link StoreUnavailableError} caused by it when another process (a CLI command,
 * another server) held the write lock past the busy timeout (SQLITE_BUSY, SQLITE_LOCKED).
 */
function busy(e: unknown, path: string): unknown {
  return isBusy(e)
    ? new StoreUnavailableError(
        'store_busy',
        `the SQLite store ${path} is locked by another process (a CLI command or another server); retry once it is done`,
        {
          cause: e,
        },
      )
    : e;
}

/**
 * `e` from opening the store at `path`: a {@link StoreOpenError} naming the file when SQLite
 * found it unusable (not a database, corrupt, cannot be opened, read-only), a lock held past the
 * busy timeout as {@link busy} reports it, else `e`.
 */
function unusable(e: unknown, path: string): unknown {
  if (!(e instanceof Error) || e instanceof StoreOpenError) return e;
  if (isBusy(e)) return busy(e, path);
  const code = (e as { errcode?: unknown }).errcode;
  const why: Record<number, string> = {
    // SQLITE_NOTADB, SQLITE_CORRUPT, SQLITE_CANTOPEN, SQLITE_READONLY, SQLITE_PERM, SQLITE_IOERR, SQLITE_FULL.
    26: 'is not a SQLite database; check store.sqlite.path, or restore the file from a backup',
    11: `is corrupt (${e.message}); restore it from a backup`,
    14: `cannot be opened (${e.message}): check that its directory exists and that this user may write it`,
    8: `cannot be written (${e.message}): check that this user may write the file, its directory and its -wal and -shm files`,
    3: `cannot be written (${e.message}): check that this user may write the file, its directory and its -wal and -shm files`,
    10: `cannot be read or written (${e.message}): check the disk`,
    13: `cannot be written (${e.message}): the disk is full`,
  };
  const reason = typeof code === 'number' ? why[code & 0xff] : undefined;
  return reason === undefined ? e : new StoreOpenError('store_unusable', `the SQLite store ${path} ${reason}`, { cause: e });
}

function isBusy(e: unknown): boolean {
  // The primary result code: extended codes (SQLITE_BUSY_SNAPSHOT, …) carry it in the low byte.
  const code = (e as { errcode?: unknown })?.errcode;
  return typeof code === 'number' && ((code & 0xff) === 5 || (code & 0xff) === 6);
}

/**
 * The SQLite implementation of {@link Store}.
 *
 * @example
 * ```ts
 * const store = SqliteStore.open({ path: '.tessera/tessera.db' });
 * await store.createClient(record);
 * ```
 */
export class SqliteStore implements Store {
  readonly kind = 'sqlite';
  readonly #db: DatabaseSync;
  /** The database file, named in errors an operator acts on. */
  readonly #path: string;
  readonly #statements = new Map<string, StatementSync>();
  readonly #failpoint: string | undefined;
  readonly #prune: { readonly batch: number; readonly budget: number };
  readonly #busyTimeoutMs: number;
  readonly #migrations: readonly Migration[];
  #grantQueue: {
    g: NewGrant;
    now: number;
    options: CreateGrantOptions;
    resolve: (r: GrantCreation) => void;
    reject: (e: unknown) => void;
  }[] = [];

  private constructor(
    db: DatabaseSync,
    path: string,
    failpoint: string | undefined,
    prune: PruneTuning,
    busyTimeoutMs: number,
    migrations: readonly Migration[],
  ) {
    this.#db = db;
    this.#migrations = migrations;
    this.#path = path;
    this.#busyTimeoutMs = busyTimeoutMs;
    this.#failpoint = failpoint;
    this.#prune = pruneTuning(prune);
  }

  /** Open (creating when absent) and migrate the database. */
  static open(options: SqliteStoreOptions): SqliteStore {
    const fresh = options.path !== ':memory:' && !existsSync(options.path);
    const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    let db: DatabaseSync | undefined;
    try {
      db = new DatabaseSync(options.path, { timeout: busyTimeoutMs, defensive: true });
      // The file holds sealed keys and secret hashes: owner-only, like the master key.
      if (fresh) chmodSync(options.path, 0o600);
      db.exec('PRAGMA journal_mode = WAL');
      db.exec('PRAGMA synchronous = NORMAL');
      db.exec('PRAGMA foreign_keys = OFF');
      const store = new SqliteStore(
        db,
        options.path,
        options.failpoint ?? process.env.TESSERA_FAILPOINT,
        options,
        busyTimeoutMs,
        options.migrations ?? MIGRATIONS,
      );
      store.#migrate();
      if (options.path !== ':memory:') store.#checkWritable();
      // From here on a write that finds the lock taken waits in #tx, off the event loop: SQLite's own
      // busy handler sleeps in the calling thread, which would stall every request of this process
      // (health checks and cached verifications included) while a CLI command or another server
      // holds the lock. Opening and migrating may block: nothing is served yet.
      db.exec('PRAGMA busy_timeout = 0');
      return store;
    } catch (e) {
      // Not left open (a caller trying again would pile up handles on the file).
      if (db?.isOpen) db.close();
      throw unusable(e, options.path);
    }
  }

  /** The schema version this database is at. */
  get schemaVersion(): number {
    const row = this.#db.prepare('SELECT max(version) AS v FROM schema_migrations').get() as Row | undefined;
    return num(row?.v ?? 0);
  }

  /**
   * Check the schema version and apply the migrations it lacks, all in one `BEGIN IMMEDIATE`
   * transaction (as PostgreSQL does under its advisory lock): the version is read under the write
   * lock, so a newer Tessera's migration committed while this process waited for the lock is seen
   * (and refused, `schema_newer`), not taken for one this process knows; and a migration that fails
   * rolls back every one of this start, the database staying at the version it was found at.
   */
  #migrate(): void {
    const latest = this.#migrations.at(-1)?.version ?? 0;
    this.#txNow(() => {
      this.#db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
      const current = this.schemaVersion;
      if (current > latest) {
        throw new StoreOpenError(
          'schema_newer',
          `the SQLite store ${this.#path}: the database schema is at version ${current}, newer than this Tessera knows (${latest}); upgrade Tessera`,
        );
      }
      for (const m of this.#migrations) {
        if (m.version <= current) continue;
        try {
          this.#db.exec(m.sql);
        } catch (e) {
          // Rolled back whole (#inTx): the database stays at the version it was found at.
          if (isBusy(e) || !(e instanceof Error)) throw e;
          throw new StoreOpenError(
            'migration_failed',
            `the SQLite store ${this.#path}: migration ${m.version} failed (the database stays at version ${current}): ${e.message}`,
            { cause: e },
          );
        }
        this.#db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)').run(m.version, Math.floor(Date.now() / 1000));
      }
    });
  }

  /**
   * A file this process may read but not write (its mode, an immutable file, a read-only mount)
   * opens read-only without a word, and every write would then fail (a 500 each): refused here
   * instead, by a write rolled back (SQLITE_READONLY, which {@link unusable} names).
   */
  #checkWritable(): void {
    this.#db.exec('BEGIN IMMEDIATE');
    try {
      this.#db.exec("UPDATE meta SET value = value WHERE name = 'keys_version'");
    } finally {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
    }
  }

  #stmt(sql: string): StatementSync {
    let s = this.#statements.get(sql);
    if (s === undefined) {
      s = this.#db.prepare(sql);
      this.#statements.set(sql, s);
    }
    return s;
  }

  /**
   * `fn` inside a `BEGIN IMMEDIATE` transaction. While another process holds the write lock, the
   * attempt is repeated after growing pauses (1 ms doubling to 50 ms, as SQLite's own busy handler
   * does) for up to the busy timeout, yielding to the event loop in between; then `store_busy`.
   */
  async #tx<T>(fn: () => T): Promise<T> {
    try {
      // BEGIN and the body in one synchronous step: a turn of the event loop between them would
      // let another call of this process start its transaction inside this one.
      return await this.#unlocked(() => {
        this.#db.exec('BEGIN IMMEDIATE');
        return this.#inTx(fn);
      });
    } catch (e) {
      throw busy(e, this.#path);
    }
  }

  /**
   * `attempt` (a `BEGIN IMMEDIATE`, or one write in autocommit, which fails whole) run again after
   * growing pauses while another process holds the write lock, up to the busy timeout. The error
   * of the last attempt is thrown as it is.
   */
  async #unlocked<T>(attempt: () => T): Promise<T> {
    const started = Date.now();
    for (let pause = 1; ; pause = Math.min(pause * 2, 50)) {
      try {
        return attempt();
      } catch (e) {
        const waited = Date.now() - started;
        if (!isBusy(e) || waited >= this.#busyTimeoutMs) throw e;
        await new Promise((resolve) => setTimeout(resolve, Math.min(pause, this.#busyTimeoutMs - waited)));
      }
    }
  }

  /**
   * `read` (statements in one synchronous run), run at once. Only when it meets a lock that blocks
   * readers is it run again as {@link #unlocked} runs a write, then `store_busy`. In WAL mode no
   * writer or checkpoint blocks a reader; what does, once the database is open, is another
   * connection recovering the WAL index (SQLITE_BUSY_RECOVERY, after a process died in the middle of
   * a commit), which SQLite's busy handler waited out before `busy_timeout` was set to 0.
   */
  #read<T>(read: () => T): T | Promise<T> {
    try {
      return read();
    } catch (e) {
      if (!isBusy(e)) throw e;
      return this.#unlocked(read).catch((last: unknown) => {
        throw busy(last, this.#path);
      });
    }
  }

  /** {@link #tx} waiting in SQLite's busy handler, for opening: nothing is served yet. */
  #txNow<T>(fn: () => T): T {
    try {
      this.#db.exec('BEGIN IMMEDIATE');
    } catch (e) {
      throw busy(e, this.#path);
    }
    return this.#inTx(fn);
  }

  /** `fn` inside the transaction just begun: committed, or rolled back when it throws. */
  #inTx<T>(fn: () => T): T {
    try {
      const result = fn();
      this.#db.exec('COMMIT');
      return result;
    } catch (e) {
      if (this.#db.isTransaction) this.#db.exec('ROLLBACK');
      throw e;
    }
  }

  /** Crash-consistency tests: die here, mid-transaction, when this failpoint is armed. */
  #fail(name: string): void {
    if (this.#failpoint === name) process.kill(process.pid, 'SIGKILL');
  }

  #bump(name: 'keys_version' | 'clients_version'): void {
    this.#stmt('UPDATE meta SET value = value + 1 WHERE name = ?').run(name);
  }

  // Clients.

  async createClient(c: ClientRecord, options: { readonly limit?: ClientLimit } = {}): Promise<void> {
    const { limit } = options;
    try {
      await this.#tx(() => {
        // Counted inside the write transaction: no other writer runs until it commits.
        if (limit !== undefined && this.#countIdPrefix(limit.idPrefix, limit.max) >= limit.max) {
          throw new StoreCapacityError('client_limit_reached', `${limit.max} clients with ids starting "${limit.idPrefix}" exist`);
        }
        this.#stmt(
          `INSERT INTO clients (id, auth_method, secret_method, secret_hash, jwks, jwks_uri, scopes, audiences, grant_types, access_token_ttl, exchange_retarget_audiences, redirect_uris, allowed_origins, name, disabled, created_at, updated_at, dpop_bound_access_tokens)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        ).run(...clientValues(c, sqliteFlag));
        this.#bump('clients_version');
      });
    } catch (e) {
      if (isConstraintError(e)) throw new StoreConflictError('client_exists', `a client with id "${c.id}" exists`);
      throw e;
    }
  }

  /**
   * Clients whose id starts with `prefix`, counting at most `max`: a range of the primary key
   * (ids compare as bytes), not a scan of the table.
   */
  #countIdPrefix(prefix: string, max: number): number {
    const end = prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
    const row = this.#stmt('SELECT count(*) AS n FROM (SELECT 1 FROM clients WHERE id >= ? AND id < ? LIMIT ?)').get(
      prefix,
      end,
      max,
    ) as Row;
    return num(row.n);
  }

  async getClient(id: string): Promise<ClientRecord | undefined> {
    return this.#read(() => {
      const r = this.#stmt('SELECT * FROM clients WHERE id = ?').get(id) as Row | undefined;
      return r ? clientRow(r) : undefined;
    });
  }

  async findClientIdIgnoringCase(id: string): Promise<string | undefined> {
    return this.#read(() => {
      const r = this.#stmt('SELECT id FROM clients WHERE id = ? COLLATE NOCASE LIMIT 1').get(id) as { id: string } | undefined;
      return r?.id;
    });
  }

  async listClients(): Promise<ClientRecord[]> {
    return this.#read(() => (this.#stmt('SELECT * FROM clients ORDER BY id').all() as Row[]).map(clientRow));
  }

  async updateClient(id: string, patch: ClientPatch, now: number): Promise<ClientRecord | undefined> {
    const columns = clientPatchColumns(sqliteFlag);
    const sets: string[] = ['updated_at = ?'];
    const values: SQLInputValue[] = [now];
    for (const [key, value] of Object.entries(patch) as [keyof ClientPatch, never][]) {
      if (value === undefined) continue;
      const [column, encode] = columns[key];
      sets.push(`${column} = ?`);
      values.push(encode(value));
    }
    return this.#tx(() => {
      const changed = this.#db.prepare(`UPDATE clients SET ${sets.join(', ')} WHERE id = ?`).run(...values, id);
      if (Number(changed.changes) === 0) return undefined;
      this.#bump('clients_version');
      return clientRow(this.#stmt('SELECT * FROM clients WHERE id = ?').get(id) as Row);
    });
  }

  async deleteClient(id: string): Promise<boolean> {
    return this.#tx(() => {
      const changed = Number(this.#stmt('DELETE FROM clients WHERE id = ?').run(id).changes) > 0;
      this.#stmt('DELETE FROM remembered_consents WHERE client_id = ?').run(id);
      if (changed) this.#bump('clients_version');
      return changed;
    });
  }

  // Signing keys.

  async listSigningKeys(): Promise<SigningKeyRecord[]> {
    return this.#read(() =>
      (this.#stmt('SELECT * FROM signing_keys ORDER BY activates_at, created_at, seq').all() as Row[]).map(signingKeyFrom),
    );
  }

  async addSigningKey(k: SigningKeyRecord, options: AddSigningKeyOptions = {}): Promise<boolean> {
    try {
      return await this.#tx(() => {
        // Under BEGIN IMMEDIATE: a rotation that sealed these keys first has changed their MAC.
        const current = this.#stmt('SELECT mac FROM signing_keys WHERE kid = ?');
        for (const s of options.seal ?? []) {
          if ((current.get(s.kid) as Row | undefined)?.mac !== s.from) {
            throw new StoreConflictError('signing_key_stale', `signing key ${s.kid} changed since it was read`);
          }
        }
        // Under BEGIN IMMEDIATE: another process's conditional add waits, then sees this key.
        if (
          options.unlessPendingAfter !== undefined &&
          this.#stmt('SELECT 1 FROM signing_keys WHERE activates_at > ? LIMIT 1').get(options.unlessPendingAfter) !== undefined
        ) {
          return false;
        }
        // Numbered from a counter, not MAX(seq) + 1: the newest key deleted, its number is not reused.
        this.#stmt("UPDATE meta SET value = value + 1 WHERE name = 'signing_keys_seq'").run();
        this.#stmt(
          `INSERT INTO signing_keys (kid, alg, public_jwk, sealed_private_key, created_at, activates_at, mac, retires_at, successor_kid, seq)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, (SELECT value FROM meta WHERE name = 'signing_keys_seq'))`,
        ).run(...signingKeyValues(k));
        const seal = this.#stmt('UPDATE signing_keys SET retires_at = ?, successor_kid = ?, mac = ? WHERE kid = ?');
        for (const s of options.seal ?? []) seal.run(s.retiresAt, s.successorKid, s.mac, s.kid);
        this.#bump('keys_version');
        return true;
      });
    } catch (e) {
      if (isConstraintError(e)) throw new StoreConflictError('signing_key_exists', `a signing key with kid "${k.kid}" exists`);
      throw e;
    }
  }

  async deleteSigningKey(kid: string): Promise<boolean> {
    return this.#tx(() => {
      this.#stmt(
        `INSERT OR IGNORE INTO removed_signing_keys (kid, alg, public_jwk, created_at, activates_at, mac, retires_at, successor_kid)
         SELECT kid, alg, public_jwk, created_at, activates_at, mac, retires_at, successor_kid FROM signing_keys WHERE kid = ?`,
      ).run(kid);
      const changed = Number(this.#stmt('DELETE FROM signing_keys WHERE kid = ?').run(kid).changes) > 0;
      if (changed) this.#bump('keys_version');
      return changed;
    });
  }

  async listRemovedSigningKeys(): Promise<RemovedSigningKeyRecord[]> {
    return this.#read(() =>
      (this.#stmt('SELECT * FROM removed_signing_keys ORDER BY activates_at, created_at').all() as Row[]).map(removedSigningKeyFrom),
    );
  }

  async upgradeSigningKeys(update: Parameters<Store['upgradeSigningKeys']>[0]): Promise<boolean> {
    return this.#tx(() => {
      const current = this.#stmt('SELECT sealed_private_key FROM signing_keys WHERE kid = ?');
      if (update.keys.some((k) => (current.get(k.kid) as Row | undefined)?.sealed_private_key !== k.from)) return false;
      const reseal = this.#stmt('UPDATE signing_keys SET sealed_private_key = ?, mac = ? WHERE kid = ?');
      for (const k of update.keys) reseal.run(k.sealedPrivateKey, k.mac, k.kid);
      const mac = this.#stmt('UPDATE removed_signing_keys SET mac = ? WHERE kid = ? AND mac IS NULL');
      for (const r of update.removed) mac.run(r.mac, r.kid);
      if (update.keys.length > 0) this.#bump('keys_version');
      return true;
    });
  }

  // Grants.

  /**
   * Grants are created with group commit: calls made in the same two turns of the event loop are
   * written in one transaction (each still checked against its parent inside it), which divides
   * the commit cost by the number of concurrent token exchanges. Nothing is answered before the
   * commit.
   *
   * Why two turns: a commit costs several grants' worth of CPU (its WAL frames, and the
   * checkpoints they bring), and under load the requests whose sockets became readable while one
   * turn's requests were handled reach this call in the next turn. Waiting for them took a batch
   * from 4.3 to 6.5 grants and CPU per token exchange down by about a sixth with 8 concurrent
   * clients (bench/README.md, "Grant commits and audit rows"); a lone exchange waits one more pass of an idle event loop.
   */
  createGrant(g: NewGrant, now: number, options: CreateGrantOptions = {}): Promise<GrantCreation> {
    return new Promise((resolve, reject) => {
      this.#grantQueue.push({ g, now, options, resolve, reject });
      if (this.#grantQueue.length === 1) setImmediate(this.#flushGrantsNextTurn);
    });
  }

  readonly #flushGrantsNextTurn = (): void => {
    setImmediate(() => void this.#flushGrants());
  };

  async #flushGrants(): Promise<void> {
    const batch = this.#grantQueue;
    this.#grantQueue = [];
    if (batch.length === 0) return;
    let results: (GrantCreation | Error)[];
    // Rows read once per transaction: nothing but this batch writes while it holds the write lock,
    // and its inserts change no client and no existing grant.
    const seen: BatchReads = { clients: new Map(), parents: new Map() };
    try {
      results = await this.#tx(() =>
        batch.map((item) => {
          try {
            return this.#insertGrant(item.g, item.now, seen, item.options);
          } catch (e) {
            // A failed statement is rolled back alone; the others in the batch stand.
            return isConstraintError(e) ? new StoreConflictError('grant_exists', `a grant with id "${item.g.id}" exists`) : (e as Error);
          }
        }),
      );
    } catch (e) {
      for (const item of batch) item.reject(e);
      return;
    }
    for (const [i, item] of batch.entries()) {
      const r = results[i];
      if (r instanceof Error) item.reject(r);
      else item.resolve(r as GrantCreation);
    }
  }

  /** Whether the log holds a revocation of `subject` at `issuer` dated `since` or later (by the revocations_subject index). */
  #subjectRevokedSince(subject: string, issuer: string, since: number): boolean {
    return (
      this.#stmt("SELECT 1 FROM revocations WHERE kind = 'subject' AND value = ? AND issuer = ? AND at >= ? LIMIT 1").get(
        subject,
        issuer,
        since,
      ) !== undefined
    );
  }

  /** A grant's row as a parent (or actor) reads it, remembered for the rest of the batch once found. */
  #grantRow(id: string, seen: BatchReads | undefined): Row | undefined {
    let row = seen?.parents.get(id);
    if (row === undefined) {
      row = this.#stmt('SELECT root_id, depth, issuer, expires_at, revoked_at FROM grants WHERE id = ?').get(id) as Row | undefined;
      // Only a found grant is remembered: a later grant of the batch may be the one inserted here.
      if (row !== undefined) seen?.parents.set(id, row);
    }
    return row;
  }

  #insertGrant(g: NewGrant, now: number, seen?: BatchReads, options: CreateGrantOptions = {}): GrantCreation {
    // Inside the write transaction: a disable or removal of the client commits before or after it.
    let active = seen?.clients.get(g.clientId);
    if (active === undefined) {
      const client = this.#stmt('SELECT disabled FROM clients WHERE id = ?').get(g.clientId) as Row | undefined;
      active = client !== undefined && Number(client.disabled) === 0;
      seen?.clients.set(g.clientId, active);
    }
    if (!active) return 'client_inactive';
    // Inside it too: a revocation of the subject or actor token commits its entry with the cascade
    // of the grants exchanged from it, so it committed before this or commits after this grant.
    if (g.subjectJti != null && this.#tokenEntry(g.subjectJti)) return 'subject_revoked';
    if (g.actorJti != null && this.#tokenEntry(g.actorJti)) return 'actor_inactive';
    // Inside it too: a revocation of the actor's grant (or of an ancestor, which revoked it with its
    // subtree) by another process committed before this; one that commits after finds this grant by
    // its actor_grant_id. The parent, when it is the same grant, is read below.
    const { actorGrantId } = options;
    if (actorGrantId !== undefined && actorGrantId !== g.parentId && !isActiveGrant(this.#grantRow(actorGrantId, seen), now)) {
      return 'actor_inactive';
    }
    let rootId = g.id;
    let depth = 0;
    let issuer = g.issuer;
    if (g.parentId !== null) {
      const parent = this.#grantRow(g.parentId, seen);
      if (!isActiveGrant(parent, now)) return 'parent_inactive';
      rootId = String(parent.root_id);
      depth = num(parent.depth) + 1;
      issuer = String(parent.issuer);
    } else if (options.subjectIssuedAt !== undefined) {
      // Inside the write transaction too: a subject revocation appends its entry in the one that
      // revokes the subject's grants, so it committed before this or commits after this grant.
      if (this.#subjectRevokedSince(g.subject, g.issuer, options.subjectIssuedAt)) return 'subject_revoked';
    }
    this.#stmt(
      `INSERT INTO grants (id, parent_id, root_id, depth, kind, issuer, subject, client_id, act, scopes, audiences, created_at, expires_at, subject_jti, actor_jti, actor_grant_id)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(...grantValues(g, issuer, rootId, depth, actorGrantId ?? null));
    return createdGrant(g, issuer, rootId, depth, actorGrantId ?? null);
  }

  async getGrant(id: string): Promise<GrantRecord | undefined> {
    return this.#read(() => {
      const r = this.#stmt('SELECT * FROM grants WHERE id = ?').get(id) as Row | undefined;
      return r ? grantFrom(r) : undefined;
    });
  }

  async grantSubtree(id: string, limit = MAX_TREE_READ): Promise<GrantRecord[]> {
    return this.#read(() => {
      // Level by level, each level in order and cut at what is left: the first `limit` grants in tree
      // order are read, never the rest of the tree. One synchronous run, so no write lands between levels.
      if (limit < 1) return [];
      const rows = this.#stmt('SELECT * FROM grants WHERE id = ?').all(id) as Row[];
      const children = this.#stmt(
        'SELECT * FROM grants WHERE parent_id IN (SELECT value FROM json_each(?)) ORDER BY created_at, id LIMIT ?',
      );
      let level = rows;
      while (level.length > 0 && rows.length < limit) {
        level = children.all(JSON.stringify(level.map((r) => String(r.id))), limit - rows.length) as Row[];
        // Not push(...level): a level can hold more grants than a call takes arguments.
        for (const r of level) rows.push(r);
      }
      return rows.map(grantFrom);
    });
  }

  async grantAncestors(id: string, limit = MAX_TREE_READ): Promise<GrantRecord[]> {
    const sql = `
      WITH RECURSIVE up(id, parent_id, n) AS (
        SELECT id, parent_id, 0 FROM grants WHERE id = ?
        UNION ALL
        SELECT g.id, g.parent_id, up.n + 1 FROM grants g JOIN up ON g.id = up.parent_id WHERE up.n < ?
      )
      SELECT g.* FROM grants g JOIN up USING (id) WHERE g.id <> ? ORDER BY g.depth`;
    return this.#read(() => (this.#stmt(sql).all(id, limit, id) as Row[]).map(grantFrom));
  }

  /** The cascade, inside a caller's transaction. */
  #revokeTree(seedSql: string, seedArgs: SQLInputValue[], at: number, reason: string, entryExpiresAt: number): RevokedGrant[] {
    const rows = this.#stmt(
      `${SUBTREE(seedSql)}
       UPDATE grants SET revoked_at = ?, revoked_reason = ?
       WHERE id IN (SELECT id FROM sub) AND revoked_at IS NULL
       RETURNING id, parent_id, kind, issuer, subject, client_id, expires_at`,
    ).all(...seedArgs, at, reason) as Row[];
    if (rows.length === 0) return [];
    this.#fail('grants.revoke');
    const forget = this.#stmt('DELETE FROM remembered_consents WHERE subject = ? AND client_id = ?');
    for (const r of rows) if (r.parent_id === null && r.kind === 'authorization_code') forget.run(String(r.subject), String(r.client_id));
    const markTokens = this.#stmt('UPDATE refresh_tokens SET revoked_at = ? WHERE grant_id = ? AND revoked_at IS NULL');
    const log = this.#stmt("INSERT INTO revocations (kind, value, issuer, at, expires_at) VALUES ('grant', ?, NULL, ?, ?)");
    const revoked: RevokedGrant[] = [];
    for (const r of rows) {
      const id = String(r.id);
      markTokens.run(at, id);
      const exp = r.expires_at === null ? entryExpiresAt : Math.min(num(r.expires_at) + REVOCATION_ENTRY_SKEW, entryExpiresAt);
      log.run(id, at, exp);
      revoked.push({ id, issuer: String(r.issuer), subject: String(r.subject), clientId: String(r.client_id) });
    }
    return revoked;
  }

  async revokeGrants(selector: GrantSelector, options: RevokeOptions): Promise<RevokedGrant[]> {
    let seed: string;
    let args: SQLInputValue[];
    if ('grantId' in selector) {
      seed = 'SELECT id FROM grants WHERE id = ?';
      args = [selector.grantId];
    } else if ('subject' in selector) {
      seed =
        selector.issuer === undefined
          ? 'SELECT id FROM grants WHERE subject = ? AND revoked_at IS NULL'
          : 'SELECT id FROM grants WHERE subject = ? AND issuer = ? AND revoked_at IS NULL';
      args = selector.issuer === undefined ? [selector.subject] : [selector.subject, selector.issuer];
    } else if ('clientId' in selector) {
      seed = 'SELECT id FROM grants WHERE client_id = ? AND revoked_at IS NULL';
      args = [selector.clientId];
    } else {
      // Two index lookups (the token's grant's children by grants_parent; grants_actor_jti), not one
      // scan for an OR.
      seed =
        'SELECT id FROM (SELECT id FROM grants WHERE parent_id = ? AND subject_jti = ? AND revoked_at IS NULL UNION SELECT id FROM grants WHERE actor_jti = ? AND revoked_at IS NULL)';
      args = [selector.tokenGrantId, selector.exchangedFrom, selector.exchangedFrom];
    }
    return this.#tx(() => {
      // Codes approved and not yet redeemed are approvals from before this revocation: redeemed
      // after it, one would begin a new tree for the revoked subject or client. A redeemed code
      // stays, for its replay detection.
      if ('subject' in selector) {
        if (selector.issuer === undefined) {
          this.#stmt('DELETE FROM remembered_consents WHERE subject = ?').run(selector.subject);
          this.#stmt('DELETE FROM authorization_codes WHERE subject = ? AND consumed_at IS NULL').run(selector.subject);
        } else {
          this.#stmt('DELETE FROM remembered_consents WHERE subject = ? AND issuer = ?').run(selector.subject, selector.issuer);
          this.#stmt('DELETE FROM authorization_codes WHERE subject = ? AND issuer = ? AND consumed_at IS NULL').run(
            selector.subject,
            selector.issuer,
          );
        }
      } else if ('clientId' in selector) {
        this.#stmt('DELETE FROM remembered_consents WHERE client_id = ?').run(selector.clientId);
        this.#stmt('DELETE FROM authorization_codes WHERE client_id = ? AND consumed_at IS NULL').run(selector.clientId);
      }
      const revoked = this.#revokeTree(seed, args, options.at, options.reason, options.entryExpiresAt);
      // Not inside `alsoLogged?.(…)`: an optional call evaluates no argument when there is no callee.
      const appended = this.#appendLog(options.alsoLog?.(revoked) ?? []);
      options.alsoLogged?.(appended);
      return revoked;
    });
  }

  // Refresh tokens.

  async createRefreshToken(t: RefreshTokenRecord): Promise<void> {
    try {
      // Under a grant revoked since it was created (token exchange issues the token after the grant
      // commits), the token is stored revoked with it: the cascade that revoked the grant is over.
      await this.#unlocked(() =>
        this.#stmt(
          `INSERT INTO refresh_tokens (hash, grant_id, client_id, created_at, expires_at, rotated_at, revoked_at, jkt)
           VALUES (?, ?, ?, ?, ?, ?, coalesce(?, (SELECT revoked_at FROM grants WHERE id = ?)), ?)`,
        ).run(t.hash, t.grantId, t.clientId, t.createdAt, t.expiresAt, t.rotatedAt, t.revokedAt, t.grantId, t.jkt ?? null),
      );
    } catch (e) {
      if (isConstraintError(e)) throw new StoreConflictError('refresh_token_exists', 'a refresh token with this hash exists');
      throw busy(e, this.#path);
    }
  }

  async getRefreshToken(hash: string): Promise<RefreshTokenRecord | undefined> {
    return this.#read(() => {
      const r = this.#stmt('SELECT * FROM refresh_tokens WHERE hash = ?').get(hash) as Row | undefined;
      return r ? refreshFrom(r) : undefined;
    });
  }

  async rotateRefreshToken(hash: string, o: RefreshRotationOptions): Promise<RefreshRotation> {
    return this.#tx((): RefreshRotation => {
      const row = this.#stmt('SELECT * FROM refresh_tokens WHERE hash = ?').get(hash) as Row | undefined;
      if (!row) return { status: 'invalid' };
      const token = refreshFrom(row);
      if (token.clientId !== o.clientId || token.revokedAt !== null) return { status: 'invalid' };
      if (token.rotatedAt !== null) {
        const retried = this.#retry(token, row.successor_hash, o);
        if (retried !== undefined) return retried;
        if (o.graceSeconds > 0 && o.now - token.rotatedAt < o.graceSeconds) return { status: 'grace' };
        const revoked = this.#revokeTree('SELECT ?', [token.grantId], o.now, 'refresh_token_reused', o.entryExpiresAt);
        return { status: 'reused', grantId: token.grantId, revokedGrantIds: revoked.map((g) => g.id) };
      }
      if (token.expiresAt <= o.now) return { status: 'invalid' };
      const g = this.#stmt('SELECT * FROM grants WHERE id = ?').get(token.grantId) as Row | undefined;
      if (!g) return { status: 'invalid' };
      const grant = grantFrom(g);
      if (grant.revokedAt !== null || (grant.expiresAt !== null && grant.expiresAt <= o.now)) return { status: 'invalid' };
      this.#stmt('UPDATE refresh_tokens SET rotated_at = ?, expires_at = ?, successor_hash = ? WHERE hash = ?').run(
        o.now,
        spentKeptUntil(grant, o),
        o.nextHash,
        hash,
      );
      this.#fail('refresh.rotate');
      const next = rotatedSuccessor(token, grant, o);
      this.#stmt(
        'INSERT INTO refresh_tokens (hash, grant_id, client_id, created_at, expires_at, rotated_at, revoked_at, jkt) VALUES (?, ?, ?, ?, ?, NULL, NULL, ?)',
      ).run(next.hash, next.grantId, next.clientId, next.createdAt, next.expiresAt, next.jkt ?? null);
      return { status: 'rotated', grant, next };
    });
  }

  /**
   * Inside {@link rotateRefreshToken}'s transaction, for `token`, rotated already to
   * `successorHash`: when it is a retry within the reuse interval ({@link isRetry}), the successor
   * retired (rotated, no successor: presenting it is a reuse), the new one inserted and made
   * `token`'s successor; undefined otherwise, nothing written.
   */
  #retry(token: RefreshTokenRecord, successorHash: unknown, o: RefreshRotationOptions): RefreshRotation | undefined {
    if ((o.reuseIntervalSeconds ?? 0) <= 0 || typeof successorHash !== 'string') return undefined;
    const s = this.#stmt('SELECT * FROM refresh_tokens WHERE hash = ?').get(successorHash) as Row | undefined;
    const g = this.#stmt('SELECT * FROM grants WHERE id = ?').get(token.grantId) as Row | undefined;
    const successor = s ? refreshFrom(s) : undefined;
    const grant = g ? grantFrom(g) : undefined;
    if (grant === undefined || !isRetry(token, successor, grant, o)) return undefined;
    this.#stmt('UPDATE refresh_tokens SET rotated_at = ?, expires_at = ?, successor_hash = NULL WHERE hash = ?').run(
      o.now,
      Math.max(successor.expiresAt, spentKeptUntil(grant, o)),
      successor.hash,
    );
    this.#stmt('UPDATE refresh_tokens SET successor_hash = ? WHERE hash = ?').run(o.nextHash, token.hash);
    const next = rotatedSuccessor(token, grant, o);
    this.#stmt(
      'INSERT INTO refresh_tokens (hash, grant_id, client_id, created_at, expires_at, rotated_at, revoked_at, jkt) VALUES (?, ?, ?, ?, ?, NULL, NULL, ?)',
    ).run(next.hash, next.grantId, next.clientId, next.createdAt, next.expiresAt, next.jkt ?? null);
    return { status: 'rotated', grant, next, retry: true };
  }

  // Authorization codes.

  async createAuthorizationCode(c: AuthorizationCodeRecord): Promise<void> {
    try {
      await this.#unlocked(() =>
        this.#stmt(
          `INSERT INTO authorization_codes (hash, client_id, redirect_uri, code_challenge, subject, issuer, scopes, audiences, created_at, expires_at, consumed_at, grant_id, jkt, approval_since)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        ).run(...codeValues(c)),
      );
    } catch (e) {
      if (isConstraintError(e)) throw new StoreConflictError('authorization_code_exists', 'an authorization code with this hash exists');
      throw busy(e, this.#path);
    }
  }

  async getAuthorizationCode(hash: string): Promise<AuthorizationCodeRecord | undefined> {
    return this.#read(() => {
      const r = this.#stmt('SELECT * FROM authorization_codes WHERE hash = ?').get(hash) as Row | undefined;
      return r ? codeFrom(r) : undefined;
    });
  }

  async redeemAuthorizationCode(hash: string, o: CodeRedemptionOptions): Promise<CodeRedemption> {
    return this.#tx((): CodeRedemption => {
      const row = this.#stmt('SELECT * FROM authorization_codes WHERE hash = ?').get(hash) as Row | undefined;
      if (!row) return { status: 'invalid' };
      const code = codeFrom(row);
      if (code.clientId !== o.clientId) return { status: 'invalid' };
      if (code.consumedAt !== null) {
        const revoked =
          code.grantId === null ? [] : this.#revokeTree('SELECT ?', [code.grantId], o.now, 'authorization_code_reused', o.entryExpiresAt);
        return { status: 'reused', grantId: code.grantId, revokedGrantIds: revoked.map((g) => g.id) };
      }
      if (code.expiresAt <= o.now) return { status: 'invalid' };
      // Inside the write transaction, as a root grant from another issuer's token: a subject
      // revocation appends its entry in the one that deletes the subject's codes, so it committed
      // before this (and the code was approved after it, by an instance that had not read it) or
      // commits after this grant, which it then revokes.
      if (this.#subjectRevokedSince(code.subject, o.loginScope, code.approvalSince ?? code.createdAt)) return { status: 'subject_revoked' };
      const grant = this.#insertGrant({ ...o.grant, parentId: null }, o.now);
      if (typeof grant === 'string') return { status: 'client_inactive' };
      this.#stmt('UPDATE authorization_codes SET consumed_at = ?, grant_id = ? WHERE hash = ?').run(o.now, grant.id, hash);
      const t = o.refreshToken;
      if (t !== null) {
        this.#stmt(
          'INSERT INTO refresh_tokens (hash, grant_id, client_id, created_at, expires_at, rotated_at, revoked_at, jkt) VALUES (?, ?, ?, ?, ?, NULL, NULL, ?)',
        ).run(t.hash, grant.id, t.clientId, t.createdAt, t.expiresAt, t.jkt ?? null);
      }
      return { status: 'redeemed', grant };
    });
  }

  // Remembered consents.

  async rememberConsent(c: RememberedConsentRecord): Promise<void> {
    try {
      await this.#unlocked(() =>
        this.#stmt(
          `INSERT INTO remembered_consents (subject, client_id, issuer, identity_source, scopes, scopes_digest, audiences, redirect_uri, client_fingerprint, approval_hash, created_at, expires_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (subject, client_id) DO UPDATE SET issuer = excluded.issuer, identity_source = excluded.identity_source,
           scopes = excluded.scopes, scopes_digest = excluded.scopes_digest, audiences = excluded.audiences,
           redirect_uri = excluded.redirect_uri, client_fingerprint = excluded.client_fingerprint, approval_hash = excluded.approval_hash,
           created_at = excluded.created_at, expires_at = excluded.expires_at`,
        ).run(...consentValues(c)),
      );
    } catch (e) {
      throw busy(e, this.#path);
    }
  }

  async getRememberedConsent(subject: string, clientId: string, now: number): Promise<RememberedConsentRecord | undefined> {
    return this.#read(() => {
      const r = this.#stmt('SELECT * FROM remembered_consents WHERE subject = ? AND client_id = ? AND expires_at > ?').get(
        subject,
        clientId,
        now,
      ) as Row | undefined;
      return r ? consentFrom(r) : undefined;
    });
  }

  // Revocation log.

  async appendRevocations(entries: readonly Omit<RevocationEntry, 'seq'>[]): Promise<number> {
    if (entries.length === 0) return 0;
    return this.#tx(() => this.#appendLog(entries));
  }

  /**
   * Append to the revocation log, inside a caller's transaction. A `token` entry (an access
   * token's `jti`, a login session's sign-out) already in the log is skipped: looked up first,
   * under the write lock every process takes, so a skipped one numbers nothing (AUTOINCREMENT
   * would spend a number on it); for a sign-out the unique index (migration 21) holds it to one
   * entry whoever writes.
   * @returns how many entries were appended (the rows the inserts changed): of revocations of one
   *   token or sign-outs of one session racing, in any process, only the one whose transaction
   *   commits first appends it.
   */
  #appendLog(entries: readonly Omit<RevocationEntry, 'seq'>[]): number {
    if (entries.length === 0) return 0;
    const insert = this.#stmt(
      `INSERT INTO revocations (kind, value, issuer, at, expires_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (value, issuer) WHERE kind = 'token' AND issuer IS NOT NULL DO NOTHING`,
    );
    // `IS`: an access token's entry has no issuer (NULL), and `= NULL` is never true.
    const logged = this.#stmt("SELECT 1 FROM revocations WHERE kind = 'token' AND value = ? AND issuer IS ?");
    let appended = 0;
    for (const e of entries) {
      if (e.kind === 'token' && logged.get(e.value, e.issuer) !== undefined) continue;
      appended += Number(insert.run(e.kind, e.value, e.issuer, e.at, e.expiresAt).changes);
    }
    return appended;
  }

  async tokenRevoked(jti: string): Promise<boolean> {
    return this.#read(() => this.#tokenEntry(jti));
  }

  /** Whether the log holds a `token` entry for `jti` (by the revocations_token index). */
  #tokenEntry(jti: string): boolean {
    return this.#stmt("SELECT 1 FROM revocations WHERE kind = 'token' AND value = ? LIMIT 1").get(jti) !== undefined;
  }

  async revocationsSince(afterSeq: number, now: number, limit = REVOCATIONS_PAGE): Promise<RevocationEntry[]> {
    return this.#read(() => {
      const rows = this.#stmt('SELECT * FROM revocations WHERE seq > ? AND expires_at > ? ORDER BY seq LIMIT ?').all(
        afterSeq,
        now,
        limit,
      ) as Row[];
      return rows.map(revocationEntryFrom);
    });
  }

  // Replay cache.

  async useOnce(key: string, expiresAt: number, now: number): Promise<boolean> {
    let result: { changes: number | bigint };
    try {
      result = await this.#unlocked(() =>
        this.#stmt(
          `INSERT INTO replay (key, expires_at) VALUES (?, ?)
           ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at WHERE replay.expires_at <= ?`,
        ).run(key, expiresAt, now),
      );
    } catch (e) {
      throw busy(e, this.#path);
    }
    return Number(result.changes) === 1;
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
    try {
      return await this.#tx(() => {
        const current = this.#stmt('SELECT owner, expires_at FROM a2a_tasks WHERE key = ?');
        if (limit !== undefined) {
          const row = current.get(key) as Row | undefined;
          if (row === undefined || num(row.expires_at) <= now) {
            // A new record of `owner`: counted by a range of a2a_tasks_owner, at most `limit` entries read.
            const counted = this.#stmt(
              'SELECT count(*) AS n FROM (SELECT 1 FROM a2a_tasks WHERE route = ? AND owner = ? AND expires_at > ? LIMIT ?)',
            ).get(route, owner, now, limit) as Row;
            if (num(counted.n) >= limit) return 'full';
          }
        }
        const claimed = this.#stmt(
          `INSERT INTO a2a_tasks (key, route, owner, expires_at) VALUES (?, ?, ?, ?)
           ON CONFLICT (key) DO UPDATE SET
             route = excluded.route,
             owner = excluded.owner,
             expires_at = CASE WHEN a2a_tasks.expires_at <= ? THEN excluded.expires_at ELSE max(a2a_tasks.expires_at, excluded.expires_at) END
           WHERE a2a_tasks.owner = excluded.owner OR a2a_tasks.expires_at <= ?
           RETURNING owner, expires_at`,
        ).get(key, route, owner, expiresAt, now, now) as Row | undefined;
        if (claimed !== undefined) return a2aTaskFrom(claimed);
        // Another owner's live record, left as it is.
        return a2aTaskFrom(current.get(key) as Row);
      });
    } catch (e) {
      throw busy(e, this.#path);
    }
  }

  async releaseA2aTask(route: string, kind: A2aIdKind, id: string, owner: string): Promise<boolean> {
    let result: { changes: number | bigint };
    try {
      result = await this.#unlocked(() =>
        this.#stmt('DELETE FROM a2a_tasks WHERE key = ? AND owner = ?').run(a2aTaskKey(route, kind, id), owner),
      );
    } catch (e) {
      throw busy(e, this.#path);
    }
    return Number(result.changes) === 1;
  }

  async a2aTaskOwner(route: string, kind: A2aIdKind, id: string, now: number): Promise<A2aTaskRecord | undefined> {
    return this.#read(() => {
      const row = this.#stmt('SELECT owner, expires_at FROM a2a_tasks WHERE key = ? AND expires_at > ?').get(
        a2aTaskKey(route, kind, id),
        now,
      ) as Row | undefined;
      return row === undefined ? undefined : a2aTaskFrom(row);
    });
  }

  // Audit.

  async appendAudit(events: readonly AuditEvent[]): Promise<void> {
    if (events.length === 0) return;
    await this.#tx(() => {
      const insert = this.#stmt(
        `INSERT INTO audit_events (id, time, kind, subject, client_id, delegation_id, request_id, jti, token_hash, event)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
      );
      for (const e of events) {
        insert.run(...auditValues(e));
      }
    });
  }

  async queryAudit(q: AuditQuery): Promise<AuditEvent[]> {
    const where: string[] = [];
    const args: SQLInputValue[] = [];
    const add = (clause: string, value: SQLInputValue | undefined) => {
      if (value === undefined) return;
      where.push(clause);
      args.push(value);
    };
    add('subject = ?', auditLookup(q.subject));
    add('delegation_id = ?', auditLookup(q.delegation_id));
    add('client_id = ?', auditLookup(q.client_id));
    add('request_id = ?', auditLookup(q.request_id));
    add('jti = ?', auditLookup(q.jti));
    add('token_hash = ?', auditLookup(q.token_hash));
    if (q.kinds !== undefined) {
      where.push(q.kinds.length === 0 ? 'false' : `kind IN (${q.kinds.map(() => '?').join(', ')})`);
      args.push(...q.kinds);
    }
    if (q.since !== undefined) {
      // UUIDv7 ids start with the time in hex: the bound lets the id index do the work.
      add('id >= ?', idFloor(q.since));
      add('time >= ?', q.since);
    }
    // No id bound for `until`: an id's time is never before its event's, but can be after it
    // (uuidv7 keeps ids increasing, so an exchange finishing after a later one gets a later id).
    add('time <= ?', q.until);
    add('id > ?', q.after_id);
    const sql = `SELECT * FROM audit_events ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id LIMIT ?`;
    const limit = auditQueryLimit(q);
    return this.#read(() => (this.#db.prepare(sql).all(...args, limit) as Row[]).map(auditEventFrom));
  }

  async pruneAudit(before: number, limit: number): Promise<number> {
    // The oldest first, through the unique index on id; each batch its own short transaction.
    const sql = 'DELETE FROM audit_events WHERE seq IN (SELECT seq FROM audit_events WHERE id < ? ORDER BY id LIMIT ?)';
    return this.#tx(() => Number(this.#stmt(sql).run(idFloor(before), Math.max(1, Math.floor(limit))).changes));
  }

  async versions(): Promise<StoreVersions> {
    const row = await this.#read(
      () =>
        this.#stmt(
          `SELECT (SELECT value FROM meta WHERE name = 'keys_version') AS keys,
              (SELECT value FROM meta WHERE name = 'clients_version') AS clients,
              (SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'revocations') AS revocations`,
        ).get() as Row,
    );
    return { keys: num(row.keys), clients: num(row.clients), revocations: num(row.revocations ?? 0) };
  }

  /**
   * In batches of `pruneBatchSize` rows, each its own `BEGIN IMMEDIATE` transaction, with a turn of
   * the event loop between them: the write lock is held for one batch at a time, so this process's
   * requests and other processes' writes get in between, and a call stops after `pruneBudgetMillis`
   * (the next goes on). Tables are emptied one after the other: refresh tokens before the grants
   * they belong to; a grant only once no grant names it as parent.
   */
  async prune(now: number, options: { readonly grantsExpiredBefore?: number } = {}): Promise<boolean> {
    // By primary key: every table here but revocations is WITHOUT ROWID.
    const step = (table: string, key: string, where: string, arg: number, untilEmpty = false): PruneStep => {
      const sql = `DELETE FROM ${table} WHERE (${key}) IN (SELECT ${key} FROM ${table} t WHERE ${where} LIMIT ?)`;
      return { batch: (limit) => this.#tx(() => Number(this.#stmt(sql).run(arg, limit).changes)), untilEmpty };
    };
    const steps = [
      // A spent (rotated) token is kept while its family has a token not yet due: reuse detection.
      step(
        'refresh_tokens',
        'hash',
        't.expires_at <= ?1 AND (t.rotated_at IS NULL OR NOT EXISTS (SELECT 1 FROM refresh_tokens f WHERE f.grant_id = t.grant_id AND f.expires_at > ?1))',
        now,
      ),
      step('replay', 'key', 't.expires_at <= ?', now),
      step('revocations', 'seq', 't.expires_at <= ?', now),
      step('authorization_codes', 'hash', 't.expires_at <= ?', now - CODE_RETENTION),
      step('remembered_consents', 'subject, client_id', 't.expires_at <= ?', now),
      step('a2a_tasks', 'key', 't.expires_at <= ?', now),
    ];
    if (options.grantsExpiredBefore !== undefined) {
      // Leaves first: a child never outlives its parent, so every expired grant's children are
      // expired too and go first; a grant still stored never lacks its parent, between batches too.
      steps.push(
        step(
          'grants',
          'id',
          't.expires_at IS NOT NULL AND t.expires_at < ? AND NOT EXISTS (SELECT 1 FROM grants c WHERE c.parent_id = t.id)',
          options.grantsExpiredBefore,
          true,
        ),
      );
    }
    return pruneInBatches(steps, this.#prune, () => new Promise((resolve) => setImmediate(resolve)));
  }

  async close(): Promise<void> {
    if (this.#db.isOpen) this.#db.close();
  }
}
