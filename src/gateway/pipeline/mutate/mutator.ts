/**
 * Mutators (the last pipeline stage): the headers the upstream receives on behalf of an allowed
 * request: its own credential and, optionally, who the caller is. They write into `out`; the
 * proxy (or the forward-auth answer) adds `out` after the inbound headers were cleaned, so nothing
 * a caller sends can override them.
 *
 * @module
 */
import type { TesseraError } from '../../../core/errors.ts';
import type { CompiledRule } from '../../../core/policy.ts';
import type { Principal } from '../../../core/verify/principal.ts';
import type { GatewayRequest } from '../request.ts';

export interface MutationInput {
  readonly request: GatewayRequest;
  readonly principal: Principal | undefined;
  readonly rule: CompiledRule | undefined;
}

export type MutationResult = undefined | TesseraError;

export interface Mutator {
  readonly id: string;
  /** Names of the headers this mutator may set (forward-auth advertises them). */
  readonly headers: readonly string[];
  mutate(input: MutationInput, out: Record<string, string>): MutationResult | Promise<MutationResult>;
  /**
   * The upstream answered 401 to a request this mutator wrote `sent` for: a credential it keeps
   * (a cached minted token) is not to be sent again.
   */
  rejected?(input: Pick<MutationInput, 'principal' | 'rule'>, sent: Readonly<Record<string, string>>): void;
}
