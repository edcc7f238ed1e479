/**
 * Secrets at rest and in transit: the master key, private keys sealed with AES-256-GCM, client
 * secrets stored as HMAC-SHA-256 under a key derived from the master key, and the random tokens
 * Tessera hands out (client secrets, refresh tokens) with their prefixes.
 *
 * Client secrets are generated here with 256 bits of entropy, never chosen by a person, so a fast
 * keyed hash is enough: a password hash (scrypt, argon2) would add tens of milliseconds to every
 * token request and protect nothing more.
 *
 * @module
 */
import { Buffer } from 'node:buffer';
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createSecretKey,
  hash,
  hkdfSync,
  type KeyObject,
  randomBytes,
  timingSafeEqual,
} from 'node:crypto';

/** The 32-byte master key that seals private keys and keys the client-secret hash. */
export interface MasterKey {
  readonly key: KeyObject;
}

/**
 * The codes of {@link MasterKeyError}: `master_key_malformed` (not 32 bytes as 64 hex or 43
 * base64url characters, from the text, `TESSERA_MASTER_KEY` or `master.key`),
 * `master_key_file_unsafe` (`master.key` is not a regular file of the user Tessera runs as, or is
 * readable by others), `master_key_unreadable` (`master.key` cannot be read), `master_key_mismatch`
 * (a private key sealed under another master key), `sealed_value_malformed` (a stored value that is
 * not a sealed one).
 */
export const MASTER_KEY_ERROR_CODES = [
  'master_key_malformed',
  'master_key_file_unsafe',
  'master_key_unreadable',
  'master_key_mismatch',
  'sealed_value_malformed',
] as const;

/** The closed union of {@link MasterKeyError} codes. */
export type MasterKeyErrorCode = (typeof MASTER_KEY_ERROR_CODES)[number];

/**
 * Why a master key was refused, with a stable {@link MasterKeyErrorCode}. Never contains the key.
 *
 * @example
 * ```ts
 * import { loadMasterKey, MasterKeyError } from 'tessera/token-service';
 *
 * try {
 *   loadMasterKey('.tessera');
 * } catch (e) {
 *   if (e instanceof MasterKeyError && e.code === 'master_key_file_unsafe') console.error(e.message); // chmod 600 …
 * }
 * ```
 */
export class MasterKeyError extends Error {
  override readonly name = 'MasterKeyError';
  readonly code: MasterKeyErrorCode;

  constructor(code: MasterKeyErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/**
 * Parse a master key as written in `TESSERA_MASTER_KEY` or `master.key`: 32 bytes as 64 hex
 * characters or 43 base64url characters (surrounding whitespace ignored).
 */
export function parseMasterKey(text: string): MasterKey {
  const t = text.trim();
  let bytes: Buffer | undefined;
  if (/^[0-9a-fA-F]{64}$/.test(t)) bytes = Buffer.from(t, 'hex');
  else if (/^[A-Za-z0-9_-]{43}$/.test(t)) bytes = Buffer.from(t, 'base64url');
  if (bytes?.length !== 32) {
    throw new MasterKeyError(
      'master_key_malformed',
      'the master key must be 32 random bytes written as 64 hex or 43 base64url characters; generate one with `openssl rand -hex 32`',
    );
  }
  return { key: createSecretKey(bytes) };
}

/** A new master key and its text form (base64url). */
export function generateMasterKey(): { readonly key: MasterKey; readonly text: string } {
  const bytes = randomBytes(32);
  return { key: { key: createSecretKey(bytes) }, text: bytes.toString('base64url') };
}

function derive(master: MasterKey, info: string): Buffer {
  return Buffer.from(hkdfSync('sha256', master.key.export(), Buffer.alloc(0), info, 32));
}

const SEAL_VERSION = 'v1';

/**
 * Encrypt `plaintext` with AES-256-GCM under a key derived from the master key. `aad` (the key id)
 * binds the ciphertext to its record, so a sealed key copied onto another record does not open.
 */
export function seal(master: MasterKey, plaintext: Uint8Array, aad: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', derive(master, 'tessera seal v1'), iv);
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return [SEAL_VERSION, iv.toString('base64url'), ct.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.');
}

/** Decrypt what {@link seal} produced. @throws {MasterKeyError} when the key or `aad` is wrong. */
export function unseal(master: MasterKey, sealed: string, aad: string): Buffer {
  const [version, iv, ct, tag] = sealed.split('.');
  if (version !== SEAL_VERSION || !iv || ct === undefined || !tag)
    throw new MasterKeyError('sealed_value_malformed', 'unrecognised sealed value');
  try {
    const decipher = createDecipheriv('aes-256-gcm', derive(master, 'tessera seal v1'), Buffer.from(iv, 'base64url'));
    decipher.setAAD(Buffer.from(aad, 'utf8'));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    return Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()]);
  } catch {
    // AES-GCM cannot tell which: a wrong key and an altered value (or one moved to another record,
    // whose `aad` differs) fail the same tag check.
    throw new MasterKeyError(
      'master_key_mismatch',
      'cannot decrypt a private key: the master key is not the one it was sealed with, or the sealed value was altered or moved from another record',
    );
  }
}

/** A 32-byte HMAC key derived from the master key for one purpose (`info` names it; HKDF-SHA-256). */
export function deriveMacKey(master: MasterKey, info: string): KeyObject {
  return createSecretKey(derive(master, info));
}

/** Hashes and checks client secrets with HMAC-SHA-256 under a key derived from the master key. */
export interface SecretHasher {
  hash(secret: string): string;
  /** Constant-time check of `secret` against a stored hash (or a dummy when there is none). */
  verify(secret: string, stored: string | Buffer | null): boolean;
}

export function createSecretHasher(master: MasterKey): SecretHasher {
  const key = createSecretKey(derive(master, 'tessera client secret v1'));
  const mac = (secret: string) => createHmac('sha256', key).update(secret, 'utf8').digest();
  const dummy = mac('tessera dummy secret');
  return {
    hash: (secret) => mac(secret).toString('base64url'),
    verify(secret, stored) {
      const presented = mac(secret);
      const expected = stored === null ? undefined : typeof stored === 'string' ? Buffer.from(stored, 'base64url') : stored;
      // Compare against a dummy when there is nothing to compare with, so both paths cost the same.
      const ok = timingSafeEqual(presented, expected?.length === 32 ? expected : dummy);
      return ok && expected?.length === 32;
    },
  };
}

/** Prefixes make leaked credentials recognisable to secret scanners. */
export const CLIENT_SECRET_PREFIX = 'tcs_';
export const REFRESH_TOKEN_PREFIX = 'trt_';

/** 256 random bits, base64url, behind a prefix. */
export function randomSecret(prefix: string): string {
  return `${prefix}${randomBytes(32).toString('base64url')}`;
}

/** SHA-256, base64url: how refresh tokens are stored (they carry 256 random bits; no key needed). */
export function sha256(value: string): string {
  return hash('sha256', value, 'base64url');
}

/** How a token is named in logs and audit events: the first 16 characters of its SHA-256. */
export function tokenHash(value: string): string {
  return sha256(value).slice(0, 16);
}
