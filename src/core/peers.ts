/**
 * Peer allowlists (`gateway.trust_proxy`, `token_service.trust_proxy`, `forward_auth.allowed_peers`,
 * `operations.metrics_allowed_peers`, `trusted_header.allowed_peers`): addresses and CIDRs, parsed
 * once into a BlockList; and the client's address behind trusted proxies ({@link forwardedClient}).
 *
 * @module
 */
import { BlockList, isIP } from 'node:net';
import type { ConfigIssue } from '../core/errors.ts';

/** Parse addresses and CIDRs into a BlockList used as an allowlist. */
export function peerList(entries: readonly string[], at: string, issues: ConfigIssue[]): BlockList {
  const list = new BlockList();
  for (const [i, entry] of entries.entries()) {
    const [addr, bits, extra] = entry.split('/');
    const family = isIP(addr ?? '');
    if (family === 0 || extra !== undefined) {
      issues.push({ path: `${at}[${i}]`, message: `"${entry}" is not an IP address or CIDR (10.0.0.0/8, ::1)` });
      continue;
    }
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (bits === undefined) list.addAddress(addr as string, type);
    else {
      const n = Number(bits);
      if (!Number.isInteger(n) || n < 0 || n > (family === 4 ? 32 : 128)) {
        issues.push({ path: `${at}[${i}]`, message: `"${entry}" has an invalid prefix length` });
        continue;
      }
      list.addSubnet(addr as string, n, type);
    }
  }
  return list;
}

/**
 * The entries of a peer list that admit every address of their family (`0.0.0.0/0`, `::/0`, any
 * address with a /0 prefix) or every IPv4 address through its IPv4-mapped IPv6 form (an IPv6
 * prefix of /96 or shorter holding `::ffff:0:0/96`: `::ffff:0:0/96`, `::/80`; an IPv4 peer is
 * checked against IPv6 entries in that form), each as a warning naming its path and what `means`
 * for the list.
 */
export function catchAllWarnings(entries: readonly string[], at: string, means: string): string[] {
  const out: string[] = [];
  for (const [i, entry] of entries.entries()) {
    const [addr = '', bits, extra] = entry.split('/');
    const family = isIP(addr);
    if (family === 0 || extra !== undefined || bits === undefined || bits.trim() === '') continue;
    const n = Number(bits);
    if (n === 0) out.push(`${at}[${i}] "${entry}" is every IPv${family} address: ${means}`);
    else if (family === 6 && Number.isInteger(n) && n > 0 && n <= 96 && holdsMappedIpv4(addr, n)) {
      out.push(`${at}[${i}] "${entry}" is every IPv4 address (as IPv4-mapped IPv6): ${means}`);
    }
  }
  return out;
}

/** True when the IPv6 prefix `addr/bits` (at most /96) holds `::ffff:0:0/96`, every IPv4-mapped address. */
function holdsMappedIpv4(addr: string, bits: number): boolean {
  const one = new BlockList();
  one.addSubnet(addr, bits, 'ipv6');
  // A prefix no longer than /96 that holds one address of ::ffff:0:0/96 holds all of it.
  return one.check('::ffff:0:0', 'ipv6');
}

/** Strip an IPv4-mapped IPv6 prefix (`::ffff:1.2.3.4` → `1.2.3.4`). */
export function plainAddress(address: string): string {
  return address.startsWith('::ffff:') && address.indexOf('.') > 0 ? address.slice(7) : address;
}

/**
 * An address a proxy reports in a header (a forward-auth check's `X-Real-IP` or last
 * `X-Forwarded-For` entry), trimmed and IPv4-mapped shown as IPv4, or `undefined` when it is no
 * address: as {@link forwardedClient} reads a hop, `[::1]` and `203.0.113.9:4711` are none. An
 * IPv6 zone (`fe80::1%eth0`) is the proxy’s interface, not the caller’s, and any text of
 * `[0-9A-Za-z.:-]` passes `isIP` as one: it is dropped.
 */
export function reportedAddress(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (isIP(v) === 0) return undefined;
  const zone = v.indexOf('%');
  return plainAddress(zone < 0 ? v : v.slice(0, zone));
}

/** True when `address` (as Node reports it) is in the allowlist. */
export function peerAllowed(list: BlockList, address: string | undefined): boolean {
  if (address === undefined) return false;
  const plain = plainAddress(address);
  return list.check(plain, isIP(plain) === 6 ? 'ipv6' : 'ipv4');
}

/**
 * The client's address behind the proxies in `trusted` (`gateway.trust_proxy`,
 * `token_service.trust_proxy`): the peer's own (`peer`, IPv4-mapped shown as IPv4) unless it is a
 * trusted proxy (`peerTrusted`); from one, X-Forwarded-For walked from the right past trusted hops,
 * the first hop not trusted being the client (every hop trusted: the leftmost). Entries left of it
 * are the client's own to write and never read. Each hop is read by {@link reportedAddress} (an
 * IPv6 zone, text of any length, is dropped). `known` is false when a trusted hop named the next
 * in a form that is no address (`203.0.113.9:4711`, `unknown`): `client` is then the last trusted
 * hop, a proxy's own address, which must not pass an allowlist for a caller it does not know.
 */
export function forwardedClient(
  trusted: BlockList,
  peer: string,
  peerTrusted: boolean,
  xff: string | readonly string[] | undefined,
): { client: string; known: boolean } {
  if (!peerTrusted || xff === undefined) return { client: peer, known: true };
  const hops = (typeof xff === 'string' ? xff : xff.join(',')).split(',');
  let client = peer;
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = reportedAddress(hops[i]);
    if (hop === undefined) return { client, known: false };
    client = hop;
    if (!peerAllowed(trusted, hop)) return { client: hop, known: true };
  }
  return { client, known: true };
}

/**
 * The client's address behind the proxies in `trusted` ({@link forwardedClient}): the socket's
 * address as Node reports it from any peer not listed (X-Forwarded-For ignored), else the client
 * X-Forwarded-For names (IPv4-mapped shown as IPv4).
 */
export function clientAddress(
  trusted: BlockList,
  socketAddress: string | undefined,
  xff: string | readonly string[] | undefined,
): string | undefined {
  if (socketAddress === undefined || xff === undefined || !peerAllowed(trusted, socketAddress)) return socketAddress;
  return forwardedClient(trusted, plainAddress(socketAddress), true, xff).client;
}

/**
 * The client's address for an allowlist such as `metrics_allowed_peers`, behind the proxies in
 * `trusted`, from the socket's `peer` (its plain address, and whether `trusted` lists it; `undefined`
 * when the socket has no address): {@link forwardedClient}'s when it is known, `undefined` when a
 * trusted proxy named it in a form that is no address, and `undefined` for a request a proxy not in
 * `trusted` relayed (it carries `X-Forwarded-For`, `Forwarded` or `X-Real-IP`): its socket address is
 * that proxy's, often on loopback or a private network, and would let in everyone the proxy relays.
 * A scraper calling directly sends none of them. The gateway and the token service alone both read
 * their operations endpoints' callers so.
 */
export function allowlistClient(
  trusted: BlockList,
  peer: { readonly address: string; readonly trustedProxy: boolean } | undefined,
  headers: { readonly [name: string]: string | readonly string[] | undefined },
): string | undefined {
  if (peer === undefined) return undefined;
  if (
    !peer.trustedProxy &&
    (headers['x-forwarded-for'] !== undefined || headers.forwarded !== undefined || headers['x-real-ip'] !== undefined)
  )
    return undefined;
  const w = forwardedClient(trusted, peer.address, peer.trustedProxy, headers['x-forwarded-for']);
  return w.known ? w.client : undefined;
}
