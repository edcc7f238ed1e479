/** The URL a listening server answers on, `http://[::1]:8080` style for IPv6. */
import type { AddressInfo } from 'node:net';

export function listenUrl(server: { address(): AddressInfo | string | null }): string {
  const a = server.address() as AddressInfo;
  return `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
}
