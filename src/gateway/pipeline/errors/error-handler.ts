/**
 * Error handlers (how a refusal reaches the caller). The caller sees the status, the RFC error and
 * its fixed description, the `WWW-Authenticate` challenge, `Retry-After` when it helps, and the
 * request id; never the reason code (that goes to the audit trail) or anything from the upstream.
 *
 * @module
 */
import { denyResponse } from '../../../adapters/response.ts';
import type { TesseraError } from '../../../core/errors.ts';

export interface DenyRendering {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}

/** The JSON refusal (RFC 6750 §3 for 400/401/403). */
export function renderDeny(error: TesseraError, challenges: (e?: TesseraError) => string[], requestId: string): DenyRendering {
  const d = denyResponse(error, challenges);
  d.headers['x-request-id'] = requestId;
  d.headers['content-length'] = String(Buffer.byteLength(d.body));
  return d;
}

/**
 * nginx `auth_request` treats any status other than 2xx, 401 and 403 as an internal error (500),
 * so a forward-auth refusal for nginx is folded into those two: 400 `invalid_request` becomes 401
 * (the challenge still says `invalid_request`), everything else 403. `X-Tessera-Status` keeps the
 * real status for `auth_request_set`.
 */
export function nginxStatus(status: number): number {
  if (status === 401 || status === 403) return status;
  return status === 400 ? 401 : 403;
}
