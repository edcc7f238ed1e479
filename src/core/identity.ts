/**
 * The subjects (and e-mail addresses) Tessera puts in tokens: printable, without spaces or control
 * characters, at most 256 characters. The login paths (OpenID Connect, trusted headers) and
 * development minting (`tessera token mint --subject`) apply the same rule, so no path writes a
 * subject into a token, a grant or the audit trail that another would refuse.
 *
 * @module
 */

/**
 * What a subject may not hold: a space of any kind (`\p{White_Space}`: U+00A0, U+3000, …), a
 * control character (Cc), a format character (Cf: the bidi overrides U+202E and isolates U+2066,
 * zero-width characters, U+FEFF, the soft hyphen, tags), a line or paragraph separator (Zl, Zp:
 * U+2028, U+2029) or a lone surrogate (Cs). A subject must read in a log, a consent page or
 * `tessera trace` as it is recorded: `admin\u202Etxt.exe` would show as `adminexe.txt`. As for
 * client names (issuer/clients.ts), characters above U+FFFF (emoji, supplementary scripts) are
 * allowed.
 */
const REFUSED = /[\p{White_Space}\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/u;

/** The longest subject, in code points (an emoji is one; up to 1024 bytes of UTF-8). */
const IDENTITY_MAX = 256;

/** What {@link validIdentity} requires, for a refusal that says what to write. */
export const IDENTITY_RULE = 'a subject must be 1-256 printable characters, without spaces, control or format characters';

/** Whether `value` may be a token's subject (or e-mail address). */
export function validIdentity(value: string): boolean {
  // A code point is one or two UTF-16 units: more than twice the limit cannot fit.
  if (value.length === 0 || value.length > 2 * IDENTITY_MAX || REFUSED.test(value)) return false;
  if (value.length <= IDENTITY_MAX) return true;
  let n = 0;
  for (const _ of value) if (++n > IDENTITY_MAX) return false;
  return true;
}

/**
 * A client id: 1-128 letters, digits, `.`, `_` or `-`, starting with a letter or digit. The rule
 * `tessera clients add` applies, and the one configuration naming clients (`issuers[].exchange_clients`) checks.
 */
export const CLIENT_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
