/**
 * What a secret looks like, for the places that record a value a caller chose (an audit path, a
 * request id, an MCP tool name): a JWS compact serialization (`eyJ…` and two more dotted
 * base64url segments) or one of Tessera's prefixed secrets (`trt_` refresh token, `tcs_` client
 * secret, `tac_` authorization code, `tgw_` generated gateway token). One detector, so every
 * recorded field refuses the same shapes.
 *
 * @module
 */

const SHAPE = '(?<![A-Za-z0-9_-])(?:eyJ[A-Za-z0-9_-]*(?:\\.[A-Za-z0-9_-]+){2,}|t(?:rt|cs|ac|gw)_[A-Za-z0-9_-]{20,})(?![A-Za-z0-9_-])';
const TOKENS = new RegExp(SHAPE, 'g');
const TOKEN = new RegExp(SHAPE);

/** Whether `value` holds a token (see the module description) anywhere in it. */
export function holdsToken(value: string): boolean {
  return (value.includes('eyJ') || value.includes('_')) && TOKEN.test(value);
}

/** `value` with every token in it (see the module description) written `*`. */
export function withoutTokens(value: string): string {
  return value.includes('eyJ') || value.includes('_') ? value.replace(TOKENS, '*') : value;
}

/**
 * A secret this long or longer is written `*` wherever it appears in a recorded value; a shorter
 * one (an operator's short upstream API key, whatever a caller sends as a credential) only where it
 * is a whole path segment, query key or value, so a caller cannot blank out a path by presenting
 * a few of its letters as a token.
 */
const SECRET_ANYWHERE_MIN = 16;

const HEX2 = /^[0-9A-Fa-f]{2}$/;

/** `value` with every occurrence of `secret` written `*`, also where printable ASCII in it is percent-encoded (`%2B`, `%3D`, `%6F`). */
function replaceSecret(value: string, secret: string): string {
  if (value.indexOf('%') < 0) return value.includes(secret) ? value.split(secret).join('*') : value;
  let decoded = '';
  const at: number[] = [];
  for (let i = 0; i < value.length; ) {
    if (value.charCodeAt(i) === 0x25 && HEX2.test(value.slice(i + 1, i + 3))) {
      const byte = Number.parseInt(value.slice(i + 1, i + 3), 16);
      if (byte > 0x20 && byte < 0x7f) {
        decoded += String.fromCharCode(byte);
        at.push(i);
        i += 3;
        continue;
      }
    }
    decoded += value[i];
    at.push(i);
    i++;
  }
  at.push(value.length);
  let k = decoded.indexOf(secret);
  if (k < 0) return value;
  let out = '';
  let last = 0;
  while (k >= 0) {
    out += `${value.slice(last, at[k])}*`;
    last = at[k + secret.length] as number;
    k = decoded.indexOf(secret, k + secret.length);
  }
  return out + value.slice(last);
}

/** `value`, percent-decoded when it can be; `value` itself otherwise. */
function decoded(value: string): string {
  if (value.indexOf('%') < 0) return value;
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/**
 * Whether `value` is one of `secrets` (the credential a request presented, the secrets the
 * operator configured), as it is or percent-decoded, or holds one of at least 16 characters.
 */
export function holdsSecret(value: string, secrets: readonly string[]): boolean {
  for (const secret of secrets) {
    if (secret === '') continue;
    if (value === secret || decoded(value) === secret) return true;
    if (secret.length >= SECRET_ANYWHERE_MIN && replaceSecret(value, secret) !== value) return true;
  }
  return false;
}

/**
 * `value` (a path, a query key) with each of `secrets` written `*`: anywhere for one of at least
 * 16 characters (a base64 static token spans segments: `/` is one of its characters), as a whole
 * `/`-separated segment for a shorter one.
 */
export function withoutSecrets(value: string, secrets: readonly string[]): string {
  let out = value;
  let short = false;
  for (const secret of secrets) {
    if (secret.length >= SECRET_ANYWHERE_MIN) out = replaceSecret(out, secret);
    else if (secret !== '') short = true;
  }
  if (!short) return out;
  const parts = out.split('/');
  let changed = false;
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] as string;
    if (part !== '' && part !== '*' && holdsSecret(part, secrets)) {
      parts[i] = '*';
      changed = true;
    }
  }
  return changed ? parts.join('/') : out;
}

/**
 * A name a caller chose (an MCP tool, a JSON-RPC method) as the audit trail may record it: `*` when
 * it holds a token or one of `secrets` (see {@link holdsSecret}), else as it is.
 */
export function recordableName(value: string, secrets: readonly string[]): string {
  return holdsToken(value) || holdsSecret(value, secrets) ? '*' : value;
}
