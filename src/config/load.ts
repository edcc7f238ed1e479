/**
 * Load `tessera.yaml`: parse YAML (syntax errors name the line), substitute `${VAR}`, validate
 * against the schema (every problem with its path, within sections and across them), freeze. The
 * file and what its YAML aliases expand to are bounded, so a huge file or an alias bomb is refused
 * before it can exhaust memory.
 */
import { isUtf8 } from 'node:buffer';
import { accessSync, closeSync, constants, fstatSync, openSync, realpathSync, type Stats, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import {
  type Document,
  isAlias,
  isCollection,
  isPair,
  isScalar,
  isSeq,
  LineCounter,
  parseDocument,
  type Scalar,
  visit,
  type YAMLError,
} from 'yaml';
import { ConfigError, type ConfigIssue, secretShaped } from '../core/errors.ts';
import { type ConfigCheck, formatPath, parseConfig } from './parse.ts';
import { readBounded } from './read-bounded.ts';
import { configSchema, type TesseraConfig } from './schema.ts';

/** The largest configuration file (or text) read, in bytes: 1 MiB. A larger one is refused unparsed. */
export const MAX_CONFIG_BYTES = 1024 * 1024;

/**
 * The most the configuration may hold once YAML aliases are expanded (strings and keys by length,
 * other values 8 each): 4 MiB. Aliases are shared when parsed but walked one copy at a time by the
 * schema, so a few aliases to one large node would otherwise cost a hundred times the file.
 */
export const MAX_EXPANDED_BYTES = 4 * MAX_CONFIG_BYTES;

/** yaml's bound on nested alias expansions (its default, passed so that no upgrade lifts it). */
const MAX_ALIAS_COUNT = 100;

const MiB = (n: number) => `${n / 1024 / 1024} MiB`;
const tooLarge = (source: string) =>
  new ConfigError(
    [{ path: '(file)', message: `${source} is larger than ${MiB(MAX_CONFIG_BYTES)}, the limit for a configuration file` }],
    source,
  );

const REWRITE = 'anyone on this host could rewrite the routes, issuers and credentials';

/**
 * Whether `dir` is on a read-only mount, where no one can add, rename or remove a file whatever
 * its mode: a Kubernetes ConfigMap volume's directory is 0777 without the sticky bit, and mounted
 * read-only.
 */
function readOnly(dir: string): boolean {
  try {
    accessSync(dir, constants.W_OK);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EROFS';
  }
}

/**
 * Why a configuration file that was opened may not be trusted, or `undefined`: it decides who is
 * trusted, so neither another user (its owner, not root) nor every user (its mode, or that of its
 * directory, through which the file can be replaced) may change it. A directory with the sticky
 * bit (`/tmp`) lets no one else rename or delete a file they do not own. Group write bits are
 * allowed, as a shared deploy group or umask 002 leaves them.
 */
function unsafeConfigFile(file: string, st: Stats): string | undefined {
  if (!st.isFile()) return undefined;
  if ((st.mode & 0o002) !== 0) {
    const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
    return `${file} is writable by every user (mode ${mode}): ${REWRITE}; run chmod o-w ${file}`;
  }
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid && st.uid !== 0) {
    return `${file} belongs to uid ${st.uid}, neither the user Tessera runs as (uid ${uid}) nor root: that user could rewrite the routes, issuers and credentials; run chown ${uid} ${file} (on the host, for a container's bind mount), or run Tessera as uid ${st.uid}`;
  }
  // The directory of the path as given, and, through a symlink, of the file it leads to.
  const dirs = new Set([dirname(resolve(file))]);
  try {
    dirs.add(dirname(realpathSync(file)));
  } catch {
    // Gone since it was opened: the descriptor is what is read.
  }
  for (const dir of dirs) {
    let mode: number;
    try {
      mode = statSync(dir).mode;
    } catch {
      continue;
    }
    if ((mode & 0o002) !== 0 && (mode & 0o1000) === 0 && !readOnly(dir)) {
      const octal = (mode & 0o777).toString(8).padStart(4, '0');
      return `its directory ${dir} is writable by every user (mode ${octal}): ${REWRITE} by replacing ${file}; run chmod o-w ${dir}`;
    }
  }
  return undefined;
}

/**
 * Read a configuration file whole, but never more than {@link MAX_CONFIG_BYTES}: a larger file
 * (or one that never ends, like a device) is refused after reading one byte past the limit. A file
 * every user may write, in a directory every user may write (without the sticky bit), or owned by
 * another user than this process's and root is refused unread: it decides who is trusted (a
 * group-writable one is read, as a shared deploy group or umask 002 leaves it).
 *
 * @throws {ConfigError} when the file cannot be read, is too large, or may be changed by others.
 */
export function readConfigFile(file: string): Buffer {
  let bytes: Buffer;
  try {
    const fd = openSync(file, 'r');
    try {
      // Of what was opened (through a symlink, its target): no check-then-open race.
      const problem = process.platform === 'win32' ? undefined : unsafeConfigFile(file, fstatSync(fd));
      if (problem !== undefined) throw new ConfigError([{ path: '(file)', message: problem }], file);
      bytes = readBounded(fd, MAX_CONFIG_BYTES);
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    const message =
      code === 'EISDIR'
        ? `${file} is a directory; name the configuration file, such as ${join(file, 'tessera.yaml')}`
        : `cannot read ${file}: ${code ?? 'error'}`;
    throw new ConfigError([{ path: '(file)', message }], file);
  }
  if (bytes.length > MAX_CONFIG_BYTES) throw tooLarge(file);
  return bytes;
}

/**
 * Walk `value` as the schema will, every alias expanded: refuse a cycle (an alias inside the node
 * it names, `a: &x [*x]`), which no setting can be, and more than {@link MAX_EXPANDED_BYTES}.
 */
function checkExpansion(value: unknown, source: string): void {
  let size = 0;
  const open = new Set<object>();
  const refuse = (message: string) => new ConfigError([{ path: '(yaml)', message }], source);
  const visit = (v: unknown): void => {
    size += typeof v === 'string' ? v.length : 8;
    if (size > MAX_EXPANDED_BYTES) {
      throw refuse(
        `the YAML aliases expand the configuration to more than ${MiB(MAX_EXPANDED_BYTES)}; write the values out or use fewer aliases`,
      );
    }
    if (v === null || typeof v !== 'object') return;
    if (open.has(v)) throw refuse('an alias refers to a node that contains it; YAML aliases must not form a cycle');
    open.add(v);
    if (Array.isArray(v)) for (const item of v) visit(item);
    else {
      for (const [k, item] of Object.entries(v)) {
        size += k.length;
        visit(item);
      }
    }
    open.delete(v);
  };
  visit(value);
}

/** What the caller checks besides the schema, reported in the same error (how the file is used). */
export interface LoadOptions {
  readonly check?: ConfigCheck<TesseraConfig> | undefined;
}

/**
 * A YAML syntax error's message, without what yaml quotes of the text: the value an error is in
 * may be a secret written inline (`token: |s3cret` reads as a block scalar header with extra
 * characters, `"\\u…"` as an escape), and configuration errors end up in terminals and logs. The
 * position is in the issue's path already.
 */
function yamlMessage(e: YAMLError): string {
  const first = (e.message.split('\n')[0] ?? e.message).replace(/ at line \d+, column \d+:?$/, '');
  if (e.code === 'MULTIPLE_DOCS') {
    return 'a configuration file holds one YAML document; this starts a second (after "---" or "..."): merge it into the first';
  }
  if (e.code === 'BAD_DQ_ESCAPE') return 'invalid escape sequence in a double-quoted string (write \\\\ for a backslash)';
  if (first.startsWith('Block scalar header includes extra characters')) {
    return 'a value starting with | or > is a block scalar header and takes nothing after it on the line; quote the value';
  }
  if (e.code === 'TAG_RESOLVE_FAILED') {
    // A standard tag (`!!js/function`) is named; a local one (`!s3cret`) is the value as written.
    const tag = /Unresolved tag: (tag:yaml\.org,2002:\S+)/.exec(e.message)?.[1];
    return tag !== undefined
      ? `unknown YAML tag ${tag}; remove it (plain YAML 1.2 values only: !!str, !!int, !!bool and the like)`
      : 'unknown YAML tag (a value starting with ! is read as a tag): quote the value, or remove the tag';
  }
  return first;
}

/** Where the first alias naming no anchor before it is (`line 3, column 10`), if it can be found. */
function unresolvedAlias(doc: Document, text: string): string | undefined {
  let offset: number | undefined;
  visit(doc, {
    Alias(_, node) {
      if (isAlias(node) && node.resolve(doc) === undefined) {
        offset = node.range?.[0];
        return visit.BREAK;
      }
      return undefined;
    },
  });
  if (offset === undefined) return undefined;
  const before = text.slice(0, offset).split('\n');
  return `line ${before.length}, column ${(before.at(-1)?.length ?? 0) + 1}`;
}

const SPELLING: Record<string, string> = { HEX: 'a hexadecimal number', OCT: 'an octal number', EXP: 'a number with an exponent' };

/**
 * A number written otherwise than in decimal digits (`0x1F90`, `0o17620`, `8.08e3`): YAML reads it
 * as a number (8080), which no one reviewing `port: 0x1F90` reads that way, and which may have been
 * meant as text. What to write instead, or `undefined` for decimal digits. An exponent is left to
 * the schema where the value is no safe integer (`1.16e-5`, `1e300`: no integer setting's value,
 * and refused with its range), as are `.inf` and `.nan`. A value of more than six digits is not
 * shown: it may be a secret written unquoted.
 */
function numberSpelling(node: Scalar, key: string | undefined): string | undefined {
  if (typeof node.value !== 'number' || node.type !== 'PLAIN' || node.format === undefined) return undefined;
  const n = node.value;
  if (node.format === 'EXP' && !Number.isSafeInteger(n)) return undefined;
  const spelled = SPELLING[node.format];
  if (spelled === undefined) return undefined;
  const write =
    Number.isInteger(n) && Math.abs(n) < 1_000_000 ? `write ${key === undefined ? '- ' : `${key}: `}${n}` : 'write it in decimal digits';
  return `${spelled}, which YAML reads as a number; ${write}, or put it in quotes if it is text`;
}

/** The configuration path (`gateway.routes[0].upstream.port`) of a value, from its YAML ancestors. */
function keyPath(ancestors: readonly unknown[], node: unknown): (string | number)[] | undefined {
  const out: (string | number)[] = [];
  for (const [i, a] of ancestors.entries()) {
    const child = ancestors[i + 1] ?? node;
    if (isPair(a)) {
      if (a.value !== child || !isScalar(a.key)) return undefined;
      const name = String(a.key.value);
      // A key may be a secret by mistake; then the place is given by line and column instead.
      if (secretShaped(name)) return undefined;
      out.push(name);
    } else if (isSeq(a)) out.push(a.items.indexOf(child as never));
  }
  return out;
}

/** Parse configuration text. `source` names the file in error messages. */
export function parseConfigText(
  text: string,
  source = 'tessera.yaml',
  env: Readonly<Record<string, string | undefined>> = process.env,
  options: LoadOptions = {},
): TesseraConfig {
  if (text.length > MAX_CONFIG_BYTES || Buffer.byteLength(text) > MAX_CONFIG_BYTES) throw tooLarge(source);
  // YAML 1.2's core schema whatever a `%YAML 1.1` directive asks (no octal `012`, no `yes` for
  // true), and without the 1.1 types (`!!binary`, `!!set`, `!!timestamp`: a Buffer, a Set or a
  // Date where the schema reads JSON values).
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true, schema: 'core', resolveKnownTags: false, lineCounter });
  // yaml's warnings are values read otherwise than written: a tag it cannot resolve (`!!js/function`,
  // `!env`) falls back to the plain string, an unknown directive is skipped. Refused like errors.
  const where = (at: number) => {
    const { line, col } = lineCounter.linePos(at);
    return `line ${line}, column ${col}`;
  };
  // A duplicate key (a later value silently replacing a reviewed one, were it read): where the
  // first one is, by the offset of the second.
  const firstKey = new Map<number, { name: string; at: number }>();
  visit(doc, {
    Map(_, map) {
      const seen = new Map<unknown, number>();
      for (const pair of map.items) {
        if (!isScalar(pair.key) || pair.key.range === undefined || pair.key.range === null) continue;
        const first = seen.get(pair.key.value);
        if (first === undefined) seen.set(pair.key.value, pair.key.range[0]);
        else firstKey.set(pair.key.range[0], { name: String(pair.key.value), at: first });
      }
    },
  });
  const problems: { at: number; line: string; message: string }[] = [...doc.errors, ...doc.warnings].map((e) => {
    // `url: ${VAR}` inside `{ … }` or `[ … ]`: the `{` after `$` opens a flow mapping.
    const unquotedVar = text[e.pos[0] - 1] === '$' && text[e.pos[0]] === '{';
    const duplicate = e.code === 'DUPLICATE_KEY' ? firstKey.get(e.pos[0]) : undefined;
    // A key can be a secret by mistake (`{ type: static, s3cret }` is a key `s3cret`).
    const name = duplicate && (secretShaped(duplicate.name) ? `(a key of ${duplicate.name.length} characters)` : duplicate.name);
    return {
      at: e.pos[0],
      line: e.linePos ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}` : '(yaml)',
      message: unquotedVar
        ? 'a ${VAR} inside { … } or [ … ] must be quoted: write "${VAR}"'
        : duplicate
          ? `duplicate key ${name} (first at ${where(duplicate.at)}); keep one of them`
          : yamlMessage(e),
    };
  });
  // Numbers not written in decimal digits, by configuration path: reported with the schema's issues.
  const numbers: ConfigIssue[] = [];
  visit(doc, {
    Scalar(_, node, ancestors) {
      const parent = ancestors.at(-1);
      if (isPair(parent) && parent.key === node) return;
      const path = keyPath(ancestors, node);
      const last = path?.at(-1);
      const message = numberSpelling(node, typeof last === 'string' ? last : undefined);
      if (message === undefined) return;
      const at = node.range?.[0] ?? 0;
      if (path === undefined || path.length === 0) problems.push({ at, line: where(at), message });
      else numbers.push({ path: formatPath(path), message });
    },
    Pair(_, pair) {
      // A key that is a list or a mapping (`? [a, b]`) would be turned into a string.
      if (isCollection(pair.key)) {
        const at = pair.key.range?.[0] ?? 0;
        problems.push({ at, line: where(at), message: 'a key must be a plain value, not a list or a mapping' });
      }
      // YAML 1.2 has no merge key: `<<: *defaults` would be a key named `<<` (and a scope of that
      // name in the catalogue), its settings never merged.
      if (isScalar(pair.key) && pair.key.type === 'PLAIN' && pair.key.value === '<<') {
        const at = pair.key.range?.[0] ?? 0;
        problems.push({
          at,
          line: where(at),
          message: 'YAML merge keys (<<) are not supported: write the keys out (an alias *name may still repeat a whole value)',
        });
      }
    },
  });
  if (problems.length > 0) {
    // One problem per line: the first problem on a line causes the others after it.
    const lines = new Set<string>();
    const issues: ConfigIssue[] = [];
    for (const p of problems.sort((a, b) => a.at - b.at)) {
      const line = p.line.split(',')[0] as string;
      if (p.line !== '(yaml)' && lines.has(line)) continue;
      lines.add(line);
      issues.push({ path: p.line, message: p.message });
    }
    throw new ConfigError(issues, source);
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (e) {
    const message = String((e as Error)?.message ?? '');
    if (/excessive alias count/i.test(message)) {
      throw new ConfigError(
        [{ path: '(yaml)', message: 'too many alias expansions (the YAML aliases nest too deep); write the values out' }],
        source,
      );
    }
    if (message.startsWith('Unresolved alias')) {
      // yaml names the alias, which is the value as written: `token: *s3cret` unquoted is one.
      const at = unresolvedAlias(doc, text);
      throw new ConfigError(
        [{ path: at ?? '(yaml)', message: 'an alias (*…) names no anchor set before it; a value starting with * must be quoted' }],
        source,
      );
    }
    throw new ConfigError([{ path: '(yaml)', message: 'unreadable YAML' }], source);
  }
  checkExpansion(value, source);
  const parse = () => parseConfig(configSchema, value ?? {}, { env, source, check: options.check });
  if (numbers.length === 0) return parse();
  let others: readonly ConfigIssue[] = [];
  try {
    parse();
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    others = e.issues;
  }
  const named = new Set(numbers.map((i) => i.path));
  throw new ConfigError([...numbers, ...others.filter((i) => !named.has(i.path))], source);
}

/**
 * Read and parse a configuration file. `env` supplies the `${VAR}` values (default `process.env`);
 * unlike the CLI it does not fill in variables from `<data_dir>/secrets.env`, so an embedder
 * passes those in `env` itself. A relative `data_dir` or `audit.file` is read from the file's
 * directory, as the CLI reads it ({@link resolveConfigPaths}), not the working directory.
 *
 * @example
 * ```ts
 * const config = loadConfigFile('tessera.yaml', { ...process.env, GATEWAY_TOKEN: await secret() });
 * ```
 */
export function loadConfigFile(
  file: string,
  env: Readonly<Record<string, string | undefined>> = process.env,
  options: LoadOptions = {},
): TesseraConfig {
  const bytes = readConfigFile(file);
  const text = bytes.toString('utf8');
  // Decoding would replace bad bytes with U+FFFD and carry on: a value written in another encoding
  // would silently become another value.
  if (text.includes('\uFFFD') && !isUtf8(bytes)) {
    const line = text.slice(0, text.indexOf('\uFFFD')).split('\n').length;
    throw new ConfigError([{ path: `line ${line}`, message: 'not valid UTF-8; save the file as UTF-8' }], file);
  }
  return resolveConfigPaths(parseConfigText(text, file, env, options), dirname(resolve(file)));
}

/**
 * `config` with its relative file paths (`data_dir`, `audit.file`) resolved against `dir`, the
 * configuration file's directory, as `issuers[].jwks.file` is read (through `baseDir`): not the
 * working directory, which under a service manager is `/` or the image's. Frozen.
 */
export function resolveConfigPaths(config: TesseraConfig, dir: string): TesseraConfig {
  const at = (path: string) => (isAbsolute(path) ? path : resolve(dir, path));
  const audit = config.audit;
  return Object.freeze({
    ...config,
    data_dir: at(config.data_dir),
    ...(audit?.file !== undefined ? { audit: Object.freeze({ ...audit, file: at(audit.file) }) } : {}),
  });
}
