/**
 * subjectIssuer: the issuer a principal's subject belongs to. Only a JWT of an issuer that vouches
 * for its subjects' issuers (the token service in this process, `gateway.trust_sub_id`) is believed
 * when its RFC 9493 `sub_id` names another issuer, or an introspection answer with
 * `introspection.trust_sub_id`; and only a well-formed `iss_sub` naming the token's own `sub`.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NO_SUB_ID_TRUST, type Principal, type SubIdTrust, subjectIssuer } from '../../../src/core/verify/principal.ts';

const TESSERA = 'https://tessera.test';
const IDP = 'https://idp.test';
const VOUCHING: SubIdTrust = { issuers: new Set([TESSERA]), introspection: false };
/** introspection.trust_sub_id, and no JWT issuer. */
const INTROSPECTION: SubIdTrust = { issuers: new Set(), introspection: true };

const principal = (over: Partial<Principal> & { claims?: Record<string, unknown> }): Principal =>
  ({ kind: 'jwt', issuer: TESSERA, subject: 'alice', claims: {}, ...over }) as Principal;

describe('subjectIssuer', () => {
  it('reads the iss_sub sub_id of the token service’s own JWT', () => {
    const p = principal({ claims: { sub: 'alice', sub_id: { format: 'iss_sub', iss: IDP, sub: 'alice' } } });
    assert.equal(subjectIssuer(p, VOUCHING), IDP);
    // Without a token service in the process and none listed (tessera gateway alone), nothing is believed.
    assert.equal(subjectIssuer(p, NO_SUB_ID_TRUST), TESSERA);
  });

  it('attack: another issuer’s sub_id, or one from an introspection answer without introspection.trust_sub_id, is not believed', () => {
    const sub_id = { format: 'iss_sub', iss: 'https://corp.test', sub: 'alice' };
    assert.equal(subjectIssuer(principal({ issuer: IDP, claims: { sub_id } }), VOUCHING), IDP);
    assert.equal(subjectIssuer(principal({ kind: 'introspection', claims: { sub_id } }), VOUCHING), TESSERA);
  });

  it('reads an introspection answer’s sub_id with introspection.trust_sub_id, whatever its iss', () => {
    const sub_id = { format: 'iss_sub', iss: IDP, sub: 'alice' };
    assert.equal(subjectIssuer(principal({ kind: 'introspection', claims: { sub_id } }), INTROSPECTION), IDP);
    assert.equal(subjectIssuer(principal({ kind: 'introspection', issuer: 'https://as.test', claims: { sub_id } }), INTROSPECTION), IDP);
    assert.equal(
      subjectIssuer(principal({ kind: 'introspection', claims: { sub_id: { ...sub_id, sub: 'bob' } } }), INTROSPECTION),
      TESSERA,
      'a sub_id naming another subject',
    );
  });

  it('attack: introspection.trust_sub_id does not make a JWT’s sub_id believed, not even one of the introspection issuer', () => {
    const sub_id = { format: 'iss_sub', iss: IDP, sub: 'alice' };
    assert.equal(subjectIssuer(principal({ claims: { sub_id } }), INTROSPECTION), TESSERA);
    assert.equal(subjectIssuer(principal({ issuer: 'https://corp.test', claims: { sub_id } }), INTROSPECTION), 'https://corp.test');
  });

  it('falls back to the token’s issuer for a malformed sub_id or one naming another subject', () => {
    for (const sub_id of [
      'https://idp.test',
      null,
      [],
      { format: 'email', email: 'alice@idp.test' },
      { format: 'iss_sub', iss: '', sub: 'alice' },
      { format: 'iss_sub', iss: 7, sub: 'alice' },
      { format: 'iss_sub', iss: IDP },
      { format: 'iss_sub', iss: IDP, sub: 'bob' },
    ]) {
      assert.equal(subjectIssuer(principal({ claims: { sub_id } }), VOUCHING), TESSERA, JSON.stringify(sub_id));
    }
    assert.equal(subjectIssuer(principal({ kind: 'static', issuer: 'static', subject: 'static:ci' }), VOUCHING), 'static');
  });
});
