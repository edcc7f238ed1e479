/**
 * Authenticators (the first pipeline stage): who is calling. One strategy per file, chained per
 * route in the configured order; a strategy that does not recognize the credential answers
 * {@link NOT_RESPONSIBLE} and the next one is tried (Oathkeeper's `ErrAuthenticatorNotResponsible`).
 *
 * @module
 */
import type { TesseraError } from '../../../core/errors.ts';
import type { Principal } from '../../../core/verify/principal.ts';
import type { GatewayRequest } from '../request.ts';

/** The credential is not of this authenticator's kind; try the next one. */
export const NOT_RESPONSIBLE: unique symbol = Symbol('not-responsible');

export type AuthnOutcome =
  | {
      readonly ok: true;
      readonly principal: Principal | undefined;
      /** A fresh DPoP nonce for the response (`dpop.nonce`; the verifier result's `dpopNonce`). */
      readonly dpopNonce?: string;
    }
  | { readonly ok: false; readonly error: TesseraError; readonly principal?: Principal }
  | typeof NOT_RESPONSIBLE;

export type AuthenticatorId = 'none' | 'jwt' | 'static' | 'introspection';

export interface Authenticator {
  readonly id: AuthenticatorId;
  /** `WWW-Authenticate` challenges for a refusal by this authenticator. */
  challenges(error?: TesseraError): string[];
  authenticate(request: GatewayRequest): AuthnOutcome | Promise<AuthnOutcome>;
}
