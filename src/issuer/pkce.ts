/**
 * PKCE (RFC 7636) with the S256 method only: `plain` sends the verifier itself as the challenge,
 * so anyone who sees the authorization request can redeem the code (OAuth 2.1 §4.1.1 and RFC 9700
 * §2.1.1 tell servers to refuse it).
 *
 * @module
 */
import { Buffer } from 'node:buffer';
import { hash, timingSafeEqual } from 'node:crypto';

/** RFC 7636 §4.1: 43-128 unreserved characters. */
const VERIFIER = /^[A-Za-z0-9._~-]{43,128}$/;
/** base64url of a SHA-256: 43 characters, no padding. */
const CHALLENGE = /^[A-Za-z0-9_-]{43}$/;

export function isVerifier(value: string): boolean {
  return VERIFIER.test(value);
}

export function isS256Challenge(value: string): boolean {
  return CHALLENGE.test(value);
}

/** RFC 7636 §4.6: `BASE64URL(SHA256(ASCII(code_verifier))) == code_challenge`, compared in constant time. */
export function verifierMatches(verifier: string, challenge: string): boolean {
  const computed = Buffer.from(hash('sha256', verifier, 'base64url'), 'latin1');
  const expected = Buffer.from(challenge, 'latin1');
  return computed.length === expected.length && timingSafeEqual(computed, expected);
}
