/**
 * Tessera's gateway: an identity-aware reverse proxy and forward-auth endpoint. Its public surface
 * (re-exported by the main entry) is {@link createGateway} to mount it on a server of one's own and
 * {@link serveGateway} to run it on its own listener; the rest of `src/gateway/` is internal.
 *
 * @module
 */
export { createGateway, type Gateway, type GatewayDeps, type ReloadResult } from './gateway.ts';
export type { ReadinessCheck } from './ops.ts';
export { type ServedGateway, type ServeOptions, serveGateway } from './serve.ts';
export type { RevocationFeed } from './streams.ts';
