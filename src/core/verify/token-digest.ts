/**
 * A token's SHA-256, made when first wanted.
 *
 * Hashing a 700-byte token costs about as much as everything else the verifier does to a JWT
 * besides the signature, and most verifications never need it: a JWT's result-cache entry is found
 * by the last characters of its signature (see `validate` in verifier.ts), and a principal's
 * `tokenHash` is read only by whoever logs it or keys on it (the gateway's audit events, rate
 * limits, minted upstream credentials and MCP sessions). So the digest is made on the first read,
 * and the token is let go then; until then a principal holds its token.
 */
import { hash as cryptoHash } from 'node:crypto';
import { binaryBase64url12 } from '../jose/base64url.ts';

export class TokenDigest {
  #token: string | undefined;
  #binary: string | undefined;
  #short: string | undefined;

  constructor(token: string) {
    this.#token = token;
  }

  /** The SHA-256 as a 'binary' (latin1) string, a byte per character. */
  get binary(): string {
    if (this.#binary === undefined) {
      this.#binary = cryptoHash('sha256', this.#token as string, 'binary');
      this.#token = undefined;
    }
    return this.#binary;
  }

  /** The first 16 characters of the SHA-256 in base64url: a principal's `tokenHash`. */
  get short(): string {
    if (this.#short === undefined) this.#short = binaryBase64url12(this.binary);
    return this.#short;
  }
}
