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
