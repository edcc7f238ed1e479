/**
 * Local JWKS: inline keys or a JSON file, loaded once at construction.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { ConfigIssue } from '../core/errors.ts';
import type { JwsAlgorithm } from '../core/jose/algorithms.ts';
import { STRICT_JSON_FAULTS, strictJsonFault } from '../core/jose/json.ts';
import { KeySet, parseJwks } from '../core/jose/keyset.ts';

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
    let bytes: Buffer;
    try {
      bytes = readFileSync(file);
      document = JSON.parse(bytes.toString('utf8'));
    } catch (e) {
      const reason =
        (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : e instanceof SyntaxError ? 'not valid JSON' : 'unreadable';
      issues.push({ path: `${path}.file`, message: `cannot load JWKS from ${file}: ${reason}` });
      return new KeySet([]);
    }
    // The strict JSON tokens are read with: a member named twice (`"x"` in one key) would be read
    // as its last value here and maybe as its first by another JOSE library given the same file.
    const fault = strictJsonFault(bytes, document);
    if (fault !== undefined) {
      issues.push({ path: `${path}.file`, message: `cannot load JWKS from ${file}: ${STRICT_JSON_FAULTS[fault]}` });
      return new KeySet([]);
    }
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
