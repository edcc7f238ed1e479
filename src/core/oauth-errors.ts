/**
 * The token service's error catalogue: one closed union of stable reason codes for the token,
 * revocation, introspection and admin endpoints, each bound to the OAuth error value (RFC 6749
 * §5.2, RFC 7009 §2.2.1, RFC 8693 §2.2.2, RFC 8707 §2) and HTTP status the caller sees.
 *
 * As in `errors.ts`, the caller gets `error` and a fixed description; the precise `code` goes to the
 * audit trail. Several codes deliberately share one description (an unknown client and a wrong
 * secret both read "Client authentication failed.") so a response never tells an attacker which
 * check failed. Codes are never renamed or reused once released.
 *
 * @module
 */
import { secretShaped } from './errors.ts';

/** The OAuth error values the token service returns. */
export type OAuthErrorValue =
  | 'invalid_request'
  | 'invalid_client'
  | 'invalid_grant'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'invalid_scope'
  | 'invalid_target'
  | 'invalid_token'
  | 'insufficient_scope'
  | 'invalid_dpop_proof'
  // RFC 9449 §8: the DPoP proof must carry the nonce this server hands out.
  | 'use_dpop_nonce'
  | 'unsupported_response_type'
  // RFC 9101 §10.2 (registered from OpenID Connect Core §3.1.2.6).
  | 'request_not_supported'
  | 'request_uri_not_supported'
  | 'access_denied'
  | 'login_required'
  // OpenID Connect Core §3.1.2.6: prompt=none and the consent page would be needed.
  | 'consent_required'
  // OpenID Connect Core §3.1.2.6: prompt=none and only an interaction could answer (a page load of its own).
  | 'interaction_required'
  | 'invalid_client_metadata'
  | 'invalid_redirect_uri'
  | 'server_error'
  | 'temporarily_unavailable';

interface OAuthCodeSpec {
  readonly status: number;
  readonly error: OAuthErrorValue;
  /** Fixed text safe to show to the caller. Never interpolated with request data. */
  readonly description: string;
}

const CLIENT_AUTH_FAILED = 'Client authentication failed.';
const CODE_INVALID =
  'The authorization code is invalid, expired, already used, or was issued to another client, redirect URI, code_verifier or DPoP key.';

/** Every reason code the token service can produce. */
export const OAUTH_ERROR_CODES = {
  // The request itself (RFC 6749 §3.2, §5.2 invalid_request).
  request_method_not_allowed: { status: 405, error: 'invalid_request', description: 'This endpoint accepts POST only.' },
  request_method_get_only: { status: 405, error: 'invalid_request', description: 'This endpoint accepts GET and HEAD only.' },
  request_content_type: {
    status: 400,
    error: 'invalid_request',
    description: 'The request body must be application/x-www-form-urlencoded.',
  },
  // The JSON endpoints (the admin API, dynamic registration): naming the form type there misleads.
  request_content_type_json: { status: 400, error: 'invalid_request', description: 'The request body must be application/json.' },
  request_body_too_large: { status: 413, error: 'invalid_request', description: 'The request body is too large.' },
  // The client hung up before its body was whole: audited, and the
  // answer goes nowhere. Before, such a request left no event at the form endpoints.
  client_closed: { status: 400, error: 'invalid_request', description: 'The request body was not received whole.' },
  // Node's parser refused the body after the head was handed over (a chunk that is no chunk): the
  // listener answered 400 and closed the connection; audited with that status, not as client_closed.
  request_body_invalid: { status: 400, error: 'invalid_request', description: 'The request body is not validly framed.' },
  // The body was still arriving when the listener's request_timeout passed: it answered 408 and
  // closed the connection; audited with that status, not as client_closed.
  request_timeout: { status: 408, error: 'invalid_request', description: 'The request was not received whole in time.' },
  // RFC 9110 §15.5.16: no content coding is decoded, so a body labelled with one (gzip, …) is refused,
  // never read as identity while a proxy or log honouring the label saw another body.
  request_content_encoding: {
    status: 415,
    error: 'invalid_request',
    description: 'The request body must not be content-coded: send it without a Content-Encoding (identity).',
  },
  // RFC 6749 Appendix B (forms), RFC 8259 §8.1 (JSON): a charset label other than UTF-8, or bytes
  // that are not UTF-8 (raw or percent-encoded), which decoding would turn into U+FFFD.
  request_not_utf8: { status: 400, error: 'invalid_request', description: 'The request must be UTF-8.' },
  // RFC 9112 §6.1: HTTP/1.0 with a Transfer-Encoding, a coding other than `chunked`, or a request
  // line with another version than HTTP/1.1 or HTTP/1.0. Refused by the listener, for every path;
  // the gateway's code (its catalogue has it too).
  request_framing_invalid: {
    status: 400,
    error: 'invalid_request',
    description: 'The request framing (HTTP version or Transfer-Encoding) is not accepted.',
  },
  request_body_malformed: { status: 400, error: 'invalid_request', description: 'The request body is not a valid JSON object.' },
  request_body_member_repeated: {
    status: 400,
    error: 'invalid_request',
    description: 'The request body names a member more than once in one JSON object.',
  },
  request_parameter_missing: { status: 400, error: 'invalid_request', description: 'A required parameter is missing.' },
  request_parameter_repeated: { status: 400, error: 'invalid_request', description: 'A parameter is included more than once.' },
  request_parameter_invalid: { status: 400, error: 'invalid_request', description: 'A parameter has an invalid value.' },
  request_query_not_allowed: {
    status: 400,
    error: 'invalid_request',
    description: 'Parameters go in the request body; the endpoint URL takes no query.',
  },
  // RFC 6749 §2.3 (one authentication method per request), RFC 6750 §2.1 (one credential): two
  // Authorization headers are ambiguous, and Node would silently keep the first. The gateway's code.
  request_multiple_authorization: {
    status: 400,
    error: 'invalid_request',
    description: 'The request carries more than one Authorization header.',
  },
  // A CORS preflight (Fetch standard §3.2.2) from an origin not in token_service.cors.allowed_origins.
  cors_origin_not_allowed: {
    status: 403,
    error: 'invalid_request',
    description: 'Browser requests from this origin are not allowed at this endpoint.',
  },

  // Client authentication (RFC 6749 §2.3, RFC 7523 §3).
  // The description every invalid_client shares: a registered client's id sent alone (no
  // credential) must read as an unknown one does, or the answer would tell which client ids exist.
  client_auth_missing: { status: 401, error: 'invalid_client', description: CLIENT_AUTH_FAILED },
  client_auth_multiple_methods: {
    status: 400,
    error: 'invalid_request',
    description: 'The request uses more than one client authentication method.',
  },
  client_auth_malformed: { status: 401, error: 'invalid_client', description: CLIENT_AUTH_FAILED },
  client_unknown: { status: 401, error: 'invalid_client', description: CLIENT_AUTH_FAILED },
  client_disabled: { status: 401, error: 'invalid_client', description: CLIENT_AUTH_FAILED },
  client_secret_mismatch: { status: 401, error: 'invalid_client', description: CLIENT_AUTH_FAILED },
  client_auth_method_not_allowed: { status: 401, error: 'invalid_client', description: CLIENT_AUTH_FAILED },
  // The right secret, sent the way the client did not register for (RFC 7591 §2 token_endpoint_auth_method).
  client_auth_method_mismatch: { status: 401, error: 'invalid_client', description: CLIENT_AUTH_FAILED },
  // The client is identified, but the browser page calling (its Origin) is not one the client allows
  // (its allowed_origins, Hydra's allowed_cors_origins): another site may not act as this client.
  cors_origin_not_allowed_for_client: { status: 401, error: 'invalid_client', description: CLIENT_AUTH_FAILED },
  client_assertion_invalid: { status: 401, error: 'invalid_client', description: CLIENT_AUTH_FAILED },
  client_assertion_signature_invalid: { status: 401, error: 'invalid_client', description: CLIENT_AUTH_FAILED },
  // More than one of the client's keys fits the assertion's kid and alg: which one signed is unknown.
  client_assertion_key_ambiguous: { status: 401, error: 'invalid_client', description: CLIENT_AUTH_FAILED },
  // The key the assertion names is an RSA key over CLIENT_KEY_MAX_RSA_BITS (served by a jwks_uri, or
  // stored before registration refused it): refused before its costly check.
  client_assertion_key_too_large: { status: 401, error: 'invalid_client', description: CLIENT_AUTH_FAILED },
  client_assertion_expired: { status: 401, error: 'invalid_client', description: CLIENT_AUTH_FAILED },
  // exp further ahead than token_service.client_assertion_max_lifetime, or exp - iat longer: a
  // long-lived credential, and its jti would be held in the replay cache until then.
  client_assertion_lifetime_too_long: { status: 401, error: 'invalid_client', description: CLIENT_AUTH_FAILED },
  client_assertion_audience_invalid: { status: 401, error: 'invalid_client', description: CLIENT_AUTH_FAILED },
  client_assertion_replayed: { status: 401, error: 'invalid_client', description: CLIENT_AUTH_FAILED },
  client_keys_unavailable: { status: 401, error: 'invalid_client', description: CLIENT_AUTH_FAILED },

  // Grant types (RFC 6749 §5.2).
  grant_type_unsupported: { status: 400, error: 'unsupported_grant_type', description: 'The grant type is not supported.' },
  grant_type_not_allowed: {
    status: 400,
    error: 'unauthorized_client',
    description: 'The client is not allowed to use this grant type.',
  },

  // Scope and audience (RFC 6749 §3.3, RFC 8707 §2, RFC 8693 §2.2.2).
  scope_malformed: { status: 400, error: 'invalid_scope', description: 'The requested scope is malformed.' },
  scope_not_allowed: { status: 400, error: 'invalid_scope', description: 'The requested scope exceeds what may be granted.' },
  target_invalid: { status: 400, error: 'invalid_target', description: 'The requested audience or resource is malformed.' },
  target_not_allowed: {
    status: 400,
    error: 'invalid_target',
    description: 'The requested audience or resource is not allowed for this client.',
  },
  // RFC 8707 §2.2: a token request (code redemption, refresh) may name a subset of what was granted
  // (the resources the person approved), not another audience the client holds.
  target_not_granted: {
    status: 400,
    error: 'invalid_target',
    description: 'The requested audience or resource is outside what was granted.',
  },
  target_exceeds_subject: {
    status: 400,
    error: 'invalid_target',
    description: "The requested audience or resource is outside the subject token's audience.",
  },
  target_required: {
    status: 400,
    error: 'invalid_target',
    description: 'The client may use several audiences; request one with the audience or resource parameter.',
  },
  // RFC 8707 §2, RFC 9068 §3: a token carrying the admin scope is for the admin audience alone, or
  // any resource server it is also for could replay it at the admin API.
  target_admin_shared: {
    status: 400,
    error: 'invalid_target',
    description: 'A token with the admin scope is for the admin audience alone; request other audiences in another token.',
  },

  // Refresh tokens (RFC 6749 §6, OAuth 2.1 §4.3.1 rotation).
  refresh_token_invalid: {
    status: 400,
    error: 'invalid_grant',
    description: 'The refresh token is invalid, expired, revoked or was issued to another client.',
  },
  refresh_token_reused: {
    status: 400,
    error: 'invalid_grant',
    description: 'The refresh token is invalid, expired, revoked or was issued to another client.',
  },
  // A rotated token presented again within refresh_reuse_grace: refused, its family kept (a client
  // retrying, or a thief racing it); a code of its own so the audit trail tells it from a bad token.
  refresh_token_reused_in_grace: {
    status: 400,
    error: 'invalid_grant',
    description: 'The refresh token is invalid, expired, revoked or was issued to another client.',
  },
  // RFC 9449 §5: a public client's refresh token bound to a DPoP key, presented without a proof of it.
  refresh_token_proof_mismatch: {
    status: 400,
    error: 'invalid_grant',
    description: 'The refresh token is invalid, expired, revoked or was issued to another client.',
  },

  // The authorization code grant at the token endpoint (RFC 6749 §4.1.3, RFC 7636 §4.6). Every
  // refusal of a code reads the same, so a response never tells which binding failed.
  authorization_code_invalid: { status: 400, error: 'invalid_grant', description: CODE_INVALID },
  authorization_code_reused: { status: 400, error: 'invalid_grant', description: CODE_INVALID },
  // Approved in a login session that a revocation of the subject ended, by an instance that had
  // not read the revocation yet: refused by the store at redemption.
  authorization_code_subject_revoked: { status: 400, error: 'invalid_grant', description: CODE_INVALID },
  authorization_code_redirect_mismatch: { status: 400, error: 'invalid_grant', description: CODE_INVALID },
  pkce_verifier_mismatch: { status: 400, error: 'invalid_grant', description: CODE_INVALID },
  // RFC 9449 §10: a code bound to a DPoP key (dpop_jkt) presented without a proof of that key.
  code_dpop_key_mismatch: { status: 400, error: 'invalid_grant', description: CODE_INVALID },
  pkce_verifier_missing: { status: 400, error: 'invalid_request', description: 'code_verifier is required (PKCE, RFC 7636).' },
  pkce_verifier_malformed: {
    status: 400,
    error: 'invalid_request',
    description: "code_verifier must be 43-128 characters of A-Z, a-z, 0-9, '-', '.', '_', '~'.",
  },
  client_public_grant_not_allowed: {
    status: 400,
    error: 'unauthorized_client',
    description: 'A public client may use only the authorization_code and refresh_token grants.',
  },

  // The authorization endpoint (RFC 6749 §4.1.2.1, OAuth 2.1 §4.1.2.1). Errors before the client
  // and redirect URI are validated are shown on a page, never redirected (an open redirector).
  authorize_client_invalid: {
    status: 400,
    error: 'invalid_request',
    description: 'The client is unknown or not allowed to use this flow.',
  },
  authorize_redirect_uri_invalid: {
    status: 400,
    error: 'invalid_request',
    description: 'The redirect_uri is missing or is not registered for this client.',
  },
  authorize_response_type_unsupported: {
    status: 400,
    error: 'unsupported_response_type',
    description: 'Only response_type=code is supported.',
  },
  authorize_response_mode_unsupported: {
    status: 400,
    error: 'invalid_request',
    description: 'Only response_mode=query is supported.',
  },
  authorize_request_object_unsupported: {
    status: 400,
    error: 'request_not_supported',
    description: 'The request parameter (a request object) is not supported.',
  },
  authorize_request_uri_unsupported: {
    status: 400,
    error: 'request_uri_not_supported',
    description: 'The request_uri parameter is not supported.',
  },
  authorize_dpop_jkt_invalid: {
    status: 400,
    error: 'invalid_request',
    description: 'dpop_jkt must be the 43-character base64url SHA-256 JWK thumbprint of the DPoP key (RFC 9449 section 10).',
  },
  pkce_challenge_missing: { status: 400, error: 'invalid_request', description: 'code_challenge is required (PKCE, RFC 7636).' },
  pkce_method_unsupported: {
    status: 400,
    error: 'invalid_request',
    description: 'Only code_challenge_method=S256 is supported.',
  },
  pkce_challenge_malformed: {
    status: 400,
    error: 'invalid_request',
    description: 'code_challenge must be the 43-character base64url SHA-256 of the code_verifier.',
  },
  // OIDC Core §3.1.2.1: `prompt=none` with another value, and a `max_age` that is no number of seconds.
  authorize_prompt_invalid: {
    status: 400,
    error: 'invalid_request',
    description: 'prompt=none cannot be combined with another prompt value.',
  },
  authorize_max_age_invalid: {
    status: 400,
    error: 'invalid_request',
    description: 'max_age must be a non-negative whole number of seconds.',
  },
  authorize_access_denied: { status: 403, error: 'access_denied', description: 'The resource owner denied the request.' },
  // 403, not 401: a 401 must carry a WWW-Authenticate challenge (RFC 9110 §15.5.2), and no HTTP
  // authentication scheme signs a person in at this page (an SSO proxy or an OIDC login does).
  authorize_login_required: { status: 403, error: 'login_required', description: 'The user is not authenticated.' },
  // OIDC Core §3.1.2.6: prompt=none, and the consent page would be needed.
  authorize_consent_required: { status: 403, error: 'consent_required', description: 'The user has not approved this request.' },
  authorize_consent_invalid: {
    status: 400,
    error: 'invalid_request',
    description: 'The consent form has expired or does not belong to this request; start again.',
  },
  // Shown as a page (400); its error goes to the client only for prompt=none (OIDC Core §3.1.2.6):
  // the request needs the browser's own page load, an interaction.
  authorize_not_navigation: {
    status: 400,
    error: 'interaction_required',
    description: 'The authorization endpoint answers only a page load of the browser itself, not a script, a frame or an embedded object.',
  },
  // 403 for the same reason as authorize_login_required: no HTTP authentication scheme to name in
  // the WWW-Authenticate challenge a 401 requires (the person signs in at the OIDC provider).
  authorize_login_failed: {
    status: 403,
    error: 'access_denied',
    description: 'Signing in at the identity provider did not complete. Start again from the application.',
  },
  authorize_login_not_allowed: {
    status: 403,
    error: 'access_denied',
    description: 'This account may not sign in here.',
  },
  authorize_login_unavailable: {
    status: 502,
    error: 'temporarily_unavailable',
    description: 'The identity provider could not be reached. Try again later.',
  },
  // The login callback: `oidc.max_token_requests_in_flight` token requests to the provider are in flight.
  authorize_login_busy: {
    status: 503,
    error: 'temporarily_unavailable',
    description: 'Too many sign-ins are in progress. Try again shortly.',
  },
  // The login callback: this connecting address's bucket (`oidc.callback_rate_limit`) is empty. As
  // the token, revocation and registration limits: 429 with Retry-After.
  authorize_login_rate_limited: {
    status: 429,
    error: 'temporarily_unavailable',
    description: 'Too many sign-ins from this network address. Try again later.',
  },
  authorize_disabled: { status: 404, error: 'invalid_request', description: 'The authorization endpoint is not enabled.' },

  // The token endpoint: the client's bucket (`token_rate_limit`) is empty. RFC 6749 §5.2 has no
  // code for it; as the revocation and registration limits, 429 temporarily_unavailable with
  // Retry-After.
  token_rate_limited: {
    status: 429,
    error: 'temporarily_unavailable',
    description: 'Too many token requests from this client; try again later.',
  },

  // Revocation (RFC 7009): the client's bucket (`revocation_rate_limit`) is empty. §2.2.1 names 503
  // for a server that cannot take a revocation now; this is the caller's own rate, so 429 with
  // Retry-After, as the registration limit answers.
  revocation_rate_limited: {
    status: 429,
    error: 'temporarily_unavailable',
    description: 'Too many revocation requests from this client; try again later.',
  },

  // Introspection (RFC 7662): the client's bucket (`introspection_rate_limit`) is empty. RFC 7662
  // names no code for it; as the revocation limit, 429 temporarily_unavailable with Retry-After.
  introspection_rate_limited: {
    status: 429,
    error: 'temporarily_unavailable',
    description: 'Too many introspection requests from this client; try again later.',
  },
  // Token, revocation and introspection endpoints: the address's bucket of failed client
  // authentications (`auth_failure_limit`) is empty, refused before its credentials are checked.
  client_auth_failure_rate_limited: {
    status: 429,
    error: 'temporarily_unavailable',
    description: 'Too many failed client authentications from this address; try again later.',
  },

  // Dynamic client registration (RFC 7591 §3.2.2).
  registration_disabled: { status: 404, error: 'invalid_request', description: 'Dynamic client registration is not enabled.' },
  // RFC 6750 §3.1: no Authorization header at all; its challenge carries no error code.
  registration_token_missing: {
    status: 401,
    error: 'invalid_token',
    description: 'A valid initial access token is required to register a client.',
  },
  registration_token_invalid: {
    status: 401,
    error: 'invalid_token',
    description: 'A valid initial access token is required to register a client.',
  },
  registration_metadata_invalid: {
    status: 400,
    error: 'invalid_client_metadata',
    description: 'The client metadata is invalid.',
  },
  registration_metadata_member_repeated: {
    status: 400,
    error: 'invalid_client_metadata',
    description: 'The client metadata names a member more than once in one object.',
  },
  registration_rate_limited: {
    status: 429,
    error: 'temporarily_unavailable',
    description: 'Too many registrations from this address; try again later.',
  },
  // Not the client's metadata (RFC 7591 §3.2.2 has no code for it): the server holds as many
  // registered clients as `registration.max_clients` allows.
  registration_capacity_reached: {
    status: 503,
    error: 'temporarily_unavailable',
    description: 'No more clients can be registered right now; try again later.',
  },
  registration_redirect_uri_invalid: {
    status: 400,
    error: 'invalid_redirect_uri',
    description:
      'redirect_uris must list 1-10 absolute https URIs (http only on 127.0.0.1, [::1] or localhost), without fragment, credentials, dot segments or response parameters.',
  },

  // Token exchange (RFC 8693 §2.2.2: invalid or unacceptable tokens are invalid_request).
  token_type_unsupported: {
    status: 400,
    error: 'invalid_request',
    description: 'The token type is not supported for token exchange.',
  },
  subject_token_invalid: { status: 400, error: 'invalid_request', description: 'The subject token is invalid.' },
  actor_token_invalid: { status: 400, error: 'invalid_request', description: 'The actor token is invalid.' },
  subject_token_not_permitted: {
    status: 400,
    error: 'invalid_request',
    description: 'The subject token was not issued to this client, nor addressed to it.',
  },
  // issuers[].exchange_clients: a trusted issuer's token from a client it does not list. The
  // caller is told what an invalid token's holder is told: nothing about the token.
  subject_token_client_not_allowed: { status: 400, error: 'invalid_request', description: 'The subject token is invalid.' },
  actor_token_client_not_allowed: { status: 400, error: 'invalid_request', description: 'The actor token is invalid.' },
  actor_token_not_client: {
    status: 400,
    error: 'invalid_request',
    description: 'The actor token does not belong to the authenticated client.',
  },
  // RFC 9068 §5: a client_credentials token's `sub` is the client id, so another issuer's subject
  // or actor named like a client would read as that client (login_subject_is_client at /authorize).
  subject_token_subject_is_client: {
    status: 400,
    error: 'invalid_request',
    description: "The subject token's subject may not be delegated here.",
  },
  actor_token_subject_is_client: {
    status: 400,
    error: 'invalid_request',
    description: 'The actor token does not belong to the authenticated client.',
  },
  // RFC 8693 §4.1: only this issuer's own tokens vouch for its actors, and another issuer's
  // token for its own actors only (never this service's, nor a third issuer's).
  subject_token_act_names_issuer: {
    status: 400,
    error: 'invalid_request',
    description: "The subject token's actor chain names actors of another issuer.",
  },
  actor_token_proof_required: {
    status: 400,
    error: 'invalid_request',
    description: 'The actor token is sender-constrained; the request needs a DPoP proof of its key.',
  },
  actor_not_permitted: {
    status: 400,
    error: 'invalid_request',
    description: 'The subject token does not permit this actor (may_act).',
  },
  delegation_chain_too_deep: {
    status: 400,
    error: 'invalid_request',
    description: 'The delegation chain would exceed the maximum depth.',
  },
  grant_inactive: {
    status: 400,
    error: 'invalid_request',
    description: 'The grant the subject token belongs to is revoked or expired.',
  },

  // The admin API (bearer-protected, RFC 6750 errors).
  admin_token_missing: { status: 401, error: 'invalid_token', description: 'An admin access token is required.' },
  admin_token_invalid: { status: 401, error: 'invalid_token', description: 'The admin access token is invalid.' },
  // A token also for another audience has been handed to that resource server, which could replay it here.
  admin_token_audience_shared: {
    status: 401,
    error: 'invalid_token',
    description: 'The admin access token is for other audiences too; the admin API takes one for its audience alone.',
  },
  admin_scope_missing: {
    status: 403,
    error: 'insufficient_scope',
    description: 'The access token lacks the admin scope.',
  },
  admin_not_found: { status: 404, error: 'invalid_request', description: 'No such resource.' },
  // A revocation request names exactly what it revokes: a member left out or misread would revoke
  // more (a subject at every issuer when its issuer is ignored), so nothing is ignored.
  admin_revoke_selector_invalid: {
    status: 400,
    error: 'invalid_request',
    description: 'Give exactly one of grant_id, subject, client_id and token.',
  },
  admin_revoke_member_invalid: {
    status: 400,
    error: 'invalid_request',
    description: 'grant_id, subject, issuer, client_id, token and reason are non-empty strings without control characters.',
  },
  admin_revoke_member_unknown: {
    status: 400,
    error: 'invalid_request',
    description: 'The request body has a member other than grant_id, subject, issuer, client_id, token and reason.',
  },
  admin_revoke_issuer_without_subject: { status: 400, error: 'invalid_request', description: 'issuer is given only with subject.' },
  // A subject is revoked at an issuer by name: one no token or grant here can have (a typo, a
  // trailing slash) would revoke nothing and read as done, the subject's tokens still exchangeable.
  admin_revoke_issuer_unknown: {
    status: 400,
    error: 'invalid_request',
    description: 'issuer is neither this issuer nor a trusted one, and the subject holds no grant of it here.',
  },
  // The reason is stored with each revoked grant (revoked_reason, shown by `tessera grants tree`)
  // and written into grant.revoked: a token pasted there by mistake would be kept whole.
  admin_revoke_reason_token: {
    status: 400,
    error: 'invalid_request',
    description: 'reason holds a token, which would be stored with the grants and written into the audit trail.',
  },

  // DPoP at the token endpoint (RFC 9449 §5).
  dpop_proof_invalid: { status: 400, error: 'invalid_dpop_proof', description: 'The DPoP proof is invalid.' },
  // A proof whose jti this server already recorded (RFC 9449 §11.1): a captured proof replayed, audited
  // apart from a malformed one.
  dpop_proof_replayed: { status: 400, error: 'invalid_dpop_proof', description: 'The DPoP proof was already used.' },
  // RFC 9449 §5.2: a client registered with dpop_bound_access_tokens (`--dpop-bound`) sent a token
  // request without a DPoP header. The RFC names no error for it; the proof is missing, not invalid
  // (invalid_dpop_proof), and the grant (a refresh token, a code) is sound, so not invalid_grant,
  // which a client may read as its session gone: the request lacks what it needs (RFC 6749 §5.2).
  client_dpop_proof_required: {
    status: 400,
    error: 'invalid_request',
    description: 'This client is registered to use DPoP (dpop_bound_access_tokens): the token request needs a DPoP proof.',
  },
  // RFC 9449 §8 (token_service.dpop.nonce): 400 here, where the resource server's is a 401 (§9);
  // the nonce to retry with goes in the DPoP-Nonce header.
  dpop_nonce_required: {
    status: 400,
    error: 'use_dpop_nonce',
    description: 'Authorization server requires nonce in DPoP proof.',
  },

  // The server itself.
  signing_key_unavailable: {
    status: 503,
    error: 'temporarily_unavailable',
    description: 'No signing key is active, or the active key is refused; run `tessera keys rotate --now`.',
  },
  store_unavailable: { status: 503, error: 'temporarily_unavailable', description: 'The store is unavailable; retry later.' },
  // `audit.on_queue_full: refuse` while the token service's audit queue holds `audit.max_queue`
  // events: the request is refused (and not audited) rather than served unaudited.
  audit_unavailable: {
    status: 503,
    error: 'temporarily_unavailable',
    description: 'The audit trail cannot record this request right now; retry later.',
  },
  server_error: { status: 500, error: 'server_error', description: 'The server encountered an unexpected condition.' },
} as const satisfies Record<string, OAuthCodeSpec>;

/** One problem in a JSON request body: where (a JSON path such as `$.issuer`) and what to write instead. */
export interface BodyProblem {
  /** The stable reason code of this problem (the error's own code is its first problem's). */
  readonly code: OAuthErrorCode;
  readonly path: string;
  readonly message: string;
}

/** How many of an error's {@link BodyProblem}s its `error_description` lists. */
const MAX_PROBLEMS_SHOWN = 10;

/** RFC 6749 §5.2 error_description characters, minus `'`, `[` and `]` (they frame a name). */
const SHOWABLE_NAME = /^[\x20\x21\x23-\x26\x28-\x5A\x5E-\x7E]{1,64}$/;

/**
 * The JSON path of member `name` of the object at `parent` (`$`, `$.subject`, `$['a b']`), as an
 * error description may show it: a name that is long, has a token's or secret's shape, or holds a
 * character an `error_description` may not (RFC 6749 §5.2) is shown by its length alone.
 */
export function memberPath(parent: string, name: string): string {
  if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) && !secretShaped(name) && name.length <= 64) return `${parent}.${name}`;
  if (SHOWABLE_NAME.test(name) && !secretShaped(name)) return `${parent}['${name}']`;
  return `${parent}[a member name of ${name.length} characters, not shown]`;
}

/** The closed union of token-service reason codes. */
export type OAuthErrorCode = keyof typeof OAUTH_ERROR_CODES;

/** Codes that were released and then retired. They must never be given a new meaning. */
export const RETIRED_OAUTH_CODES: readonly string[] = [];

/**
 * A refused token-service request. `message` is the fixed description of the code (never request
 * data); `code` is the stable reason for the audit trail; `status` and `error` are what the caller
 * sees.
 *
 * @example
 * ```ts
 * try {
 *   return await service.token(request);
 * } catch (e) {
 *   if (e instanceof OAuthError) reply(e.status, e.toJSON(), e.headers());
 * }
 * ```
 */
export class OAuthError extends Error {
  override readonly name = 'OAuthError';
  readonly code: OAuthErrorCode;
  readonly status: number;
  readonly error: OAuthErrorValue;
  /** True when the client tried HTTP Basic (kept for the audit trail; every 401 carries the challenge). */
  readonly basicChallenge: boolean;
  /** For admin API errors: the scope to name in the Bearer challenge. */
  readonly scope: string | undefined;
  /** For a 429: seconds until a request may succeed (`Retry-After`). */
  readonly retryAfter: number | undefined;
  /** For `use_dpop_nonce`: the nonce to send back in the `DPoP-Nonce` header (RFC 9449 §8). */
  readonly dpopNonce: string | undefined;
  /**
   * Why, more precisely than `code`, for the audit event's `detail` only (never the response):
   * e.g. the verifier's reason code for an external subject token. Never a secret.
   */
  readonly auditDetail: Readonly<Record<string, string>> | undefined;
  /**
   * For a refused JSON body (the admin API): every problem found, each with its JSON path (`$.issuer`)
   * and what to write instead; `error_description` lists them all. Built from member names and
   * fixed text only, never a value sent (see {@link memberPath}).
   */
  readonly problems: readonly BodyProblem[];

  constructor(
    code: OAuthErrorCode,
    options: {
      basic?: boolean;
      scope?: string;
      retryAfter?: number;
      dpopNonce?: string;
      auditDetail?: Readonly<Record<string, string>>;
      problems?: readonly BodyProblem[];
      cause?: unknown;
    } = {},
  ) {
    const spec: OAuthCodeSpec = OAUTH_ERROR_CODES[code];
    super(spec.description, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = spec.status;
    this.error = spec.error;
    this.basicChallenge = options.basic === true;
    this.scope = options.scope;
    this.retryAfter = options.retryAfter;
    this.dpopNonce = options.dpopNonce;
    this.auditDetail = options.auditDetail;
    this.problems = options.problems ?? [];
  }

  /** The fixed, caller-safe description. */
  get description(): string {
    return OAUTH_ERROR_CODES[this.code].description;
  }

  /**
   * The JSON body (RFC 6749 §5.2): the error and its description, nothing else. With
   * {@link OAuthError.problems}, the description lists each (`$.issuer: …; $.isuer: …`).
   */
  toJSON(): { error: OAuthErrorValue; error_description: string } {
    if (this.problems.length === 0) return { error: this.error, error_description: this.description };
    const n = this.problems.length;
    // A body of thousands of unknown members gets a description of bounded length.
    const shown = this.problems.slice(0, MAX_PROBLEMS_SHOWN).map((p) => `${p.path}: ${p.message}`);
    if (n > MAX_PROBLEMS_SHOWN) shown.push(`and ${n - MAX_PROBLEMS_SHOWN} more`);
    const list = shown.join('; ');
    // RFC 6749 §5.2: error_description is printable ASCII without '"' and '\'; the problems are
    // built so, and anything else is replaced rather than sent.
    const text = `The request body has ${n} problem${n === 1 ? '' : 's'}: ${list}.`.replace(/[^\x20\x21\x23-\x5B\x5D-\x7E]/g, '?');
    return { error: this.error, error_description: text };
  }

  /** Response headers this error requires besides the JSON content type. */
  headers(realm = 'tessera'): Record<string, string> {
    // RFC 6749 §5.2 requires the challenge when the client tried Basic; RFC 9110 §15.5.2 requires
    // one on every 401, so it is sent whatever method was tried (or none).
    if (this.status === 401 && this.error === 'invalid_client') {
      return { 'www-authenticate': `Basic realm="${realm}", charset="UTF-8"` };
    }
    // RFC 6750 §3.1: a request without any credentials gets the challenge without an error code.
    if (this.code === 'admin_token_missing' || this.code === 'registration_token_missing') {
      return { 'www-authenticate': `Bearer realm="${realm}"` };
    }
    if (this.error === 'invalid_token' || this.error === 'insufficient_scope') {
      const scope = this.scope ? `, scope="${this.scope}"` : '';
      return { 'www-authenticate': `Bearer realm="${realm}", error="${this.error}"${scope}` };
    }
    if (this.status === 405) return { allow: this.code === 'request_method_get_only' ? 'GET, HEAD' : 'POST' };
    // RFC 9110 §15.5.16: a 415 for a content coding names the codings accepted (§12.5.3).
    if (this.code === 'request_content_encoding') return { 'accept-encoding': 'identity' };
    if (this.status === 503) return { 'retry-after': '5' };
    if (this.status === 429) return { 'retry-after': String(this.retryAfter ?? 1) };
    if (this.dpopNonce !== undefined) return { 'dpop-nonce': this.dpopNonce };
    return {};
  }
}

/** True when `value` is an {@link OAuthError}. */
export function isOAuthError(value: unknown): value is OAuthError {
  return value instanceof OAuthError;
}
