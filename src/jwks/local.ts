/**
 * Local JWKS: inline keys or a JSON file, loaded once at construction.
 */
import { closeSync, openSync } from 'node:fs';
import { resolve } from 'node:path';
import { readBounded } from '../config/read-bounded.ts';
import type { ConfigIssue } from '../core/errors.ts';
import type { JwsAlgorithm } from '../core/jose/algorithms.ts';
import { STRICT_JSON_FAULTS, strictJsonFault } from '../core/jose/json.ts';
import { KeySet, parseJwks } from '../core/jose/keyset.ts';

/** The most a JWKS file may hold: 512 KiB, as much as a JWKS fetched from a URL. */
export const MAX_JWKS_FILE_BYTES = 512 * 1024;

/**
 * Read and parse a JWKS file, never more than {@link MAX_JWKS_FILE_BYTES}: a larger file, or one
 * that never ends (`/dev/zero`), is refused after one byte past the limit instead of read whole
 * (which ran the process out of memory). A pipe (`--jwks <(curl …)`) is read as a file is. JSON
 * is read strictly (a member named twice is refused). `problem` says in a few words why the file
 * gives no document: no such file, a directory, too large, not valid JSON.
 */
export function readJwksFile(file: string): { readonly document: unknown } | { readonly problem: string } {
  let bytes: Buffer;
  try {
    const fd = openSync(file, 'r');
    try {
      bytes = readBounded(fd, MAX_JWKS_FILE_BYTES);
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { problem: 'no such file' };
    if (code === 'EISDIR') return { problem: 'a directory, not a file' };
    return { problem: `unreadable (${code ?? 'error'})` };
  }
  if (bytes.length > MAX_JWKS_FILE_BYTES)
    return { problem: `larger than ${MAX_JWKS_FILE_BYTES / 1024} KiB, the most a JWKS file may hold` };
  let document: unknown;
  try {
    document = JSON.parse(bytes.toString('utf8'));
  } catch {
    return { problem: 'not valid JSON' };
  }
  // The strict JSON tokens are read with: a member named twice (`"x"` in one key) would be read
  // as its last value here and maybe as its first by another JOSE library given the same file.
  const fault = strictJsonFault(bytes, document);
  return fault === undefined ? { document } : { problem: STRICT_JSON_FAULTS[fault] };
}

/**
 * Load a local JWKS. Problems (unreadable file, invalid JSON, duplicate member names, unusable
 * keys) are appended to `issues` under `path`; the returned set holds the usable keys.
 */
export function loadLocalJwks(
  source: { readonly file: string } | { readonly keys: readonly Record<string, unknown>[] },
  algorithms: readonly JwsAlgorithm[],
  path: string,
  issues: ConfigIssue[],
  baseDir = process.cwd(),
): KeySet {
  let document: unknown;
  if ('file' in source) {
    const file = resolve(baseDir, source.file);
    const read = readJwksFile(file);
    if ('problem' in read) {
      issues.push({ path: `${path}.file`, message: `cannot load JWKS from ${file}: ${read.problem}` });
      return new KeySet([]);
    }
    document = read.document;
  } else {
    document = { keys: source.keys };
  }
  try {
    const parsed = parseJwks(document, { algorithms });
    for (const p of parsed.problems) {
      issues.push({
        path: 'file' in source ? `${path}.file` : `${path}.keys[${p.index}]`,
        message: `key${p.kid ? ` "${p.kid}"` : ` #${p.index}`}: ${p.message}`,
      });
    }
    if (parsed.keys.length === 0 && parsed.problems.length === 0) issues.push({ path, message: 'the JWKS holds no keys' });
    return new KeySet(parsed.keys);
  } catch (e) {
    issues.push({ path, message: e instanceof Error ? e.message : String(e) });
    return new KeySet([]);
  }
}
