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

/** What an MCP route read from the JSON-RPC body. Omitted (`undefined`) when the body was not read. */
export interface RpcFacts {
  /** The MCP tool a `tools/call` names, `null` for other messages and for requests without a body. */
  readonly tool: string | null;
  /** The JSON-RPC `method`, `null` for a response and for requests without a body (GET, DELETE). */
  readonly method: string | null;
}

export interface Authorizer {
  readonly id: string;
  /** `rpc`: what an MCP route read from the body; `undefined` when unknown (any other route). */
  authorize(request: GatewayRequest, principal: Principal | undefined, rpc?: RpcFacts): AuthzOutcome;
}
