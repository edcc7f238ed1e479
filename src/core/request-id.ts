/**
 * The caller's `X-Request-Id`, when it may be echoed, sent upstream and recorded as the audit
 * event's `request_id`: 1 to 128 characters of `A-Z a-z 0-9 . _ : -` (what nginx's `$request_id`,
 * Envoy's UUIDs and the ids of most proxies and frameworks are made of) and no token in it (see
 * core/secret-shape.ts). Anything else is replaced by a fresh id: a caller must not be able to write
 * a secret into the audit trail or an upstream's logs through the id it chooses. The gateway, its
 * forward-auth endpoint and the token service apply this one rule.
 *
 * @module
 */
import { holdsToken } from './secret-shape.ts';

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The inbound request id when it may be kept (see the module description), else `undefined`. */
export function inboundRequestId(inbound: string | readonly string[] | undefined): string | undefined {
  return typeof inbound === 'string' && REQUEST_ID.test(inbound) && !holdsToken(inbound) ? inbound : undefined;
}
