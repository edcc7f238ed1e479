/**
 * Reading the request headers every token-service endpoint with a body checks alike (the token,
 * revocation, introspection and registration endpoints, the admin API and the consent form).
 *
 * @module
 */
import type { IncomingMessage } from 'node:http';

/** Whether the request carries header `name` (lower case) more than once. */
export function sentTwice(req: IncomingMessage, name: string): boolean {
  // rawHeaders, not headersDistinct: that getter copies every header of the request.
  const raw = req.rawHeaders;
  let seen = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const n = raw[i] as string;
    if (n.length === name.length && n.toLowerCase() === name && ++seen > 1) return true;
  }
  return false;
}

/**
 * The request's media type, lower case; `''` without a Content-Type, or with more than one: Node
 * keeps the first and drops the others, so a body labelled twice (a form and a form in another
 * charset, or JSON) would be read by whichever label came first.
 */
export function mediaType(req: IncomingMessage): string {
  const value = req.headers['content-type'];
  if (value === undefined || sentTwice(req, 'content-type')) return '';
  return value.split(';')[0]?.trim().toLowerCase() ?? '';
}

/**
 * Whether the request body carries a content coding (RFC 9110 §8.4): a `Content-Encoding` naming
 * anything but `identity`, in any of its headers. Nothing here decodes one, so such a body would be
 * read as identity while whatever honours the label (a proxy, a log) sees another body.
 */
export function contentCoded(req: IncomingMessage): boolean {
  if (req.headers['content-encoding'] === undefined) return false;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    if ((raw[i] as string).toLowerCase() !== 'content-encoding') continue;
    // A list (RFC 9110 §5.6.1): empty elements are allowed and name no coding.
    for (const coding of (raw[i + 1] as string).split(',')) {
      const c = coding.trim().toLowerCase();
      if (c !== '' && c !== 'identity') return true;
    }
  }
  return false;
}
