/**
 * Versioned schema migrations for the SQLite store. Append only: a released migration is never
 * edited; a change is a new entry. Those a start applies run in one transaction with the version
 * check (under the write lock) and their version rows.
 */

export interface Migration {
  readonly version: number;
  readonly description: string;
  readonly sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'clients, signing keys, grants, refresh tokens, revocation log, replay cache, audit events',
    sql: `
      CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
      INSERT INTO meta (name, value) VALUES ('keys_version', 0), ('clients_version', 0);

      CREATE TABLE clients (
        id TEXT PRIMARY KEY,
        auth_method TEXT NOT NULL,
        secret_hash TEXT,
        jwks TEXT,
        jwks_uri TEXT,
        scopes TEXT NOT NULL,
        audiences TEXT NOT NULL,
        grant_types TEXT NOT NULL,
        access_token_ttl INTEGER,
        disabled INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
      ) WITHOUT ROWID;

      CREATE TABLE signing_keys (
        kid TEXT PRIMARY KEY,
        alg TEXT NOT NULL,
        public_jwk TEXT NOT NULL,
        sealed_private_key TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        activates_at INTEGER NOT NULL
      ) WITHOUT ROWID;

      CREATE TABLE grants (
        id TEXT PRIMARY KEY,
        parent_id TEXT,
        root_id TEXT NOT NULL,
        depth INTEGER NOT NULL,
        kind TEXT NOT NULL,
        issuer TEXT NOT NULL,
        subject TEXT NOT NULL,
        client_id TEXT NOT NULL,
        act TEXT,
        scopes TEXT NOT NULL,
        audiences TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        revoked_at INTEGER,
        revoked_reason TEXT
      ) WITHOUT ROWID;
      CREATE INDEX grants_parent ON grants (parent_id);
      CREATE INDEX grants_subject ON grants (subject);
      CREATE INDEX grants_client ON grants (client_id);
      CREATE INDEX grants_expires ON grants (expires_at);

      CREATE TABLE refresh_tokens (
        hash TEXT PRIMARY KEY,
        grant_id TEXT NOT NULL,
        client_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        rotated_at INTEGER,
        revoked_at INTEGER
      ) WITHOUT ROWID;
      CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);
      CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);

      CREATE TABLE revocations (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        issuer TEXT,
        at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
      );
      CREATE INDEX revocations_expires ON revocations (expires_at);

      CREATE TABLE replay (key TEXT PRIMARY KEY, expires_at INTEGER NOT NULL) WITHOUT ROWID;
      CREATE INDEX replay_expires ON replay (expires_at);

      -- A rowid table: events are appended in id (UUIDv7, time) order; rows are too large for WITHOUT ROWID.
      -- No index on time: ids are time-ordered, so a time bound is an id bound.
      CREATE TABLE audit_events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        time INTEGER NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT,
        client_id TEXT,
        delegation_id TEXT,
        request_id TEXT,
        event TEXT NOT NULL
      );
      CREATE INDEX audit_subject ON audit_events (subject);
      CREATE INDEX audit_client ON audit_events (client_id);
      CREATE INDEX audit_delegation ON audit_events (delegation_id);
      CREATE INDEX audit_request ON audit_events (request_id);
    `,
  },
  {
    version: 2,
    description: 'clients.exchange_retarget_audiences: token exchange may leave the subject token audience',
    sql: 'ALTER TABLE clients ADD COLUMN exchange_retarget_audiences INTEGER NOT NULL DEFAULT 0;',
  },
  {
    version: 3,
    description:
      'client-credentials standing grants expire: open-ended ones end once their last token can have (max_access_token_ttl ≤ 1 day)',
    sql: `UPDATE grants SET expires_at = CAST(strftime('%s', 'now') AS INTEGER) + 86460
          WHERE kind = 'client_credentials' AND expires_at IS NULL;`,
  },
  {
    version: 4,
    description: 'audit_events.jti and token_hash, indexed: `tessera trace` finds a token by either (filled in for existing events)',
    sql: `
      ALTER TABLE audit_events ADD COLUMN jti TEXT;
      ALTER TABLE audit_events ADD COLUMN token_hash TEXT;
      UPDATE audit_events SET jti = json_extract(event, '$.jti'), token_hash = json_extract(event, '$.token_hash')
        WHERE json_extract(event, '$.jti') IS NOT NULL OR json_extract(event, '$.token_hash') IS NOT NULL;
      CREATE INDEX audit_jti ON audit_events (jti);
      CREATE INDEX audit_token_hash ON audit_events (token_hash);
    `,
  },
  {
    version: 5,
    description: 'authorization code grant: clients.redirect_uris and clients.name, authorization_codes (stored by hash)',
    sql: `
      ALTER TABLE clients ADD COLUMN redirect_uris TEXT NOT NULL DEFAULT '[]';
      ALTER TABLE clients ADD COLUMN name TEXT;
      CREATE TABLE authorization_codes (
        hash TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        redirect_uri TEXT,
        code_challenge TEXT NOT NULL,
        subject TEXT NOT NULL,
        issuer TEXT NOT NULL,
        scopes TEXT NOT NULL,
        audiences TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        consumed_at INTEGER,
        grant_id TEXT
      ) WITHOUT ROWID;
      CREATE INDEX authorization_codes_expires ON authorization_codes (expires_at);
    `,
  },
  {
    version: 6,
    description: 'refresh_tokens.jkt: a public client’s refresh token bound to its DPoP key (RFC 9449 §5)',
    sql: 'ALTER TABLE refresh_tokens ADD COLUMN jkt TEXT;',
  },
  {
    version: 7,
    description: 'removed_signing_keys: a deleted key keeps its public part (no private key), so `tessera scan` recognises its tokens',
    sql: `
      CREATE TABLE removed_signing_keys (
        kid TEXT PRIMARY KEY,
        alg TEXT NOT NULL,
        public_jwk TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        activates_at INTEGER NOT NULL
      ) WITHOUT ROWID;
    `,
  },
  {
    version: 8,
    description:
      'audit_events.event holds only the fields without a column of their own (id, time, kind and the indexed ids are read from their columns); no data changes, but an older Tessera, which reads the whole event from that column, must refuse the database',
    sql: 'SELECT 1;',
  },
  {
    version: 9,
    description:
      'remembered_consents: a person’s approval of a client kept for `authorization.remember_consent`, one per (subject, client)',
    sql: `
      CREATE TABLE remembered_consents (
        subject TEXT NOT NULL,
        client_id TEXT NOT NULL,
        issuer TEXT NOT NULL,
        identity_source TEXT NOT NULL,
        scopes TEXT NOT NULL,
        scopes_digest TEXT NOT NULL,
        audiences TEXT NOT NULL,
        redirect_uri TEXT NOT NULL,
        client_fingerprint TEXT NOT NULL,
        approval_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (subject, client_id)
      ) WITHOUT ROWID;
      CREATE INDEX remembered_consents_client ON remembered_consents (client_id);
      CREATE INDEX remembered_consents_expires ON remembered_consents (expires_at);
    `,
  },
  {
    version: 10,
    description:
      'clients_id_nocase: the case-insensitive client lookup that refuses a person’s subject passing for a client (token exchange, authorize) reads an index instead of every client (dynamic registration can make many); authorization_codes.jkt: a code bound to a DPoP key by the request’s dpop_jkt (RFC 9449 §10)',
    sql: `
      CREATE INDEX clients_id_nocase ON clients (id COLLATE NOCASE);
      ALTER TABLE authorization_codes ADD COLUMN jkt TEXT;
    `,
  },
  {
    version: 11,
    description:
      'revocations_subject: a root grant from another issuer’s token is refused inside its insert when its subject was revoked after the token was issued, a lookup of the subject entries by subject and issuer',
    sql: "CREATE INDEX revocations_subject ON revocations (value, issuer, at) WHERE kind = 'subject';",
  },
  {
    version: 12,
    description:
      'a2a_tasks: which principal each A2A task and context of a gateway route belongs to (`a2a.bind_tasks`), shared by every instance on the store and kept across restarts; keyed by a digest of route, kind and id',
    sql: `
      CREATE TABLE a2a_tasks (
        key TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_at INTEGER NOT NULL
      ) WITHOUT ROWID;
      CREATE INDEX a2a_tasks_expires ON a2a_tasks (expires_at);
    `,
  },
  {
    version: 13,
    description:
      'a2a_tasks.route, indexed with owner and expiry: the live records of one principal on one route are counted (`a2a.max_tasks_per_principal`) by a range of the index; records made before have no route and are not counted until renewed',
    sql: `
      ALTER TABLE a2a_tasks ADD COLUMN route TEXT NOT NULL DEFAULT '';
      CREATE INDEX a2a_tasks_owner ON a2a_tasks (route, owner, expires_at);
    `,
  },
  {
    version: 14,
    description:
      'revocations_token: introspection looks up a token’s `jti` in the revocation log, so a token revoked by another process (the CLI, another instance) is inactive before this one syncs',
    sql: "CREATE INDEX revocations_token ON revocations (value) WHERE kind = 'token';",
  },
  {
    version: 15,
    description:
      'authorization_codes.approval_since: since when the approval of a code stood (the login session’s start), so a code approved by an instance that had not yet read a revocation of the subject is refused at its redemption; NULL in codes made before (their created_at stands for it)',
    sql: 'ALTER TABLE authorization_codes ADD COLUMN approval_since INTEGER;',
  },
  {
    version: 16,
    description:
      'clients.secret_method: the one method (client_secret_basic or client_secret_post) a secret client registered for (RFC 7591 token_endpoint_auth_method), enforced at the token, revocation and introspection endpoints; NULL, in every client registered before, accepts either',
    sql: 'ALTER TABLE clients ADD COLUMN secret_method TEXT;',
  },
  {
    version: 17,
    description:
      'clients.allowed_origins: the origins (JSON array) whose pages may call the token, revocation and introspection endpoints as the client (CORS, Hydra allowed_cors_origins); empty, in every client registered before, leaves it to token_service.cors.allowed_origins',
    sql: "ALTER TABLE clients ADD COLUMN allowed_origins TEXT NOT NULL DEFAULT '[]';",
  },
  {
    version: 18,
    description:
      'grants.subject_jti and grants.actor_jti: the access tokens (subject_token, actor_token) a grant was exchanged from, so revoking one revokes the grants exchanged from it with their subtrees; actor_jti indexed, subject_jti found among the children of the token’s grant (grants_parent); NULL in every grant made before',
    sql: `
      ALTER TABLE grants ADD COLUMN subject_jti TEXT;
      ALTER TABLE grants ADD COLUMN actor_jti TEXT;
      CREATE INDEX grants_actor_jti ON grants (actor_jti) WHERE actor_jti IS NOT NULL;
    `,
  },
  {
    version: 19,
    description:
      'signing_keys.mac and removed_signing_keys.mac: a MAC under the master key over a key’s kid, alg, public key and schedule, so that rows written without the master key are refused (a schedule moved, a removed key planted); NULL in rows written before, which the first start with the master key seals again',
    sql: `
      ALTER TABLE signing_keys ADD COLUMN mac TEXT;
      ALTER TABLE removed_signing_keys ADD COLUMN mac TEXT;
    `,
  },
  {
    version: 20,
    description:
      'clients.dpop_bound_access_tokens: the client always uses DPoP (RFC 9449 §5.2), so a token request of it without a DPoP proof is refused; 0, in every client registered before, leaves DPoP to each request',
    sql: 'ALTER TABLE clients ADD COLUMN dpop_bound_access_tokens INTEGER NOT NULL DEFAULT 0;',
  },
  {
    version: 21,
    description:
      'revocations_scoped_token: a login session’s sign-out is one entry of the revocation log, however many instances sign it out at once (appended if absent); duplicates written before are removed first, the one that lasts longest kept',
    sql: `
      DELETE FROM revocations WHERE kind = 'token' AND issuer IS NOT NULL AND EXISTS (
        SELECT 1 FROM revocations d
        WHERE d.kind = 'token' AND d.value = revocations.value AND d.issuer = revocations.issuer
          AND (d.expires_at > revocations.expires_at OR (d.expires_at = revocations.expires_at AND d.seq < revocations.seq)));
      CREATE UNIQUE INDEX revocations_scoped_token ON revocations (value, issuer) WHERE kind = 'token' AND issuer IS NOT NULL;
    `,
  },
  {
    version: 22,
    description:
      'signing_keys.seq: each key numbered in the order it was added (from meta signing_keys_seq, never reused), so that of two keys with the same schedule (two `tessera keys rotate --now` in the same second) the later one signs, not the one whose kid sorts last; the keys stored before are numbered in the order they were used (activation, creation, kid), so the active key stays the same',
    sql: `
      ALTER TABLE signing_keys ADD COLUMN seq INTEGER;
      UPDATE signing_keys SET seq = o.n
        FROM (SELECT kid, row_number() OVER (ORDER BY activates_at, created_at, kid) AS n FROM signing_keys) AS o
        WHERE signing_keys.kid = o.kid;
      INSERT INTO meta (name, value) VALUES ('signing_keys_seq', (SELECT COUNT(*) FROM signing_keys));
    `,
  },
  {
    version: 23,
    description:
      'grants.actor_grant_id: the grant of the actor token (RFC 8693 actor_token) a grant was exchanged with, so revoking the actor’s grant revokes the grants exchanged with its tokens, with their subtrees, transitively; indexed for the cascade; NULL in every grant made before (those outlive their actor’s grant, as before)',
    sql: `
      ALTER TABLE grants ADD COLUMN actor_grant_id TEXT;
      CREATE INDEX grants_actor_grant ON grants (actor_grant_id) WHERE actor_grant_id IS NOT NULL;
    `,
  },
  {
    version: 24,
    description:
      'refresh_tokens.successor_hash: the hash of the token a refresh token was rotated to, so that within token_service.refresh_reuse_interval a retry of the token rotated one generation ago (its successor still current) is told from a reuse; NULL in every token rotated before (their retry is a reuse, as before) and in a successor a retry retired',
    sql: 'ALTER TABLE refresh_tokens ADD COLUMN successor_hash TEXT;',
  },
  {
    version: 25,
    description:
      'signing_keys.retires_at and successor_kid (kept in removed_signing_keys too): a key’s end, sealed into its own row (its mac then covering it) in the same write as its successor’s row, so that past it the key never signs, whatever the other rows say (its successor’s row deleted or rewritten); NULL in every row written before, which the next rotation seals (a migration holds no master key)',
    sql: `
      ALTER TABLE signing_keys ADD COLUMN retires_at INTEGER;
      ALTER TABLE signing_keys ADD COLUMN successor_kid TEXT;
      ALTER TABLE removed_signing_keys ADD COLUMN retires_at INTEGER;
      ALTER TABLE removed_signing_keys ADD COLUMN successor_kid TEXT;
    `,
  },
];
