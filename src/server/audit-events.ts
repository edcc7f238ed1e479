/**
 * `audit.on_queue_full: refuse` at the token service: how many slots each kind of request reserves
 * in the audit queue when it is admitted (`TokenService.admitAudited`), the most events it can
 * write (at most `audit.max_queue`). A request is refused (503 `audit_unavailable`) when the queue
 * cannot hold that many, and gives back the slots it did not use once it is answered, whatever the
 * answer. A request with a body is admitted once its body is read (or its reading failed), never
 * while it is still coming: a client trickling a body for the listener's `request_timeout` holds
 * no slot, so slow connections cannot keep the queue full while the store is healthy.
 *
 * A revocation's record (`grant.revoked`, `token.revoked`, `login.signed_out` of something revoked or
 * ended) takes none of these slots and is not dropped for want of one: the grants a reused refresh token or authorization
 * code revokes (its family, however many) are revoked in the store's transaction that finds the
 * reuse, before their number is known, and revocations (`/oauth2/revoke`, `POST
 * /oauth2/admin/revoke`) and sign-outs reserve nothing: they take access away and are always
 * served. Each is committed before its events are written, so they are kept past
 * `audit.max_queue` if need be (`BatchingAuditSink.keep`; no request is admitted while the queue
 * is past its bound), up to twice it, beyond which they are dropped, counted and told in an
 * `audit_events_dropped` line at level `error`. The other events such requests write (an
 * `admin.action`, a `revocation.denied`, a `token.revoked` of a refresh token whose grant was
 * revoked before, a sign-out that failed or ended no session) are kept while the queue has room
 * beside the slots reserved, and dropped (and told) once it has not.
 *
 * @module
 */
export const AUDIT_EVENTS = {
  /**
   * `token.issued`, `token.refreshed` or `token.exchanged`, or `token.denied`; with a reused
   * refresh token or authorization code also its `refresh.reuse_detected`
   * (`authorization_code.reuse_detected`) before the `token.denied`.
   */
  token: 2,
  /** `token.introspected` or `introspection.denied`. */
  introspection: 1,
  /** `client.created` or `client.registration_denied`. */
  registration: 1,
  /** A grant tree read: `admin.action` or `admin.denied`. */
  admin: 1,
  /**
   * `authorization.approved`, or `authorization.denied`; two of those when a login failed and the
   * request asked for none (`prompt=none`) or its upstream login could not begin.
   */
  authorization: 2,
  /**
   * A request refused for its head (framing, method, query, media type, coding, CORS) or for a body
   * that could not be read (too large, cut short): its one denial (`token.denied`,
   * `introspection.denied`, `authorization.denied`), nothing else.
   */
  refused: 1,
  /** A request to the authorization endpoint refused for its framing: its `authorization.denied`. */
  authorizationFraming: 1,
  /** The login callback: `login.succeeded` or `authorization.denied`. */
  loginCallback: 1,
} as const;
