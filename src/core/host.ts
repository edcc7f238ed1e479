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

/**
 * `scheme://<address>:<port>` of a connection's local end: an IPv4-mapped IPv6 address as IPv4,
 * an IPv6 one in brackets, and `host.invalid` (RFC 6761; no DPoP proof names it) for a socket
 * that has no address any more.
 */
export function localOrigin(scheme: string, address: string | undefined, port: number | undefined): string {
  if (address === undefined || address === '') return `${scheme}://host.invalid`;
  const plain = address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
  return `${scheme}://${plain.includes(':') ? `[${plain}]` : plain}:${port}`;
}

/**
 * The entry of an X-Forwarded-Host or -Proto value that the trusted proxy nearest the server
 * wrote: the rightmost (Node joins repeated lines with `, `), as for X-Forwarded-For. A proxy that
 * appends to what the caller sent (Apache httpd's mod_proxy does for X-Forwarded-Host) puts the
 * caller's claim on the left: the leftmost entry would let the caller choose the host routes are
 * matched by and the URL a DPoP proof must name. `undefined` when absent or empty.
 */
export function lastForwardedEntry(v: string | readonly string[] | undefined): string | undefined {
  if (v === undefined) return undefined;
  const s = typeof v === 'string' ? v : v.join(',');
  const comma = s.lastIndexOf(',');
  return (comma < 0 ? s : s.slice(comma + 1)).trim() || undefined;
}
