/**
 * Tessera: short-lived, scoped, sender-bound and attributable bearer tokens for AI agents and the
 * APIs they call.
 *
 * @module
 */

export { denyResponse } from './adapters/response.ts';
export type { AuditEvent, AuditKind, AuditQuery, AuditSink } from './audit/event.ts';
export { uuidv7 } from './audit/id.ts';
export { type AuditEventsLost, type AuditPipeline, type AuditPipelineOptions, createAuditPipeline } from './audit/pipeline.ts';
export { createJsonLinesSink, type JsonLinesSink } from './audit/sinks/jsonl.ts';
export { MemoryAuditSink } from './audit/sinks/memory.ts';
export { loadConfigFile } from './config/load.ts';
export type { TesseraConfig } from './config/schema.ts';
export type { VerifierConfig, VerifierConfigInput } from './config/verifier-schema.ts';
export {
  ArgumentError,
  type ArgumentErrorCode,
  ConfigError,
  type ConfigIssue,
  ERROR_CODES,
  type ErrorCode,
  isTesseraError,
  TesseraError,
} from './core/errors.ts';
export { isOAuthError, OAUTH_ERROR_CODES, OAuthError, type OAuthErrorCode } from './core/oauth-errors.ts';
export { compilePolicy, type Policy, type PolicyDecision, type RuleSpec } from './core/policy.ts';
export type { Clock, Introspector, KeySource, ReplayCache, ReplayRefusal, UpstreamTokenIssuer } from './core/ports.ts';
export { compileScopes, type EffectiveScopes, type ScopeCatalog } from './core/scopes.ts';
export { type ChallengeOptions, challenge, challenges } from './core/verify/challenge.ts';
export type { HeaderBag, VerifyRequest } from './core/verify/extract.ts';
export type { Actor, Principal, PrincipalKind } from './core/verify/principal.ts';
export { type Revocation, type RevocationCheck, RevocationList } from './core/verify/revocation.ts';
export type { Verifier, VerifierStats, VerifyFailure, VerifyResult, VerifySuccess } from './core/verify/verifier.ts';
export {
  createGateway,
  type Gateway,
  type GatewayDeps,
  type ReadinessCheck,
  type ReloadResult,
  type RevocationFeed,
  type ServedGateway,
  type ServeOptions,
  serveGateway,
} from './gateway/index.ts';
export { createVerifier, createVerifierFromConfig, type ManagedVerifier, type VerifierRuntime } from './verifier.ts';
