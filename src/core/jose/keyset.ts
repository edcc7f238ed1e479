/**
 * A fixed set of verification keys (one JWKS), looked up by (kid, alg).
 */
import type { KeyMiss, KeySource } from '../ports.ts';
import type { JwsAlgorithm } from './algorithms.ts';
import { type ImportJwkOptions, importJwk, JwkError, type VerificationKey } from './jwk.ts';

export class KeySet implements KeySource {
  readonly keys: readonly VerificationKey[];
  readonly #byKid = new Map<string, VerificationKey[]>();
  readonly #noKid = new Map<JwsAlgorithm, VerificationKey | KeyMiss>();

  constructor(keys: readonly VerificationKey[]) {
    this.keys = Object.freeze([...keys]);
    for (const k of keys) {
      if (k.kid === undefined) continue;
      const list = this.#byKid.get(k.kid);
      if (list) list.push(k);
      else this.#byKid.set(k.kid, [k]);
    }
  }

  lookup(kid: string | undefined, alg: JwsAlgorithm): VerificationKey | KeyMiss {
    if (kid !== undefined) {
      const list = this.#byKid.get(kid);
      if (list === undefined) return 'unknown';
      if (list.length === 1) return (list[0] as VerificationKey).checks.has(alg) ? (list[0] as VerificationKey) : 'unknown';
      return pick(list, alg);
    }
    // No kid: only an unambiguous key is used (RFC 7515 §4.1.4 makes kid optional; trying every
    // key instead would make verification cost grow with the key set and blur which key signed).
    let hit = this.#noKid.get(alg);
    if (hit === undefined) {
      hit = pick(this.keys, alg);
      this.#noKid.set(alg, hit);
    }
    return hit;
  }
}

function pick(list: readonly VerificationKey[], alg: JwsAlgorithm): VerificationKey | KeyMiss {
  let found: VerificationKey | undefined;
  for (const k of list) {
    if (!k.checks.has(alg)) continue;
    if (found) return 'ambiguous';
    found = k;
  }
  return found ?? 'unknown';
}

/** A JWKS document parsed into keys, plus the problems with keys that were skipped. */
export interface ParsedJwks {
  readonly keys: VerificationKey[];
  readonly problems: { readonly index: number; readonly kid: string | undefined; readonly message: string }[];
}

/**
 * The most keys a JWKS may hold. Issuers publish a handful (the current key, the next, the
 * retired); importing one costs ~0.1 ms of the event loop, so a 512 KiB set of ~2800 keys held
 * every request of the process for ~0.4 s at each fetch (a client's `jwks_uri`, which anyone who
 * may register a client controls, or a compromised issuer's).
 */
export const MAX_JWKS_KEYS = 100;

/**
 * Parse a JWKS document (RFC 7517 §5). Keys that cannot be used (wrong `use`, unsupported type,
 * no allowed algorithm) are reported in `problems` and skipped; a document that is not a JWKS at
 * all, or holds more than {@link MAX_JWKS_KEYS} keys, throws.
 */
export function parseJwks(document: unknown, options: ImportJwkOptions = {}): ParsedJwks {
  if (typeof document !== 'object' || document === null || !Array.isArray((document as { keys?: unknown }).keys)) {
    throw new JwkError('a JWKS is a JSON object with a "keys" array');
  }
  const count = (document as { keys: unknown[] }).keys.length;
  if (count > MAX_JWKS_KEYS) throw new JwkError(`a JWKS holds at most ${MAX_JWKS_KEYS} keys; this one holds ${count}`);
  const keys: VerificationKey[] = [];
  const problems: ParsedJwks['problems'][number][] = [];
  for (const [index, jwk] of (document as { keys: unknown[] }).keys.entries()) {
    try {
      keys.push(importJwk(jwk, options));
    } catch (e) {
      const kid = typeof (jwk as { kid?: unknown })?.kid === 'string' ? (jwk as { kid: string }).kid : undefined;
      problems.push({ index, kid, message: e instanceof Error ? e.message : String(e) });
    }
  }
  return { keys, problems };
}
