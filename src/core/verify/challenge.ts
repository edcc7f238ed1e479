/**
 * `WWW-Authenticate` challenges (RFC 6750 §3, RFC 9449 §7.1, RFC 9728 §5.1).
 *
 * @module
 */
import type { TesseraError } from '../errors.ts';

/** How to render the challenge for a resource. */
export interface ChallengeOptions {
  /** `realm` attribute. */
  readonly realm?: string;
  /** RFC 9728 protected resource metadata URL, advertised as `resource_metadata`. */
  readonly resourceMetadata?: string;
  /** Schemes the resource accepts. Default: Bearer only. */
  readonly schemes?: readonly ('Bearer' | 'DPoP')[];
  /** For the DPoP challenge: the `algs` the resource accepts for proofs. */
  readonly dpopAlgorithms?: readonly string[];
}

// RFC 7230 quoted-string: escape backslash and double quote; drop control characters.
function quote(value: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this removes
  return `"${value.replace(/[\\"]/g, '\\$&').replace(/[\x00-\x1f\x7f]/g, '')}"`;
}

/**
 * Render the `WWW-Authenticate` values for an error (one per accepted scheme). The error
 * attributes go on the challenge of the scheme the failure concerns: DPoP proof errors and
 * `use_dpop_nonce` on the DPoP challenge, everything else on each challenge.
 *
 * @example
 * ```ts
 * challenges(new TesseraError('scope_insufficient', { scope: 'api:write' }), { realm: 'api' });
 * // ['Bearer realm="api", error="insufficient_scope", error_description="…", scope="api:write"']
 * ```
 */
export function challenges(error: TesseraError | undefined, options: ChallengeOptions = {}): string[] {
  const schemes = options.schemes ?? ['Bearer'];
  const dpopOnly = error?.error === 'invalid_dpop_proof' || error?.error === 'use_dpop_nonce';
  return schemes.map((scheme) => {
    const attrs: string[] = [];
    if (options.realm !== undefined) attrs.push(`realm=${quote(options.realm)}`);
    if (scheme === 'DPoP' && options.dpopAlgorithms?.length) attrs.push(`algs=${quote(options.dpopAlgorithms.join(' '))}`);
    const carriesError = error?.error != null && error.status < 500 && (!dpopOnly || scheme === 'DPoP');
    if (carriesError && error) {
      attrs.push(`error=${quote(error.error as string)}`, `error_description=${quote(error.description)}`);
      if (error.details.scope) attrs.push(`scope=${quote(error.details.scope)}`);
    }
    if (options.resourceMetadata !== undefined) attrs.push(`resource_metadata=${quote(options.resourceMetadata)}`);
    return attrs.length ? `${scheme} ${attrs.join(', ')}` : scheme;
  });
}

/** One header value combining every challenge (RFC 9110 §11.6.1 allows a comma-separated list). */
export function challenge(error: TesseraError | undefined, options: ChallengeOptions = {}): string {
  return challenges(error, options).join(', ');
}

function withAttribute(rendered: string, attr: string): string {
  return rendered.includes(' ') ? `${rendered}, ${attr}` : `${rendered} ${attr}`;
}

/**
 * Add `resource_metadata` (RFC 9728 §5.1) to a rendered challenge that lacks it: MCP routes learn
 * their metadata URL from the request, after the verifier rendered the rest.
 */
export function withResourceMetadata(rendered: string, url: string): string {
  if (rendered.includes('resource_metadata=')) return rendered;
  return withAttribute(rendered, `resource_metadata=${quote(url)}`);
}

/**
 * Add `scope` (RFC 6750 §3: space-delimited scopes) to a rendered challenge. Only for a challenge
 * rendered without one: an `insufficient_scope` challenge names its own.
 */
export function withScope(rendered: string, scope: string): string {
  return withAttribute(rendered, `scope=${quote(scope)}`);
}
