/**
 * Identity headers: who the verified caller is, in headers named by the configuration. Values are
 * made header-safe (`headerSafe`), and the inbound copies of every configured identity header are
 * always stripped, so an upstream can trust them. A token whose identity holds a lone surrogate
 * (JSON allows `"\ud800"`) is refused: it has no UTF-8 form, so no header can carry it.
 *
 * @module
 */
import type { IdentityField } from '../../../config/gateway-schema.ts';
import { TesseraError } from '../../../core/errors.ts';
import { actorLabel, type Principal, type SubIdTrust, subjectIssuer } from '../../../core/verify/principal.ts';
import { headerSafe } from '../../http/headers.ts';
import type { Mutator } from './mutator.ts';

/**
 * An actor's subject or issuer for the actor-chain header: header-safe, and with the characters
 * the chain itself is written with (`, ` between actors, ` (iss)` after one) percent-encoded too,
 * so an `act.sub` of `agent-b (https://idp.example)` stays one subject and never reads as
 * `agent-b` of that issuer. `headerSafe` leaves a value with `%` or `,` to encodeURIComponent,
 * which keeps parentheses, so they are encoded here in either case.
 */
function chainSafe(value: string): string {
  return headerSafe(value).replace(/[ ()]/g, (c) => (c === ' ' ? '%20' : c === '(' ? '%28' : '%29'));
}

function value(field: IdentityField, p: Principal, vouching: SubIdTrust): string | undefined {
  switch (field) {
    case 'subject':
      return p.subject === undefined ? undefined : headerSafe(p.subject);
    case 'subject_issuer':
      return p.subject === undefined ? undefined : headerSafe(subjectIssuer(p, vouching));
    case 'client':
      return p.clientId === undefined ? undefined : headerSafe(p.clientId);
    case 'issuer':
      return headerSafe(p.issuer);
    case 'actors':
      // An actor of another issuer than the token's is shown with it: `agent-a (https://idp.example)`.
      return p.actors.length === 0 ? undefined : p.actors.map((a) => actorLabel(a, p.issuer, chainSafe)).join(', ');
    case 'delegation':
      return p.delegationId === undefined ? undefined : headerSafe(p.delegationId);
    case 'scopes':
      return p.scopes.map(headerSafe).join(' ');
    case 'token_id':
      return p.tokenId === undefined ? undefined : headerSafe(p.tokenId);
  }
}

/**
 * The identity headers of a route. `vouching`: whose `sub_id` names the subject's issuer (`subject_issuer`, see {@link subjectIssuer}).
 */
export function identityHeadersMutator(
  fields: readonly IdentityField[],
  names: Readonly<Record<IdentityField, string>>,
  vouching: SubIdTrust,
): Mutator {
  const pairs = fields.map((f) => [f, names[f]] as const);
  return {
    id: 'identity',
    headers: pairs.map(([, n]) => n),
    mutate(input, out) {
      const p = input.principal;
      if (p === undefined) return undefined;
      for (const [field, name] of pairs) {
        let v: string | undefined;
        try {
          v = value(field, p, vouching);
        } catch (e) {
          // encodeURIComponent (headerSafe) throws URIError for a lone surrogate, and only for one.
          if (e instanceof URIError) return new TesseraError('token_claim_invalid');
          throw e;
        }
        if (v !== undefined) out[name] = v;
      }
      return undefined;
    },
  };
}
