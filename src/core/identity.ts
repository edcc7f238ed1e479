/**
 * The subjects (and e-mail addresses) Tessera puts in tokens: printable, without spaces or control
 * characters, at most 256 characters. The login paths (OpenID Connect, trusted headers) and
 * development minting (`tessera token mint --subject`) apply the same rule, so no path writes a
 * subject into a token, a grant or the audit trail that another would refuse.
 *
 * @module
 */

/** Printable ASCII without space, or any character from U+00A0 to U+FFFF; 1 to 256 of them. */
const IDENTITY = /^[\x21-\x7e\u00a0-\uffff]{1,256}$/u;

/** What {@link validIdentity} requires, for a refusal that says what to write. */
export const IDENTITY_RULE = 'a subject must be 1-256 printable characters, without spaces or control characters';

/** Whether `value` may be a token's subject (or e-mail address). */
export function validIdentity(value: string): boolean {
  return IDENTITY.test(value);
}
