/**
 * Tessera's gateway: an identity-aware reverse proxy and forward-auth endpoint.
 *
 * @module
 */
export { type AgentCardSource, withTesseraSecurity } from './a2a.ts';
export { type CompiledRoute, compileGateway, type GatewayState, type VerifierFactory } from './compile.ts';
export { createGateway, defaultLogger, type Gateway, type GatewayDeps, type ReloadResult } from './gateway.ts';
export type { ReadinessCheck } from './ops.ts';
export { type ServedGateway, type ServeOptions, serveGateway } from './serve.ts';
export { type RevocationFeed, type StreamCloseReason, StreamRegistry } from './streams.ts';
