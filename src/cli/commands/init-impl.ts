/**
 * What `tessera init` runs (init.ts defines the command and its constants): loaded when it runs,
 * so that the CLI's other commands, `--help` and `--version` do not load the store, the
 * configuration schema and the token service.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, linkSync, lstatSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { TesseraConfig } from '../../config/schema.ts';
import { readSecretsEnv, SECRETS_ENV_FILE, writeSecretsEnv } from '../../config/secrets-env.ts';
import { SIGNING_ALGORITHMS, type SigningAlgorithm } from '../../config/signing-algorithms.ts';
import { removeStaleTemps, tempFileFor } from '../../config/stale-temps.ts';
import { resolveStore, resolveTokenService } from '../../config/token-service-schema.ts';
import { ConfigError } from '../../core/errors.ts';
import { printable } from '../../core/printable.ts';
import {
  createTokenServiceFromConfig,
  ensureDataDir,
  loadMasterKey,
  MASTER_KEY_ENV,
  MASTER_KEY_FILE,
  openStore,
} from '../../server/bootstrap.ts';
import { type Store, StoreUnavailableError } from '../../store/contract.ts';
import { configFileExists, configPath, loadConfig, toCliError, verifyMasterKey, withAdminWrite } from '../context.ts';
import { CliError, refusal } from '../output.ts';
import {
  DEMO_CLIENT,
  DEMO_CLIENT_FILE,
  DEMO_ROUTE,
  DEMO_SECRET_FILE,
  GATEWAY_TOKEN_VAR,
  type InitOptions,
  type InitReport,
} from './init.ts';

/** The configuration `tessera init` writes when there is none. */
export function configTemplate(options: {
  dataDir: string;
  algorithm: SigningAlgorithm;
  port: number;
  host: string;
  upstreamPort: number;
}): string {
  const base = `http://${options.host}:${options.port}`;
  return `# tessera.yaml, written by \`tessera init\`. Every key is described in docs/configuration.md.
# Values may use \${VAR} and \${VAR:default} (or \${VAR:-default}) from the environment.
data_dir: ${yamlPath(options.dataDir)}

server:
  host: ${options.host}
  port: ${options.port}
  # public_url: https://auth.example.com   # the issuer and endpoint base URL behind a proxy

token_service:
  access_token_ttl: 10m
  max_chain_depth: 5
  keys:
    algorithm: ${options.algorithm}
    publish_ahead: 1h      # a new key is in the JWKS this long before it signs
    jwks_max_age: 10m

# Issuers whose tokens are trusted: this token service itself (the in-process verifier reads its
# keys directly), plus any identity provider whose tokens may be exchanged (RFC 8693), with the
# clients that may exchange them in its exchange_clients (unset: every token-exchange client).
issuers:
  - issuer: ${base}
    audiences: [${base}/demo]
    jwks_uri: ${base}/.well-known/jwks.json
    token_type: at+jwt

scopes:
  demo:read: { description: Read the demo API }
  demo:write: { description: Change the demo API, implies: [demo:read] }

# The gateway shares the listener: requests that are not for the token service (/oauth2/*,
# /.well-known/jwks.json, /.well-known/oauth-authorization-server) go through these routes; the
# first match wins, anything unmatched is denied.
gateway:
  routes:
    - id: ${DEMO_ROUTE}
      match: { path_prefix: /api }
      upstream:
        url: http://${options.host}:${options.upstreamPort}   # \`tessera start\` runs a small demo API here
        # Injected into every forwarded request; callers never see it. The value is in
        # ${options.dataDir}/${SECRETS_ENV_FILE} (written by \`tessera init\`); the environment overrides it.
        credential: { type: static, token: "\${${GATEWAY_TOKEN_VAR}}" }
      auth: jwt
      audience: ${base}/demo
      rules:
        - { id: read, methods: [GET, HEAD], path: /api/**, scopes: [demo:read] }
        - { id: write, methods: [POST, PUT, PATCH, DELETE], path: /api/**, scopes: [demo:write] }
      identity_headers: [subject, client, actors, delegation, scopes]
      # The demo API is also an A2A agent: its card is public at /.well-known/agent-card.json,
      # served with the security schemes that say how to get and present Tessera's tokens.
      a2a:
        token_url: ${base}/oauth2/token
        url: ${base}/api
        scopes: { "demo:read": Read the demo API, "demo:write": Change the demo API }
`;
}

/**
 * A path as a YAML value that reads back as the path itself: plain when nothing in it means more
 * to YAML or to the loader (`.tessera`, `/var/lib/tessera`), else double-quoted (JSON's escapes
 * are YAML's). A `${` is written `$${`, the loader's literal: `--data-dir '${HOME}'` names a
 * directory called that, not the home directory. `#`, `: `, a leading `*`, `[`, `&`, digits alone
 * or `null` would otherwise end, change or retype the value.
 */
function yamlPath(path: string): string {
  const literal = path.replaceAll('${', () => '$${');
  return /^[A-Za-z_./~-][\w./~-]*$/.test(literal) && literal !== '~' && !/^(null|true|false|yes|no|on|off)$/i.test(literal)
    ? literal
    : JSON.stringify(literal);
}

/**
 * `--data-dir` is written into tessera.yaml and printed back: empty (an unset `"$DIR"`), or with a
 * control, line-separator or bidirectional character (which would break the YAML line or rewrite
 * the terminal it is printed to), it is refused naming the option, before anything is written.
 */
function refuseDataDirValue(value: string | undefined): void {
  if (value === undefined) return;
  if (value === '') throw new CliError('--data-dir is empty; name the data directory (--data-dir .tessera), or leave it out');
  if (printable(value) !== value) {
    throw new CliError(
      `--data-dir ${JSON.stringify(value)} holds a control, line-separator or bidirectional character; name a directory without one`,
    );
  }
}

/** Mode of a new tessera.yaml (the umask can only narrow it). */
const CONFIG_MODE = 0o644;

/**
 * Write a secret file owner-only and whole: through a new file renamed into place, so neither a
 * crash nor an existing file's wider mode leaves the secret half-written or readable by others.
 */
function writeOwnerOnly(file: string, text: string | Uint8Array, mode = 0o600): void {
  removeStaleTemps(file);
  const tmp = tempFileFor(file);
  rmSync(tmp, { force: true });
  try {
    writeFileSync(tmp, text, { mode, flag: 'wx' });
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/**
 * The demo client's secret as demo-client.json keeps it, or `undefined` when the file is absent,
 * not a regular file, or holds no secret of the demo client.
 */
function keptDemoSecret(file: string): string | undefined {
  try {
    if (lstatSync(file, { throwIfNoEntry: false })?.isFile() !== true) return undefined;
    const kept = JSON.parse(readFileSync(file, 'utf8')) as { client_id?: unknown; client_secret?: unknown };
    return kept.client_id === DEMO_CLIENT && typeof kept.client_secret === 'string' && kept.client_secret !== ''
      ? kept.client_secret
      : undefined;
  } catch {
    return undefined;
  }
}

/** lstat, so a dangling symlink counts as there (and is never taken for something this run made). */
const present = (path: string): boolean => lstatSync(path, { throwIfNoEntry: false }) !== undefined;

/**
 * What one run of init created or changed, to put back when it fails part way: files and
 * directories it created are removed, files it replaced get their old content and mode back, and
 * rows it added to a store that was there before are deleted. Nothing that existed before the run
 * is removed.
 */
class Undo {
  readonly #files: { path: string; undo: () => void }[] = [];
  readonly #store: { what: string; undo: () => Promise<unknown> }[] = [];
  /** What could not be put back, for the error message. */
  readonly left: string[] = [];

  /** Whether the run got as far as changing anything. */
  get changed(): boolean {
    return this.#files.length + this.#store.length > 0;
  }

  /** `path` (a file, or a directory and all it will hold) is about to be created, if it is absent. */
  creating(path: string): void {
    if (!present(path)) this.#files.push({ path, undo: () => rmSync(path, { recursive: true, force: true }) });
  }

  /**
   * `path` was just created by this run (a directory with all it holds, or a file). Recorded after
   * the fact, from what the call that made it reports: a path found absent beforehand may since
   * have been made by another run, and is not this run's to remove.
   */
  created(path: string): void {
    this.#files.push({ path, undo: () => rmSync(path, { recursive: true, force: true }) });
  }

  /** `file` is about to be written: created, or replaced (its content and mode are kept to restore). */
  writing(file: string): void {
    const st = lstatSync(file, { throwIfNoEntry: false });
    if (st === undefined) this.creating(file);
    // A symbolic link is replaced by the file renamed over it (demo-client.json): put the link back; its target is untouched.
    else if (st.isSymbolicLink()) {
      const target = readlinkSync(file);
      this.#files.push({
        path: file,
        undo: () => {
          rmSync(file, { force: true });
          symlinkSync(target, file);
        },
      });
    }
    // Anything else but a regular file makes the write fail: nothing to restore.
    else if (st.isFile()) {
      const text = readFileSync(file);
      this.#files.push({ path: file, undo: () => writeOwnerOnly(file, text, st.mode & 0o777) });
    }
  }

  /** A row added to the store, with how to delete it. */
  added(what: string, undo: () => Promise<unknown>): void {
    this.#store.push({ what, undo });
  }

  /** Delete what was added to the store (while it is still open), newest first. */
  async undoStore(): Promise<void> {
    for (const step of this.#store.reverse()) {
      try {
        await step.undo();
      } catch {
        this.left.push(step.what);
      }
    }
  }

  /** Remove or restore the files (the store closed), newest first. */
  undoFiles(): void {
    for (const step of this.#files.reverse()) {
      try {
        step.undo();
      } catch {
        this.left.push(step.path);
      }
    }
  }
}

/**
 * Init failed and `undo` ran: one line saying why, and whether everything was put back. A
 * configuration error keeps its own form (one problem a line, exit code 2) when nothing was left.
 */
function initFailure(error: unknown, undo: Undo): unknown {
  const e = toCliError(error);
  if (!undo.changed || (e instanceof ConfigError && undo.left.length === 0)) return e;
  const fs = e as NodeJS.ErrnoException & { dest?: string };
  const reason =
    !(e instanceof CliError) && typeof fs?.code === 'string' && typeof fs.path === 'string'
      ? `cannot write ${fs.dest ?? fs.path} (${fs.code})`
      : e instanceof Error
        ? e.message.split('\n').join(' ')
        : String(e);
  return new CliError(
    undo.left.length === 0
      ? `${reason}; init undid its changes`
      : `${reason}; init could not undo its changes to ${undo.left.join(', ')}: remove or fix them before running it again`,
    e instanceof CliError ? e.exitCode : 1,
  );
}

/**
 * `--port`, `--upstream-port` and `--data-dir` only shape a new tessera.yaml. Over an existing one
 * that says otherwise they would be dropped without a word, and the next `tessera start` would
 * fail on the same busy port the newcomer gave `--port` to get away from: refused, nothing written.
 */
function refuseIgnoredShape(path: string, config: TesseraConfig, options: InitOptions): void {
  const demo = config.gateway?.routes.find((r) => r.id === DEMO_ROUTE)?.upstream.url;
  const demoPort = demo === undefined ? undefined : Number(new URL(demo).port || (new URL(demo).protocol === 'https:' ? 443 : 80));
  const differs: [flag: string, given: string | number, held: string][] = [];
  if (options.port !== undefined && options.port !== config.server.port)
    differs.push(['--port', options.port, `server.port ${config.server.port}`]);
  if (options.upstreamPort !== undefined && options.upstreamPort !== demoPort) {
    differs.push(['--upstream-port', options.upstreamPort, demo === undefined ? `no "${DEMO_ROUTE}" route` : `demo upstream ${demo}`]);
  }
  if (options.dataDir !== undefined && resolve(dirname(path), options.dataDir) !== config.data_dir) {
    differs.push(['--data-dir', options.dataDir, `data_dir ${config.data_dir}`]);
  }
  const first = differs[0];
  if (first === undefined) return;
  const [flag, given, held] = first;
  throw refusal(
    'init_option_not_applied',
    `${flag} ${given} is not applied: ${path} exists (${held}) and ${flag} only shapes a new one; to start over, delete it and ${config.data_dir}, then run init again`,
  );
}

/**
 * tessera.yaml could not be written (its directory missing or not writable): one line naming the
 * file, not the temporary file written first, and what to do instead. Another failure is itself.
 */
function configWriteError(path: string, e: unknown): unknown {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  const dir = dirname(path);
  if (code === 'ENOENT')
    return new CliError(`cannot write ${path}: its directory ${dir} does not exist (ENOENT); create it, or name another --config`);
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
    return new CliError(
      `cannot write ${path}: its directory ${dir} is not writable (${code}); run init where you may write, or name another --config`,
    );
  }
  if (code === 'ENOTDIR') return new CliError(`cannot write ${path}: ${dir} is not a directory (ENOTDIR); name another --config`);
  return e;
}

export async function initialize(options: InitOptions): Promise<InitReport> {
  const undo = new Undo();
  try {
    return await initializeOnce(options, undo);
  } catch (e) {
    undo.undoFiles();
    const failure = initFailure(e, undo);
    if (e instanceof CliError && e.reason !== undefined) await recordRefusal(options.config, e);
    throw failure;
  }
}

/**
 * A refusal (a {@link CliError} with a reason: a flag it cannot apply, another master key than the
 * store's) is on record as one `admin.action` deny, `by: cli`, `action: init`, as the other admin
 * writes' are, in a store that was there before the run: a SQLite database that exists, or the
 * configured PostgreSQL database when the data directory exists and it opens. None is created to
 * hold it (a refused run leaves the place as it found it); without one the refusal is reported
 * only. A run that fails part way (a file it cannot write) is reported, not recorded.
 */
async function recordRefusal(option: string | undefined, refused: CliError): Promise<void> {
  try {
    const db = resolveStore(loadConfig(option).config);
    if (db.driver === 'sqlite' && (db.path === ':memory:' || !present(db.path))) return;
    // Opens the store without the master key, records the refusal and throws it.
    await withAdminWrite(option, false, { action: 'init' }, async () => undefined, refused);
  } catch {
    // The refusal is reported by the caller whether or not it could be recorded.
  }
}

async function initializeOnce(options: InitOptions, undo: Undo): Promise<InitReport> {
  if (options.algorithm !== undefined && !(SIGNING_ALGORITHMS as readonly string[]).includes(options.algorithm)) {
    throw refusal('key_algorithm_unsupported', `--alg must be one of ${SIGNING_ALGORITHMS.join(', ')}`);
  }
  refuseDataDirValue(options.dataDir);
  const path = configPath(options.config);
  let written = false;
  if (!configFileExists(path)) {
    const port = options.port ?? 8080;
    // port + 1 is no port for 0 (any free port) or 65535; the demo upstream needs a fixed one.
    if (options.upstreamPort === undefined && (port === 0 || port === 65535)) {
      throw refusal(
        'init_upstream_port_required',
        `--port ${port} leaves no default for the demo upstream (port + 1); give --upstream-port too`,
      );
    }
    const text = configTemplate({
      dataDir: options.dataDir ?? '.tessera',
      algorithm: options.algorithm ?? 'ES256',
      port,
      host: '127.0.0.1',
      upstreamPort: options.upstreamPort ?? port + 1,
    });
    // Written whole to a new file, then linked into place: link() fails if the name exists
    // (another run wrote it: not ours), and a crash mid-write leaves no truncated tessera.yaml
    // that later runs would refuse.
    removeStaleTemps(path);
    const tmp = tempFileFor(path);
    rmSync(tmp, { force: true });
    try {
      // Never writable by others whatever the umask (000 would make it 0666): the file decides which
      // issuers' tokens are trusted and where requests go.
      writeFileSync(tmp, text, { flag: 'wx', mode: CONFIG_MODE });
      try {
        linkSync(tmp, path);
      } catch (e) {
        // A file system without hard links (some network and FUSE mounts): create it in place.
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw e;
        writeFileSync(path, text, { flag: 'wx', mode: CONFIG_MODE });
      }
    } catch (e) {
      throw configWriteError(path, e);
    } finally {
      rmSync(tmp, { force: true });
    }
    undo.created(path);
    written = true;
  }
  // The gateway token first: the configuration references it, so loading needs it.
  const { config: bare } = loadConfig(path, { env: { ...process.env, [GATEWAY_TOKEN_VAR]: process.env[GATEWAY_TOKEN_VAR] || 'unset' } });
  if (!written) refuseIgnoredShape(path, bare, options);
  const madeDir = ensureDataDir(bare.data_dir);
  if (madeDir !== undefined) undo.created(madeDir);
  const secretsFile = join(bare.data_dir, SECRETS_ENV_FILE);
  const tokenCreated = !existsSync(secretsFile) || readSecretsEnv(secretsFile)[GATEWAY_TOKEN_VAR] === undefined;
  if (tokenCreated) {
    undo.writing(secretsFile);
    writeSecretsEnv(secretsFile, { [GATEWAY_TOKEN_VAR]: `tgw_${randomBytes(32).toString('base64url')}` });
  }
  const { config } = loadConfig(path);
  const madeDataDir = ensureDataDir(config.data_dir);
  if (madeDataDir !== undefined) undo.created(madeDataDir);
  const master = loadMasterKey(config.data_dir, { create: true });
  if (master === undefined) throw new CliError('could not create the master key');
  if (master.source === 'generated') undo.created(join(config.data_dir, MASTER_KEY_FILE));
  const db = resolveStore(config);
  if (db.driver === 'sqlite' && db.path !== ':memory:' && !present(db.path)) {
    // SQLite's journal and WAL files too, when this run creates the database.
    for (const f of ['', '-journal', '-wal', '-shm']) undo.creating(`${db.path}${f}`);
  }
  let store: Store;
  try {
    store = await openStore(config);
  } catch (e) {
    if (db.driver !== 'sqlite' || !(e instanceof Error) || e instanceof StoreUnavailableError) throw e;
    throw new CliError(`cannot open the SQLite store ${db.path}: ${e.message}`);
  }
  const service = createTokenServiceFromConfig(config, { store, master: master.key, baseDir: dirname(path) });
  try {
    await service.start({ background: false });
    // Another master key than an existing store's (a stale TESSERA_MASTER_KEY): a demo client made
    // under it would be handed a secret that never authenticates.
    try {
      verifyMasterKey(service, config.data_dir);
    } catch (e) {
      // Generated by this run over a store already holding keys: the file was lost, not replaced.
      if (!(e instanceof CliError) || master.source !== 'generated') throw e;
      throw new CliError(
        `${join(config.data_dir, MASTER_KEY_FILE)} is missing, and the store already holds signing keys sealed under it: restore it (or set ${MASTER_KEY_ENV}) from where it was kept; a new master key cannot open them`,
        1,
        { reason: 'master_key_missing' },
      );
    }
    let key = service.keys.status().find((k) => k.state === 'active');
    let keyCreated = false;
    if (key === undefined) {
      const record = await service.keys.rotate({ immediate: true, algorithm: options.algorithm ?? config.token_service?.keys.algorithm });
      undo.added(`signing key ${record.kid}`, () => store.deleteSigningKey(record.kid));
      key = service.keys.status().find((k) => k.kid === record.kid);
      keyCreated = true;
    }
    const issuer = resolveTokenService(config).issuer;
    const audience = `${issuer}/demo`;
    const scopes = ['demo:read', 'demo:write'];
    let secret: string | undefined;
    // Only for a configuration that has the demo's scopes (the one init writes); another is left alone.
    const demoScopes = scopes.every((s) => Object.hasOwn(config.scopes ?? {}, s));
    const existing = await store.getClient(DEMO_CLIENT);
    const exists = existing !== undefined;
    // A run killed between registering the demo client and writing its secret files left a client
    // whose secret is nowhere, or only in demo-client.json: the second is put back where `tessera
    // start` reads it, the first reported with the way to a new one (never a new secret unasked).
    let secretMissing = false;
    if (existing?.authMethod === 'client_secret' && demoScopes && !present(join(config.data_dir, DEMO_SECRET_FILE))) {
      const kept = keptDemoSecret(join(config.data_dir, DEMO_CLIENT_FILE));
      if (kept === undefined) secretMissing = true;
      else {
        const secretFile = join(config.data_dir, DEMO_SECRET_FILE);
        undo.writing(secretFile);
        writeOwnerOnly(secretFile, kept);
      }
    }
    if (!exists && demoScopes) {
      const created = await service.registerClient(
        {
          id: DEMO_CLIENT,
          scopes,
          audiences: [audience],
          grantTypes: ['client_credentials', 'refresh_token', 'urn:ietf:params:oauth:grant-type:token-exchange'],
        },
        'init',
      );
      // A client whose secret was never kept is of no use, and would stop the next run from
      // creating one.
      undo.added(`client ${DEMO_CLIENT}`, () => service.removeClient(DEMO_CLIENT, 'init'));
      secret = created.secret;
      // Kept owner-only for the newcomer's path (`npm start` prints a curl that uses it).
      try {
        const jsonFile = join(config.data_dir, DEMO_CLIENT_FILE);
        undo.writing(jsonFile);
        writeOwnerOnly(jsonFile, `${JSON.stringify({ client_id: DEMO_CLIENT, client_secret: secret, audience }, null, 2)}\n`);
        if (secret !== undefined) {
          const secretFile = join(config.data_dir, DEMO_SECRET_FILE);
          undo.writing(secretFile);
          writeOwnerOnly(secretFile, secret);
        }
      } catch (e) {
        throw new CliError(`cannot write the demo client's secret in ${config.data_dir} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
      }
    }
    return {
      config_file: path,
      config_written: written,
      data_dir: config.data_dir,
      issuer,
      master_key: master.source,
      signing_key: { kid: key?.kid ?? '', alg: key?.alg ?? '', created: keyCreated },
      demo_client: {
        client_id: DEMO_CLIENT,
        created: secret !== undefined,
        ...(!exists && !demoScopes ? { skipped: 'tessera.yaml has no demo:read and demo:write scopes' } : {}),
        ...(secretMissing ? { secret_missing: true } : {}),
        audience,
        scopes,
        ...(secret ? { client_secret: secret } : {}),
      },
      gateway_token: { variable: GATEWAY_TOKEN_VAR, file: secretsFile, created: tokenCreated },
    };
  } catch (e) {
    await undo.undoStore();
    throw e;
  } finally {
    await service.close();
    await store.close();
  }
}
