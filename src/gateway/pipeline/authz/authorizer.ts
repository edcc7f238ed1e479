/**
 * Authorizers (the second pipeline stage): may this principal make this request.
 *
 * @module
 */
import type { TesseraError } from '../../../core/errors.ts';
import type { CompiledRule } from '../../../core/policy.ts';
import type { Principal } from '../../../core/verify/principal.ts';
import type { GatewayRequest } from '../request.ts';

export type AuthzOutcome =
  | { readonly ok: true; readonly rule: CompiledRule | undefined }
  | { readonly ok: false; readonly error: TesseraError; readonly rule: CompiledRule | undefined };

export interface Authorizer {
  readonly id: string;
  /** `tool`: the MCP tool a `tools/call` names, `null` for other messages, `undefined` when unknown. */
  authorize(request: GatewayRequest, principal: Principal | undefined, tool?: string | null): AuthzOutcome;
}
