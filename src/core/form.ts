/**
 * `application/x-www-form-urlencoded` as OAuth reads it: UTF-8 only (RFC 6749 Appendix B).
 *
 * `URLSearchParams` decodes every byte sequence that is not UTF-8 (raw, or percent-encoded such as
 * `%FF` or an overlong `%C0%AF`) to U+FFFD, so different byte strings would read as one parameter
 * value. {@link parseUtf8Form} refuses them instead, and {@link declaredCharsetIsUtf8} refuses a
 * body labelled with another charset, which would otherwise be silently read as UTF-8.
 *
 * @module
 */
import { Buffer, isUtf8 } from 'node:buffer';

/**
 * Text that may hold a non-UTF-8 sequence: a U+FFFD (what decoding makes of invalid raw bytes) or a
 * percent-encoded byte >= 0x80. Form bodies rarely have either, so the strict check is rarely run.
 */
const SUSPECT = /\uFFFD|%[89A-Fa-f]/;

function hex(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  c |= 0x20;
  return c >= 0x61 && c <= 0x66 ? c - 0x57 : -1;
}

/**
 * The bytes `bytes` percent-decodes to, as the WHATWG urlencoded parser decodes them (a `%` not
 * followed by two hex digits stays as it is). Separators are kept: they are ASCII, so they never
 * join the bytes of two names or values into one valid sequence.
 */
function percentDecode(bytes: Uint8Array): Uint8Array {
  const out = Buffer.allocUnsafe(bytes.length);
  let n = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i] as number;
    if (b === 0x25 && i + 2 < bytes.length) {
      const hi = hex(bytes[i + 1] as number);
      const lo = hex(bytes[i + 2] as number);
      if (hi >= 0 && lo >= 0) {
        out[n++] = (hi << 4) | lo;
        i += 2;
        continue;
      }
    }
    out[n++] = b;
  }
  return out.subarray(0, n);
}

/**
 * Parse a form body (or a URL query), or `undefined` when its bytes or its percent-decoded bytes
 * are not UTF-8. A string is taken as already decoded text (a URL query): only its percent-encoded
 * bytes are checked. A literal `%EF%BF%BD` is a real U+FFFD, valid UTF-8, and is accepted.
 */
export function parseUtf8Form(body: Uint8Array | string): URLSearchParams | undefined {
  const text =
    typeof body === 'string'
      ? body
      : Buffer.isBuffer(body)
        ? body.toString('utf8')
        : Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8');
  if (SUSPECT.test(text)) {
    const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
    // Both: a raw lead byte followed by `%A9` is valid only once decoded, yet URLSearchParams reads
    // the raw byte as U+FFFD first.
    if (!isUtf8(bytes) || !isUtf8(percentDecode(bytes))) return undefined;
  }
  return new URLSearchParams(text);
}

/** RFC 9110 §5.6.6: `; name=value` with a token or quoted-string value, optional whitespace around `;`. */
const PARAMETER = /[ \t]*;[ \t]*(?:([!#$%&'*+.^_`|~0-9A-Za-z-]+)=([!#$%&'*+.^_`|~0-9A-Za-z-]+|"(?:[^"\\]|\\.)*"))?/y;

/**
 * False when a `Content-Type` header value carries a `charset` parameter other than `utf-8` (or
 * `utf8`; case-insensitive, quoted or not), names charset more than once with another value, or has
 * parameters that cannot be read (a charset could hide in them). True without parameters.
 */
export function declaredCharsetIsUtf8(contentType: string): boolean {
  const semi = contentType.indexOf(';');
  if (semi < 0) return true;
  let i = semi;
  while (i < contentType.length) {
    PARAMETER.lastIndex = i;
    const m = PARAMETER.exec(contentType);
    if (m === null || m[0].length === 0) return contentType.slice(i).trim() === '';
    i = PARAMETER.lastIndex;
    if (m[1] === undefined || m[1].toLowerCase() !== 'charset') continue;
    let value = m[2] as string;
    if (value.startsWith('"')) value = value.slice(1, -1).replace(/\\(.)/g, '$1');
    const charset = value.toLowerCase();
    // `utf8` is a label of the same encoding (WHATWG Encoding), as the gateway's MCP check accepts.
    if (charset !== 'utf-8' && charset !== 'utf8') return false;
  }
  return true;
}
