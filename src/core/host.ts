/**
 * The authority of a request as the Host header (RFC 9110 §7.2) or a trusted X-Forwarded-Host
 * names it.
 */

/** `host[:port]`, a bracketed IPv6 literal with an optional port, nothing else. */
const HOST_HEADER = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]{1,5})?$/;

/**
 * True when `value` is a well-formed Host (or X-Forwarded-Host) value. Node accepts any visible
 * characters there; a `/`, `?`, `#` or `@` in it would move the path a URL built from it shows.
 */
export function validHost(value: string): boolean {
  return HOST_HEADER.test(value);
}
