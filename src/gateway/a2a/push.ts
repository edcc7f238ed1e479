/**
 * Push notification webhooks named in A2A requests: the agent calls the URL a caller gives it
 * (`tasks/pushNotificationConfig/set`, 1.0 `CreateTaskPushNotificationConfig`, a `message/send`'s
 * `configuration.pushNotificationConfig`) from where it runs, behind the gateway. A URL at a
 * loopback, link-local (cloud metadata), private or otherwise internal address would make the
 * agent request it for the caller (SSRF; A2A §"Push Notifications", security: agents should
 * validate webhook URLs). The gateway refuses what it can tell from the URL alone
 * ({@link isPublicWebhook}); a public name resolving to an internal address is the agent's to refuse
 * when it connects.
 *
 * @module
 */
import { BlockList, isIPv4, isIPv6 } from 'node:net';
import { a2aFold, everyObject } from './message.ts';

const INTERNAL_V4 = new BlockList();
/** Kept apart: a BlockList checks an IPv4 address against its IPv6 rules too, as `::ffff:a.b.c.d`. */
const INTERNAL_V6 = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const)
  INTERNAL_V4.addSubnet(net, prefix, 'ipv4');
// IPv6: unspecified, loopback and IPv4-compatible (::/96), IPv4-mapped, NAT64 and 6to4 and Teredo
// (each carries an IPv4 address that may be internal), discard, unique local, link and site local, multicast.
for (const [net, prefix] of [
  ['::', 96],
  ['::ffff:0:0', 96],
  ['64:ff9b::', 96],
  ['64:ff9b:1::', 48],
  ['100::', 64],
  ['2001::', 32],
  ['2002::', 16],
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
] as const)
  INTERNAL_V6.addSubnet(net, prefix, 'ipv6');

/**
 * Whether `url` is a webhook the gateway lets an agent call: an absolute `http:` or `https:` URL
 * without user info, whose host is not an internal address (as parsed by the WHATWG URL parser,
 * which reads `0x7f.1` and `2130706433` as `127.0.0.1`): not an IP in a loopback, private,
 * link-local, shared, reserved or multicast range, not `localhost` or a name under `.localhost`,
 * `.local`, `.internal` or `.home.arpa`, and not a single-label name (`metadata`, `redis`: resolved
 * through the agent's search domains). A backslash, a space or a control character anywhere is
 * refused: other URL parsers split such a URL elsewhere (`https://a.example\@127.0.0.1/` is
 * `a.example` to WHATWG, `127.0.0.1` to Python's urllib).
 */
export function isPublicWebhook(url: unknown): boolean {
  if (typeof url !== 'string' || url.length > 4096 || hasUnsafeChar(url)) return false;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return false;
  }
  if ((u.protocol !== 'https:' && u.protocol !== 'http:') || u.username !== '' || u.password !== '') return false;
  let host = u.hostname;
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (isIPv4(host)) return !INTERNAL_V4.check(host, 'ipv4');
  if (isIPv6(host)) return !INTERNAL_V6.check(host, 'ipv6');
  host = host.replace(/\.$/, '');
  if (!host.includes('.') || host === 'localhost') return false;
  return !/\.(?:localhost|local|internal|home\.arpa)$/.test(host);
}

/** A control character, a space, DEL or a backslash. */
function hasUnsafeChar(url: string): boolean {
  for (let i = 0; i < url.length; i++) {
    const c = url.charCodeAt(i);
    if (c <= 0x20 || c === 0x7f || c === 0x5c) return true;
  }
  return false;
}

/**
 * Whether a request body (parsed JSON) names a push notification webhook {@link isPublicWebhook}
 * refuses: any `url` (in any spelling, {@link a2aFold}) inside a member whose name holds
 * `pushNotification` (`pushNotificationConfig`, `push_notification_config`), in the `params` of a
 * JSON-RPC method whose name holds it (1.0 `CreateTaskPushNotificationConfig`'s `config`), or
 * anywhere in the body when the request `path` holds it (the HTTP+JSON binding's
 * `…/pushNotificationConfigs`).
 */
export function refusedPushUrl(body: unknown, path: string): boolean {
  if (/pushnotification/i.test(path)) return anyRefusedUrl(body);
  return !everyObject(body, (entries) => {
    const method = entries.find(([k, m]) => a2aFold(k) === 'method' && typeof m === 'string')?.[1] as string | undefined;
    const pushMethod = method !== undefined && /pushnotification/i.test(method);
    const inner: unknown[] = [];
    for (const [k, e] of entries) {
      const n = a2aFold(k);
      if (n.includes('pushnotification') || (pushMethod && n === 'params')) {
        if (anyRefusedUrl(e)) return false;
      } else inner.push(e);
    }
    return inner;
  });
}

/** Whether any `url` member at any depth of `root` is a webhook {@link isPublicWebhook} refuses. */
function anyRefusedUrl(root: unknown): boolean {
  return !everyObject(root, (entries) => {
    for (const [k, e] of entries) if (a2aFold(k) === 'url' && e !== null && !isPublicWebhook(e)) return false;
    return entries.map(([, e]) => e);
  });
}
