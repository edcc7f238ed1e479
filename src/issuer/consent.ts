/**
 * Anti-CSRF tokens of the consent page (RFC 6749 §10.12, RFC 9700 §4.7): the approval form carries
 * a token that is a MAC, under a key derived from the master key, of the exact authorization
 * request (its query string, with what the page showed for it), the person who was shown the
 * page and an expiry. So a token works
 * only for the request and the person it was made for, only until `consent_ttl`, and only once:
 * an attacker's page cannot post an approval for a victim (it cannot read the victim's token), a
 * token from another request or another person does not verify, and nothing needs storing until
 * the form is answered. Stateless, so any instance can answer a page another one rendered.
 *
 * @module
 */
import { Buffer } from 'node:buffer';
import { createHmac, type KeyObject, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Store } from '../store/contract.ts';
import { sha256 } from './secrets.ts';

const FORMAT = /^(\d{1,12})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})$/;

export class ConsentTokens {
  readonly #key: KeyObject;
  readonly #ttl: number;
  readonly #store: Pick<Store, 'useOnce'>;
  readonly #now: () => number;

  /** `now` in epoch seconds (the service's clock). */
  constructor(key: KeyObject, ttl: number, store: Pick<Store, 'useOnce'>, now: () => number) {
    this.#key = key;
    this.#ttl = ttl;
    this.#store = store;
    this.#now = now;
  }

  #mac(exp: string, nonce: string, subject: string, request: string): Buffer {
    // Length-prefixed fields: no two (subject, request) pairs serialise alike.
    return createHmac('sha256', this.#key)
      .update(`tessera consent v1\n${exp}\n${nonce}\n${subject.length}:${subject}\n${request.length}:${request}`, 'utf8')
      .digest();
  }

  /** A token for the form that answers `request` (the authorization request's query string) as `subject`. */
  issue(subject: string, request: string): string {
    const now = this.#now();
    const exp = String(now + this.#ttl);
    const nonce = randomBytes(16).toString('base64url');
    return `${exp}.${nonce}.${this.#mac(exp, nonce, subject, request).toString('base64url')}`;
  }

  /**
   * When the page carrying `token` was shown (epoch seconds), read from its expiry: what a form
   * answers is that page, so what the page needed (a sign-in fresh enough) is judged as of then.
   * Unchecked here: a token whose time was altered fails {@link consume}. `undefined` for no token.
   */
  shownAt(token: string): number | undefined {
    const m = FORMAT.exec(token);
    return m ? Number(m[1]) - this.#ttl : undefined;
  }

  /**
   * True once for a token made for this request and person that has not expired; false for
   * anything else, including the second use of a good token.
   */
  async consume(token: string, subject: string, request: string): Promise<boolean> {
    const now = this.#now();
    const m = FORMAT.exec(token);
    if (!m) return false;
    const [, exp, nonce, mac] = m as unknown as [string, string, string, string];
    const expected = this.#mac(exp, nonce, subject, request);
    const given = Buffer.from(mac, 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return false;
    if (Number(exp) <= now) return false;
    return this.#store.useOnce(`consent:${sha256(token)}`, Number(exp), now);
  }
}
