/**
 * What a secret looks like, for the places that record a value a caller chose (an audit path, a
 * request id, an MCP tool name): a JWS compact serialization (`eyJ…` and two more dotted
 * base64url segments) or one of Tessera's prefixed secrets (`trt_` refresh token, `tcs_` client
 * secret, `tac_` authorization code, `tgw_` generated gateway token). One detector, so every
 * recorded field refuses the same shapes.
 *
 * @module
 */

// A token starts after a character that cannot be one of its own, or after a percent-escape
// (`Bearer%20eyJ…`, `%2Ftgw_…`), whose last hex digit would otherwise pass for one.
const SHAPE =
  '(?:(?<![A-Za-z0-9_-])|(?<=%[0-9A-Fa-f]{2}))(?:eyJ[A-Za-z0-9_-]*(?:\\.[A-Za-z0-9_-]+){2,}|t(?:rt|cs|ac|gw)_[A-Za-z0-9_-]{20,})(?![A-Za-z0-9_-])';
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

/**
 * `value` with printable ASCII in it percent-decoded (`%2B`, `%3D`, `%6F`), and for each character
 * of that text the index in `value` it was read from (and `value.length` last); `at` is omitted
 * when `value` holds no `%`, as the text is `value` itself. Each recorded value is decoded once,
 * whatever the number of secrets it is compared with: this runs for every request's path and
 * query keys, before the request is authenticated.
 */
function asciiDecoded(value: string): { readonly text: string; readonly at?: readonly number[] } {
  if (value.indexOf('%') < 0) return { text: value };
  let text = '';
  const at: number[] = [];
  for (let i = 0; i < value.length; ) {
    if (value.charCodeAt(i) === 0x25 && i + 2 < value.length) {
      const hi = hexValue(value.charCodeAt(i + 1));
      const lo = hexValue(value.charCodeAt(i + 2));
      const byte = hi * 16 + lo;
      if (hi >= 0 && lo >= 0 && byte > 0x20 && byte < 0x7f) {
        text += String.fromCharCode(byte);
        at.push(i);
        i += 3;
        continue;
      }
    }
    text += value[i];
    at.push(i);
    i++;
  }
  at.push(value.length);
  return { text, at };
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const l = c | 0x20;
  return l >= 0x61 && l <= 0x66 ? l - 0x61 + 10 : -1;
}

/**
 * `value` with every occurrence of each of `secrets` of at least {@link SECRET_ANYWHERE_MIN}
 * characters written `*`, also where printable ASCII in it is percent-encoded; occurrences that
 * overlap are written as one `*`.
 */
function withoutLongSecrets(value: string, secrets: readonly string[]): string {
  const { text, at } = asciiDecoded(value);
  let spans: [number, number][] | undefined;
  for (const secret of secrets) {
    if (secret.length < SECRET_ANYWHERE_MIN) continue;
    for (let k = text.indexOf(secret); k >= 0; k = text.indexOf(secret, k + secret.length)) {
      (spans ??= []).push([k, k + secret.length]);
    }
  }
  if (spans === undefined) return value;
  spans.sort((a, b) => a[0] - b[0]);
  const from = (k: number) => (at === undefined ? k : (at[k] as number));
  let out = '';
  let end = -1;
  for (const [s, e] of spans) {
    if (s < end) {
      end = Math.max(end, e);
      continue;
    }
    out += `${value.slice(end < 0 ? 0 : from(end), from(s))}*`;
    end = e;
  }
  return out + value.slice(from(end));
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
  if (isSecret(value, secrets)) return true;
  let text: string | undefined;
  for (const secret of secrets) {
    if (secret.length >= SECRET_ANYWHERE_MIN && (text ??= asciiDecoded(value).text).includes(secret)) return true;
  }
  return false;
}

/**
 * Whether `value` is one of `secrets`, as it is or percent-decoded (`plain`): the one whole-value
 * comparison, for {@link holdsSecret}, {@link withoutSecrets} and the secrets a compiled
 * {@link SecretIndex} lacks.
 */
function isSecret(value: string, secrets: readonly string[], plain: string = decoded(value)): boolean {
  for (const secret of secrets) if (secret !== '' && (value === secret || plain === secret)) return true;
  return false;
}

/**
 * `value` with each `/`-separated segment that `isSecretPart` holds for written `*` (an empty
 * segment, or one that is `*` already, is not looked at); `value` itself when there is none.
 */
function withSecretSegments(value: string, isSecretPart: (part: string) => boolean): string {
  const parts = value.split('/');
  let changed = false;
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] as string;
    if (part !== '' && part !== '*' && isSecretPart(part)) {
      parts[i] = '*';
      changed = true;
    }
  }
  return changed ? parts.join('/') : value;
}

/**
 * `value` (a path, a query key) with each of `secrets` written `*`: anywhere for one of at least
 * 16 characters (a base64 static token spans segments: `/` is one of its characters), as a whole
 * `/`-separated segment for a shorter one.
 */
export function withoutSecrets(value: string, secrets: readonly string[]): string {
  let long = false;
  let short = false;
  for (const secret of secrets) {
    if (secret.length >= SECRET_ANYWHERE_MIN) long = true;
    else if (secret !== '') short = true;
  }
  const out = long ? withoutLongSecrets(value, secrets) : value;
  // The long secrets are written `*` already: a segment is left to compare whole.
  return short ? withSecretSegments(out, (part) => isSecret(part, secrets)) : out;
}

/**
 * Secrets compiled once (per gateway configuration) for whole-value lookup: each secret and its
 * percent-decoded form in a set, so a recorded value is compared with all of them in O(1), and
 * those of at least {@link SECRET_ANYWHERE_MIN} characters, still searched for anywhere.
 */
export interface SecretIndex {
  readonly list: readonly string[];
  readonly whole: ReadonlySet<string>;
  readonly long: readonly string[];
  /** Whether one is shorter than {@link SECRET_ANYWHERE_MIN} (compared segment by segment). */
  readonly short: boolean;
}

/** `secrets` as a {@link SecretIndex}. */
export function secretIndex(secrets: readonly string[]): SecretIndex {
  const whole = new Set<string>();
  const long: string[] = [];
  let short = false;
  for (const secret of secrets) {
    if (secret === '') continue;
    whole.add(secret);
    whole.add(decoded(secret));
    if (secret.length >= SECRET_ANYWHERE_MIN) long.push(secret);
    else short = true;
  }
  return { list: secrets, whole, long, short };
}

/**
 * `index` with `secrets` (a request's presented credentials and the secrets `index` was compiled
 * from) added: the few `index` lacks are kept in a list, so the compiled set is not copied; `index`
 * itself when `secrets` is its own list.
 */
function withSecrets(index: SecretIndex, secrets: readonly string[]): SecretIndex & { readonly extra: readonly string[] } {
  if (secrets === index.list || secrets.length === 0) return { ...index, extra: [] };
  const extra: string[] = [];
  let long: string[] | undefined;
  let short = index.short;
  for (const secret of secrets) {
    if (secret === '' || index.whole.has(secret)) continue;
    extra.push(secret);
    if (secret.length >= SECRET_ANYWHERE_MIN) (long ??= [...index.long]).push(secret);
    else short = true;
  }
  return { list: index.list, whole: index.whole, long: long ?? index.long, short, extra };
}

/** Whether `value` is one of the secrets, as it is or percent-decoded. */
function isIndexed(value: string, index: SecretIndex & { readonly extra: readonly string[] }): boolean {
  if (index.whole.has(value)) return true;
  const plain = decoded(value);
  return (plain !== value && index.whole.has(plain)) || isSecret(value, index.extra, plain);
}

/**
 * Query keys as the audit trail may record them, each as {@link holdsSecret} and
 * {@link withoutSecrets} would write it (`*` when it is or holds a secret, a short secret as a
 * whole `/`-separated segment `*`), with each key looked up in `index` (the configured secrets,
 * compiled once) instead of compared with every secret; `secrets` are the request's. The index
 * also holds each configured secret's percent-decoded form, so a key equal to a decoded secret
 * (`aAb` for a configured `a%41b`) is `*` here where {@link withoutSecrets} keeps it: this errs
 * towards hiding.
 */
export function keysWithoutSecrets(
  keys: readonly string[],
  secrets: readonly string[],
  index: SecretIndex = secretIndex(secrets),
): string[] {
  const ix = withSecrets(index, secrets);
  return keys.map((key) => {
    if (isIndexed(key, ix)) return '*';
    if (ix.long.length > 0) {
      const text = asciiDecoded(key).text;
      for (const secret of ix.long) if (text.includes(secret)) return '*';
    }
    if (!ix.short || key.indexOf('/') < 0) return key;
    return withSecretSegments(key, (part) => isIndexed(part, ix));
  });
}

/**
 * A name a caller chose (an MCP tool, a JSON-RPC method) as the audit trail may record it: `*` when
 * it holds a token or one of `secrets` (see {@link holdsSecret}), else as it is.
 */
export function recordableName(value: string, secrets: readonly string[]): string {
  return holdsToken(value) || holdsSecret(value, secrets) ? '*' : value;
}
