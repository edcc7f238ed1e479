/**
 * Tessera's error catalogue: one closed union of stable reason codes, each bound to the HTTP
 * status and the RFC error the caller sees. The code goes to the audit trail; the caller gets only
 * `status`, `error` and a fixed, token-free description.
 *
 * Codes are never renamed or reused once released (see docs/errors.md); retire a code by leaving
 * it in {@link RETIRED_CODES}.
 *
 * @module
 */

/** The error values RFC 6750 §3.1 and RFC 9449 §7 define for resource servers, plus the statuses
 * that have no RFC error (`null`: a 401 without `error=` when no credentials were sent at all). */
export type ResourceErrorValue =
  | 'invalid_request'
  | 'invalid_token'
  | 'insufficient_scope'
  | 'invalid_dpop_proof'
  | 'use_dpop_nonce'
  | 'temporarily_unavailable'
  | 'not_found'
  | 'rate_limited'
  | 'bad_gateway'
  | 'gateway_timeout'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'forbidden'
  | null;

interface CodeSpec {
  readonly status: number;
  readonly error: ResourceErrorValue;
  /** Fixed text safe to show to the caller. Never interpolated with request data. */
  readonly description: string;
}

/**
 * Every reason code the verifier and gateway can produce. Adding a code is a minor change;
 * removing or renaming one is a breaking change for anyone alerting on it.
 */
export const ERROR_CODES = {
  // RFC 6750 §2 transport: the request itself is malformed (400 invalid_request).
  request_malformed_authorization: {
    status: 400,
    error: 'invalid_request',
    description: 'The Authorization header is not a single scheme followed by one token68 value.',
  },
  request_multiple_authorization: {
    status: 400,
    error: 'invalid_request',
    description: 'The request carries more than one Authorization header.',
  },
  request_multiple_methods: {
    status: 400,
    error: 'invalid_request',
    description: 'The request carries an access token by more than one method.',
  },
  request_empty_token: {
    status: 400,
    error: 'invalid_request',
    description: 'The access token is empty.',
  },
  request_query_token_disabled: {
    status: 400,
    error: 'invalid_request',
    description: 'Access tokens in the URI query are not accepted; use the Authorization header.',
  },
  request_form_token_invalid: {
    status: 400,
    error: 'invalid_request',
    description: 'A form-body access token requires a POST-like method and an application/x-www-form-urlencoded body.',
  },
  request_multiple_dpop_proofs: {
    status: 400,
    error: 'invalid_request',
    description: 'The request carries more than one DPoP header.',
  },
  request_path_invalid: {
    status: 400,
    error: 'invalid_request',
    description: 'The request path is not a normalized absolute path.',
  },
  request_host_invalid: {
    status: 400,
    error: 'invalid_request',
    description: 'The Host header is malformed or repeated.',
  },
  request_framing_invalid: {
    status: 400,
    error: 'invalid_request',
    description: 'The request framing (HTTP version or Transfer-Encoding) is not accepted.',
  },
  request_too_large: {
    status: 413,
    error: 'payload_too_large',
    description: 'The request body exceeds the configured limit.',
  },

  // RFC 6750 §3.1: no credentials at all is a bare challenge, without an error code.
  credentials_missing: {
    status: 401,
    error: null,
    description: 'Authentication is required.',
  },

  // Token validation failures (401 invalid_token).
  token_too_large: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token exceeds the size limit.',
  },
  token_malformed: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token is not a well-formed JWT.',
  },
  token_header_invalid: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token header is invalid.',
  },
  token_payload_invalid: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token claims are not a valid JSON object.',
  },
  token_alg_not_allowed: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token is signed with an algorithm that is not allowed.',
  },
  token_typ_invalid: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token type is not accepted.',
  },
  token_crit_unsupported: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token requires an unsupported critical header extension.',
  },
  token_key_reference_untrusted: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token header references a key by a method that is never trusted.',
  },
  token_kid_unknown: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token is signed with an unknown key.',
  },
  token_key_ambiguous: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token has no key id and the issuer has several candidate keys.',
  },
  token_signature_invalid: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token signature is invalid.',
  },
  token_issuer_unknown: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token issuer is not trusted.',
  },
  token_audience_invalid: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token is not intended for this audience.',
  },
  token_expired: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token expired.',
  },
  token_not_yet_valid: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token is not valid yet.',
  },
  token_iat_in_future: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token was issued in the future.',
  },
  token_lifetime_exceeded: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token lifetime exceeds the accepted maximum.',
  },
  token_claim_missing: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token lacks a required claim.',
  },
  token_claim_invalid: {
    status: 401,
    error: 'invalid_token',
    description: 'An access token claim has the wrong type or shape.',
  },
  token_revoked: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token was revoked.',
  },
  token_unknown: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token is not recognized.',
  },
  token_inactive: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token is not active.',
  },
  token_dpop_bound_as_bearer: {
    status: 401,
    error: 'invalid_token',
    description: 'A DPoP-bound access token must be presented with the DPoP scheme.',
  },
  token_not_dpop_bound: {
    status: 401,
    error: 'invalid_token',
    description: 'The DPoP scheme requires a DPoP-bound access token.',
  },
  token_dpop_required: {
    status: 401,
    error: 'invalid_token',
    description: 'This resource requires a DPoP-bound access token.',
  },
  dpop_binding_mismatch: {
    status: 401,
    error: 'invalid_token',
    description: 'The DPoP proof key does not match the key the access token is bound to.',
  },

  // Key material or an introspection endpoint that cannot be reached: the token may be fine,
  // but it cannot be checked, so the request is refused (fail closed) with a retryable status.
  keys_unavailable: {
    status: 503,
    error: 'temporarily_unavailable',
    description: 'The keys needed to verify the access token are temporarily unavailable.',
  },
  // A remote key set that could not be refreshed for longer than `jwks_cache.max_stale` past its
  // expiry was dropped: a key withdrawn meanwhile at an issuer we cannot reach must not stay trusted.
  keys_stale: {
    status: 503,
    error: 'temporarily_unavailable',
    description: 'The keys needed to verify the access token could not be refreshed in time.',
  },
  introspection_unavailable: {
    status: 503,
    error: 'temporarily_unavailable',
    description: 'The access token cannot be checked right now.',
  },
  // The application's revocation check (`runtime.revocation`) threw, or answered no boolean (a
  // promise: it must be synchronous): the token may be revoked, and accepting it unchecked would
  // let a revoked token through.
  revocation_unavailable: {
    status: 503,
    error: 'temporarily_unavailable',
    description: 'The access token cannot be checked right now.',
  },
  // `token_service.revocation_max_staleness`: this instance has not read the revocation log for
  // longer than it allows, so it cannot tell whether another process revoked this issuer's token.
  // The caller is told no more than for any token that cannot be checked.
  revocation_state_stale: {
    status: 503,
    error: 'temporarily_unavailable',
    description: 'The access token cannot be checked right now.',
  },
  // The replay cache cannot record the proof's jti (the store cannot answer, or the in-memory cache
  // is full of proofs still live): accepting the proof without it would let it be replayed.
  dpop_replay_unavailable: {
    status: 503,
    error: 'temporarily_unavailable',
    description: 'The DPoP proof cannot be checked right now.',
  },

  // RFC 9449 §7.1: DPoP proof failures.
  dpop_proof_missing: {
    status: 401,
    error: 'invalid_dpop_proof',
    description: 'The DPoP scheme requires a DPoP proof header.',
  },
  dpop_proof_invalid: {
    status: 401,
    error: 'invalid_dpop_proof',
    description: 'The DPoP proof is invalid.',
  },
  dpop_htm_mismatch: {
    status: 401,
    error: 'invalid_dpop_proof',
    description: 'The DPoP proof is for another HTTP method.',
  },
  dpop_htu_mismatch: {
    status: 401,
    error: 'invalid_dpop_proof',
    description: 'The DPoP proof is for another URI.',
  },
  dpop_iat_invalid: {
    status: 401,
    error: 'invalid_dpop_proof',
    description: 'The DPoP proof is too old or from the future.',
  },
  dpop_replayed: {
    status: 401,
    error: 'invalid_dpop_proof',
    description: 'The DPoP proof was already used.',
  },
  dpop_ath_mismatch: {
    status: 401,
    error: 'invalid_dpop_proof',
    description: 'The DPoP proof is not bound to this access token.',
  },
  dpop_nonce_required: {
    status: 401,
    error: 'use_dpop_nonce',
    description: 'Resource server requires nonce in DPoP proof.',
  },
  // One proof key holds its whole share of the in-memory replay cache with proofs still live:
  // recording more would let one bound token fill the cache for every other caller.
  dpop_key_rate_limited: {
    status: 429,
    error: 'rate_limited',
    description: 'Too many recent DPoP proofs by this key; retry later.',
  },

  // Authorization (403 insufficient_scope).
  scope_insufficient: {
    status: 403,
    error: 'insufficient_scope',
    description: 'The access token does not grant the scope this request requires.',
  },
  policy_no_match: {
    status: 403,
    error: 'insufficient_scope',
    description: 'No rule grants access to this request.',
  },
  policy_condition_failed: {
    status: 403,
    error: 'insufficient_scope',
    description: 'The access token does not satisfy a condition this request requires.',
  },

  // Gateway.
  route_not_found: {
    status: 404,
    error: 'not_found',
    description: 'No route matches this request.',
  },
  rate_limited: {
    status: 429,
    error: 'rate_limited',
    description: 'Too many requests.',
  },
  // `gateway.auth_failure_limit`: the client address spent its bucket of failed authentications;
  // refused before the token is checked, so a flood of junk tokens costs no verifier work and no
  // call to the introspection endpoint.
  auth_failure_rate_limited: {
    status: 429,
    error: 'rate_limited',
    description: 'Too many failed authentications from this address; retry later.',
  },
  upstream_unavailable: {
    status: 502,
    error: 'bad_gateway',
    description: 'The upstream service is unavailable.',
  },
  upstream_timeout: {
    status: 504,
    error: 'gateway_timeout',
    description: 'The upstream service did not answer in time.',
  },
  upstream_credential_unavailable: {
    status: 502,
    error: 'bad_gateway',
    description: 'The credential for the upstream service could not be obtained.',
  },
  // A capacity refusal, not a failure (RFC 9110 §15.6.4: 503 with Retry-After): the route's
  // `credential.max_in_flight` calls to the token service, or two of this caller's, are unsettled,
  // so the mint is not started. As `introspection_unavailable` answers `introspection.max_in_flight`.
  upstream_credential_busy: {
    status: 503,
    error: 'temporarily_unavailable',
    description: 'The credential for the upstream service cannot be obtained right now; try again later.',
  },
  // The upstream answered 401 to the credential the gateway injected (static or exchange): the
  // caller never holds that credential, so the upstream's challenge is not theirs to answer.
  upstream_credential_rejected: {
    status: 502,
    error: 'bad_gateway',
    description: "The upstream service refused the gateway's credential.",
  },
  // The upstream answered a WebSocket upgrade with a 101 that accepts no key the gateway sent
  // (RFC 6455 §4.2.2): joining the two connections would give the caller a raw line to an
  // upstream that may still read HTTP on it, past every rule and identity header.
  upstream_upgrade_invalid: {
    status: 502,
    error: 'bad_gateway',
    description: 'The upstream service answered the protocol upgrade with an invalid handshake.',
  },
  // The upstream answered with a status outside 100–599 (RFC 9110 §15; HTTP/1.1 parsers take any
  // three digits): a caller or a proxy in front may misread it, so none of the answer is relayed.
  upstream_status_invalid: {
    status: 502,
    error: 'bad_gateway',
    description: 'The upstream service answered with an invalid status code.',
  },
  request_upgrade_refused: {
    status: 400,
    error: 'invalid_request',
    description: 'This route does not accept this protocol upgrade.',
  },
  // A WebSocket upgrade while the gateway drains: the stream would be closed (1001) as soon as it
  // opened, so it is refused as unavailable, with Retry-After, for the client to reconnect (to
  // another instance, or to this one restarted), not as a permanent refusal of the route.
  gateway_shutting_down: {
    status: 503,
    error: 'temporarily_unavailable',
    description: 'The gateway is shutting down; retry the request.',
  },
  // `audit.on_queue_full: refuse`: the audit queue holds `audit.max_queue` events (the store or
  // an output failing, or an output hung), so this request's decision could not be recorded; refused rather than
  // served unaudited, with Retry-After, until the outputs take the queue again.
  audit_unavailable: {
    status: 503,
    error: 'temporarily_unavailable',
    description: 'The audit trail cannot record this request right now; retry later.',
  },
  forward_auth_peer_refused: {
    status: 404,
    error: 'not_found',
    description: 'No route matches this request.',
  },
  forward_auth_request_invalid: {
    status: 400,
    error: 'invalid_request',
    description: 'The forward-auth request does not describe the original request (method and URI).',
  },
  forward_auth_secret_invalid: {
    status: 403,
    error: 'forbidden',
    description: 'The forward-auth request is not from the configured proxy.',
  },
  // The proxy forwards the request itself, and an upstream honouring a method or path override
  // (X-HTTP-Method-Override, `_method`, X-Original-URL…) would act on something else than allowed.
  forward_auth_override_refused: {
    status: 400,
    error: 'invalid_request',
    description: 'Method and path overrides are not accepted.',
  },
  // The proxy forwards the request itself, and copies only the dashed names the answer carries: an
  // identity or credential header spelled with `_` (X_Tessera_Subject) would reach the upstream
  // beside them, and CGI-style apps read it as the same header.
  forward_auth_header_spoof_refused: {
    status: 400,
    error: 'invalid_request',
    description: 'Headers the gateway sets for the upstream are not accepted from the caller.',
  },
  // The proxy forwards the request itself: a token in the query would reach the upstream.
  forward_auth_query_token_refused: {
    status: 400,
    error: 'invalid_request',
    description: 'Access tokens in the URI query are not accepted here; use the Authorization header.',
  },
  // The proxy forwards the request itself, Sec-WebSocket-Protocol as the client sent it: a
  // subprotocol carrying the presented token or a configured secret (`bearer, <token>`) would reach
  // the upstream, where Tessera's own proxy removes it.
  forward_auth_subprotocol_credential_refused: {
    status: 400,
    error: 'invalid_request',
    description: 'Credentials in Sec-WebSocket-Protocol are not accepted here; send the token in the Authorization header only.',
  },
  // A configuration reload withdrew the credential an exchange in flight was authorized with.
  credential_withdrawn: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token is no longer accepted.',
  },
  // A configuration reload narrowed what the caller may do (a rule, a route, its accepted kinds of
  // token, a static token's scopes): an exchange in flight it no longer allows.
  config_narrowed: {
    status: 403,
    error: 'insufficient_scope',
    description: 'This request is no longer allowed.',
  },
  // The introspection endpoint, asked again about the token of an exchange in flight, still calls
  // it active but no longer grants the scope the exchange's rule requires.
  token_scope_narrowed: {
    status: 403,
    error: 'insufficient_scope',
    description: 'The access token no longer grants the scope this request requires.',
  },
  // The introspection endpoint, asked again about the token of an exchange in flight, names another
  // subject or client than when it was admitted: the upstream was told the caller is someone else.
  token_identity_changed: {
    status: 401,
    error: 'invalid_token',
    description: 'The access token no longer names the caller this request was admitted for.',
  },

  // MCP routes: the JSON-RPC request the gateway reads before deciding, and session binding.
  mcp_content_type_invalid: {
    status: 415,
    error: 'unsupported_media_type',
    description: 'An MCP request body must be application/json in UTF-8.',
  },
  mcp_content_encoding_refused: {
    status: 415,
    error: 'unsupported_media_type',
    description: 'An MCP request body must not be compressed (no Content-Encoding).',
  },
  mcp_message_invalid: {
    status: 400,
    error: 'invalid_request',
    description: 'The request body is not a JSON-RPC 2.0 message.',
  },
  mcp_batch_refused: {
    status: 400,
    error: 'invalid_request',
    description: 'JSON-RPC batches are not accepted; send one message per request.',
  },
  mcp_tool_name_invalid: {
    status: 400,
    error: 'invalid_request',
    description: 'A tools/call request needs params.name: 1 to 128 visible ASCII characters.',
  },
  mcp_session_unknown: {
    status: 404,
    error: 'not_found',
    description: 'Session not found.',
  },
  mcp_session_principal_mismatch: {
    status: 404,
    error: 'not_found',
    description: 'Session not found.',
  },
  mcp_event_id_invalid: {
    status: 400,
    error: 'invalid_request',
    description: 'Last-Event-ID is not an event id of this session.',
  },
  mcp_upstream_session_invalid: {
    status: 502,
    error: 'bad_gateway',
    description: 'The upstream service is unavailable.',
  },
  mcp_tools_list_invalid: {
    status: 502,
    error: 'bad_gateway',
    description: 'The upstream service is unavailable.',
  },
  // A task list (`result.tasks`) outside the answer to a tasks/list (gateway/mcp/task-list.ts).
  mcp_upstream_task_list_refused: {
    status: 502,
    error: 'bad_gateway',
    description: 'The upstream service is unavailable.',
  },
  mcp_forward_auth_refused: {
    status: 404,
    error: 'not_found',
    description: 'No route matches this request.',
  },
  // MCP tasks bound to the principal that created them (gateway/mcp/tasks.ts): a task another
  // principal owns and one the gateway never saw created answer alike.
  mcp_task_unknown: {
    status: 404,
    error: 'not_found',
    description: 'Task not found',
  },
  mcp_task_foreign: {
    status: 404,
    error: 'not_found',
    description: 'Task not found',
  },
  mcp_task_list_refused: {
    status: 400,
    error: 'invalid_request',
    description: 'Listing tasks is not supported through this gateway.',
  },
  mcp_task_legacy_refused: {
    status: 400,
    error: 'invalid_request',
    description: 'MCP tasks are not supported over the legacy HTTP+SSE transport; use Streamable HTTP.',
  },
  mcp_task_registry_full: {
    status: 503,
    error: 'temporarily_unavailable',
    description: 'The gateway cannot record more tasks now; try again later.',
  },
  mcp_task_registry_unavailable: {
    status: 503,
    error: 'temporarily_unavailable',
    description: 'The gateway cannot read or record tasks now; try again later.',
  },
  mcp_task_registry_timeout: {
    status: 503,
    error: 'temporarily_unavailable',
    description: 'The gateway cannot read or record tasks now; try again later.',
  },
  mcp_upstream_task_foreign: {
    status: 502,
    error: 'bad_gateway',
    description: 'The upstream service is unavailable.',
  },
  mcp_task_answer_invalid: {
    status: 502,
    error: 'bad_gateway',
    description: 'The upstream service is unavailable.',
  },

  // A2A routes: the request body the gateway reads to know an extended-card call, and that card.
  a2a_content_encoding_refused: {
    status: 415,
    error: 'unsupported_media_type',
    description: 'An A2A request body must not be compressed (no Content-Encoding).',
  },
  a2a_content_type_invalid: {
    status: 415,
    error: 'unsupported_media_type',
    description: 'An A2A request body must be in UTF-8 (no other charset).',
  },
  a2a_message_invalid: {
    status: 400,
    error: 'invalid_request',
    description: 'The request body is not a JSON-RPC message the gateway can read.',
  },
  a2a_extended_card_invalid: {
    status: 502,
    error: 'bad_gateway',
    description: 'The upstream service is unavailable.',
  },
  // A2A tasks bound to the principal that created them (gateway/a2a/): a task another
  // principal owns and one the gateway never saw answer alike.
  a2a_task_unknown: {
    status: 404,
    error: 'not_found',
    description: 'Task not found',
  },
  a2a_task_foreign: {
    status: 404,
    error: 'not_found',
    description: 'Task not found',
  },
  a2a_task_list_refused: {
    status: 400,
    error: 'invalid_request',
    description: 'Listing tasks is not supported through this gateway.',
  },
  a2a_task_path_refused: {
    status: 404,
    error: 'not_found',
    description: 'Task resources of the HTTP+JSON binding are not served through this gateway; use JSON-RPC.',
  },
  a2a_push_url_refused: {
    status: 400,
    error: 'invalid_request',
    description: 'The push notification URL is not a public HTTP(S) address.',
  },
  a2a_task_registry_full: {
    status: 503,
    error: 'temporarily_unavailable',
    description: 'The gateway cannot record more tasks now; try again later.',
  },
  a2a_upstream_task_foreign: {
    status: 502,
    error: 'bad_gateway',
    description: 'The upstream service is unavailable.',
  },
  a2a_upstream_answer_compressed: {
    status: 502,
    error: 'bad_gateway',
    description: 'The upstream service is unavailable.',
  },
  a2a_upstream_answer_too_large: {
    status: 502,
    error: 'bad_gateway',
    description: 'The upstream service is unavailable.',
  },
  a2a_upstream_answer_ambiguous: {
    status: 502,
    error: 'bad_gateway',
    description: 'The upstream service is unavailable.',
  },
  a2a_task_registry_unavailable: {
    status: 503,
    error: 'temporarily_unavailable',
    description: 'The gateway cannot read or record tasks now; try again later.',
  },
  a2a_task_registry_timeout: {
    status: 503,
    error: 'temporarily_unavailable',
    description: 'The gateway cannot read or record tasks now; try again later.',
  },
  a2a_forward_auth_refused: {
    status: 404,
    error: 'not_found',
    description: 'No route matches this request.',
  },
} as const satisfies Record<string, CodeSpec>;

/** The closed union of reason codes. */
export type ErrorCode = keyof typeof ERROR_CODES;

/** Codes that were released and then retired. They must never be given a new meaning. */
export const RETIRED_CODES: readonly string[] = [];

/** Optional, non-secret details an error may carry to the audit trail. */
export interface ErrorDetails {
  /** The claim or header parameter that failed, e.g. `aud`, `alg`, `htu`. */
  readonly claim?: string;
  /** Space-delimited scopes the request required (rendered as `scope=` in the challenge). */
  readonly scope?: string;
  /** For `use_dpop_nonce`: the nonce to send back in the `DPoP-Nonce` header. */
  readonly dpopNonce?: string;
  /** The issuer the token claimed, when it was readable (never the token itself). */
  readonly issuer?: string;
  /** Seconds after which a retry may succeed (rate limits, unavailable keys). */
  readonly retryAfter?: number;
  /**
   * For the audit trail only (`detail.upstream_error`), never sent to the caller: why an upstream
   * credential could not be obtained, e.g. `mint_timeout`.
   */
  readonly upstreamError?: string;
}

/**
 * A denied request. `message` is the fixed description of the code and never contains request
 * data; `code` is the stable reason for the audit trail.
 *
 * @example
 * ```ts
 * const result = await verifier.verify(request);
 * if (!result.ok) {
 *   res.writeHead(result.error.status, { 'www-authenticate': challenge(result.error) });
 * }
 * ```
 */
export class TesseraError extends Error {
  override readonly name = 'TesseraError';
  readonly code: ErrorCode;
  readonly status: number;
  /** The RFC error value for the `error=` attribute and the JSON body, or `null`. */
  readonly error: ResourceErrorValue;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, details: ErrorDetails = {}, options?: { cause?: unknown }) {
    const spec: CodeSpec = ERROR_CODES[code];
    super(spec.description, options);
    this.code = code;
    this.status = spec.status;
    this.error = spec.error;
    this.details = details;
  }

  /** The fixed, caller-safe description of this error. */
  get description(): string {
    return ERROR_CODES[this.code].description;
  }

  /** The JSON body a caller may see: the RFC error and its description, nothing else. */
  toJSON(): { error: string; error_description: string } {
    return { error: this.error ?? 'unauthorized', error_description: this.description };
  }
}

/** True when `value` is a {@link TesseraError}. */
export function isTesseraError(value: unknown): value is TesseraError {
  return value instanceof TesseraError;
}

/** The kind of a value, as an error message names it (`a number`, `null`, `an array`): never the value. */
export function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (Array.isArray(value)) return 'an array';
  const t = typeof value;
  return t === 'object' ? 'an object' : `a ${t}`;
}

/** The codes of {@link ArgumentError}: one, for every malformed argument. */
export type ArgumentErrorCode = 'ERR_INVALID_ARGUMENT';

/**
 * A library function was called with an argument of the wrong shape (a request without `headers`,
 * a `url` that is not a string, an `authorization` header value that is not a string or an array
 * of strings as `node:http` gives them, a token that is not a string). A programming error of the
 * caller, not a refused request: it is thrown (a function returning a promise rejects with it)
 * rather than answered as a deny, so no 400/401 hides the bug. `argument` names what was wrong;
 * the message says what was expected and the kind of value received, never the value.
 *
 * @example
 * ```ts
 * import { ArgumentError, createVerifier } from 'tessera';
 *
 * const verifier = createVerifier(options);
 * try {
 *   await verifier.verify({ method: 'GET', url: '/items/1', headers: req.headersDistinct });
 * } catch (e) {
 *   if (e instanceof ArgumentError) console.error(e.code, e.argument); // ERR_INVALID_ARGUMENT request.headers
 * }
 * ```
 */
export class ArgumentError extends TypeError {
  override readonly name = 'ArgumentError';
  readonly code: ArgumentErrorCode = 'ERR_INVALID_ARGUMENT';
  /** The argument at fault, as a path: `request.headers.authorization`, `token`, `req`. */
  readonly argument: string;

  constructor(argument: string, message: string) {
    super(message);
    this.argument = argument;
  }
}

/** One problem found in configuration or options, with the exact path to it. */
export interface ConfigIssue {
  /** Dotted path into the configuration, e.g. `issuers[0].jwks_uri`. */
  readonly path: string;
  /** What is wrong and what to write instead. */
  readonly message: string;
}

/**
 * A value from the configuration as an error message quotes it: as written (`"30x"`) when it reads
 * as a setting, a name or a path, by its length alone when it has a token's or a secret's shape (a
 * JWS, or a run of 32 or more base64 or hex characters mixing digits and letters). A token or
 * secret put in the wrong option (a JWT as an algorithm, a client secret as a duration) is never
 * repeated, in a terminal or a log.
 */
export function quoted(value: unknown): string {
  const text = String(value);
  return secretShaped(text) ? `a value of ${text.length} characters (not shown: it may be a secret)` : `"${text}"`;
}

/** The Levenshtein distance between `a` and `b`: for "did you mean" suggestions. */
export function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) (d[0] as number[])[j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const row = d[i] as number[];
      const prev = d[i - 1] as number[];
      row[j] = Math.min((prev[j] as number) + 1, (row[j - 1] as number) + 1, (prev[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return (d[a.length] as number[])[b.length] as number;
}

/** True when `text` has a token's or a secret's shape (see {@link quoted}). */
export function secretShaped(text: string): boolean {
  if (/eyJ[A-Za-z0-9_-]*\./i.test(text) || /[0-9a-f]{32,}/i.test(text)) return true;
  for (const run of text.match(/[A-Za-z0-9+_=-]{32,}/g) ?? []) if (/[0-9]/.test(run) && /[A-Za-z]/.test(run)) return true;
  // Standard base64 holds "/": a path may too, but seldom both cases and digits in 32 characters.
  for (const run of text.match(/[A-Za-z0-9+/_=-]{32,}/g) ?? []) {
    if (/[0-9]/.test(run) && /[A-Z]/.test(run) && /[a-z]/.test(run)) return true;
  }
  return false;
}

/**
 * Invalid configuration or options. Thrown at construction, never on the request path; it lists
 * every problem found, not only the first.
 */
export class ConfigError extends TypeError {
  override readonly name = 'ConfigError';
  readonly code = 'ERR_INVALID_CONFIG';
  readonly issues: readonly ConfigIssue[];

  constructor(issues: readonly ConfigIssue[], source?: string) {
    const where = source ? ` in ${source}` : '';
    const lines = issues.map((i) => `  ${i.path || '(root)'}: ${i.message}`);
    super(`invalid configuration${where} (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n${lines.join('\n')}`);
    this.issues = issues;
  }
}
