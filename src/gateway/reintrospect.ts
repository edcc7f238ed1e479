/**
 * Exchanges in flight admitted with an introspected token, asked about again: "revoked" must mean
 * revoked at the authorization server too. An opaque token's `exp` (when its answer has one) is
 * all the gateway knows of its end; a token the authorization server revokes says so only to the
 * next introspection. So every `cache_max_ttl` (at least 1 s) the token of each such exchange is
 * validated again through the route verifier's own cached client: an answer cached for another
 * request or stream is reused, calls about one token made at once are shared, so streams on one
 * token cost one call per interval between them, and a token no longer active ends its exchanges
 * (`token_inactive`; `token_revoked` or `token_expired` when that is why). A token still active
 * whose answer no longer grants the scope the exchange's rule requires ends them too
 * (`token_scope_narrowed`), as does one whose answer no longer satisfies a claim condition of that
 * rule (`policy_condition_failed`) or no longer names the route's audience
 * (`token_audience_invalid`): an exchange runs on the authority the latest answer gives. An answer
 * naming another `sub`, `client_id` or `iss` (or, with `introspection.trust_sub_id`, another subject
 * issuer in its `sub_id`) than the one the exchange was admitted with ends it
 * (`token_identity_changed`): the upstream was told, once, that the caller was the first.
 *
 * An endpoint that gives no answer is not taken for an inactive token, nor trusted for the length
 * of the outage: an exchange is kept through one recheck without answer and closed at the second
 * in a row (`introspection_unavailable`), once the last answer vouching for its token is at least
 * two intervals old. New requests are refused (503) as soon as their cached answer has expired, so
 * an open exchange outlives them by one interval at most.
 *
 * @module
 */
import type { TesseraConfig } from '../config/schema.ts';
import { TesseraError } from '../core/errors.ts';
import { extractTokenDeferred } from '../core/verify/extract.ts';
import { subjectIssuer } from '../core/verify/principal.ts';
import type { GatewayState } from './compile.ts';
import type { AdmittedStream } from './recheck.ts';
import type { StreamCloseReason, StreamRevalidate, TrackedStream } from './streams.ts';

/** Rechecks in a row without an answer from the endpoint after which an exchange is closed. */
export const UNANSWERED_RECHECKS_BEFORE_CLOSE = 2;

/** Milliseconds between rechecks under `config` (`cache_max_ttl`, at least 1 s), `undefined` without introspection. */
export function reintrospectionInterval(config: TesseraConfig): number | undefined {
  const i = config.introspection;
  return i === undefined ? undefined : Math.max(1, i.cache_max_ttl) * 1000;
}

/**
 * Why the introspection endpoint of `s` now ends a stream admitted with an introspected token.
 * `unanswered` counts, per stream, the rechecks in a row that got no answer (kept across reloads).
 */
export function reintrospectUnder(s: GatewayState, unanswered: WeakMap<TrackedStream, number>): StreamRevalidate<AdmittedStream> {
  const verifier = s.introspectionVerifier;
  return (stream) => {
    // Without introspection in force a reload has ended these already (credential_withdrawn).
    const was = stream.principal;
    if (was?.kind !== 'introspection' || verifier === undefined) return undefined;
    // The token as it was presented, read as it was admitted (a reload that refuses that way of
    // presenting it ends the stream by itself).
    const found = extractTokenDeferred(stream.request, { formBody: false, query: stream.admission.config.transport.query });
    if (found instanceof TesseraError) return undefined;
    const unanswer = (): StreamCloseReason | undefined => {
      const n = (unanswered.get(stream) ?? 0) + 1;
      unanswered.set(stream, n);
      return n >= UNANSWERED_RECHECKS_BEFORE_CLOSE ? 'introspection_unavailable' : undefined;
    };
    return verifier.verifyToken(found.token).then((r): StreamCloseReason | undefined => {
      if (r.ok) {
        unanswered.delete(stream);
        // The identity the upstream was given when the exchange began (its identity headers, its
        // rate-limit key, its MCP session's owner): an answer naming another subject or client (a
        // token id reused, a grant moved) is not the caller it was admitted for.
        const now = r.principal;
        if (was.subject !== now.subject || was.clientId !== now.clientId || was.issuer !== now.issuer) return 'token_identity_changed';
        // The subject's issuer as a believed `sub_id` names it (identity header `subject_issuer`,
        // the rate-limit key): the same `sub` of another identity provider is another person.
        // Compared under the trust the exchange was admitted with (what its upstream was told) and
        // under the one now in force: a reload that stopped believing `sub_id` must not hide a change.
        const admitted = { issuers: s.vouching.issuers, introspection: stream.admission.config.introspection?.trust_sub_id === true };
        for (const trust of [admitted, s.vouching]) {
          if (subjectIssuer(was, trust) !== subjectIssuer(now, trust)) return 'token_identity_changed';
        }
        // Still active, but the answer's scope may have been narrowed: the exchange's rule is
        // applied again to it, on the route as this state compiled it (a reload that removed the
        // route or changed its rules decided the stream already).
        const route = s.routes.find((x) => x.id === stream.route.id);
        if (route === undefined) return undefined;
        // The route's audience, checked as a new request's is: an answer that no longer names it.
        const settled = route.pipeline.authn.settle({ ok: true, principal: r.principal });
        if (!settled.ok) return settled.error.code === 'token_audience_invalid' ? 'token_audience_invalid' : 'token_inactive';
        const decided = route.pipeline.authz.authorize(stream.request, r.principal, stream.rpc);
        if (decided.ok) return undefined;
        // The refusal a new request would get: a scope no longer granted, a claim condition the
        // answer no longer satisfies (another tenant, say).
        // Any other refusal (none can change for an admitted stream today) closes it too: a
        // refusal added later must not leave a stream open on a decision a new request would not get.
        return decided.error.code === 'scope_insufficient' ? 'token_scope_narrowed' : 'policy_condition_failed';
      }
      const code = r.error.code;
      // No answer: the endpoint's, or the revocation check's (which threw), as a rejection was before.
      if (code === 'introspection_unavailable' || code === 'revocation_unavailable') return unanswer();
      // This instance cannot vouch for its issuer's revocations now: as its feed ends such streams.
      if (code === 'revocation_state_stale') return code;
      // An audience the verifier requires that the answer no longer names: the code a new request gets.
      if (code === 'token_audience_invalid') return code;
      // Anything else the answer is now refused for (not active, a type it no longer has) is the
      // authorization server no longer vouching for the token.
      return code === 'token_revoked' || code === 'token_expired' ? code : 'token_inactive';
    }, unanswer);
  };
}
