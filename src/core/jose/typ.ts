/**
 * The `typ` header parameter (RFC 7515 §4.1.9).
 *
 * @module
 */

/**
 * A `typ` value as compared: a media type is case-insensitive, and one without a `/` stands for
 * `application/<typ>`, so `DPoP+JWT` and `application/dpop+jwt` are both `dpop+jwt`.
 *
 * @example
 * ```ts
 * normalizeTyp('application/AT+JWT'); // 'at+jwt'
 * ```
 */
export function normalizeTyp(typ: string): string {
  const lower = typ.toLowerCase();
  return lower.startsWith('application/') ? lower.slice(12) : lower;
}
