/**
 * Hono middleware over Web `Request`. Sets `c.var.principal` or answers the refusal.
 *
 * @example
 * ```ts
 * import { Hono } from 'hono';
 * import { createVerifier } from 'tessera';
 * import { honoAuth, type TesseraEnv } from 'tessera/adapters/hono';
 *
 * const app = new Hono<TesseraEnv>();
 * app.use('/api/*', honoAuth(createVerifier(options)));
 * app.get('/api/items', (c) => c.json({ subject: c.var.principal.subject }));
 * ```
 */
import type { Context, MiddlewareHandler, Next } from 'hono';
import type { Principal } from '../core/verify/principal.ts';
import type { Verifier } from '../core/verify/verifier.ts';
import type { ManagedVerifier } from '../verifier.ts';
import { denyResponse } from './response.ts';

/** Hono environment type carrying the principal. */
export interface TesseraEnv {
  Variables: { principal: Principal };
}

export function honoAuth(verifier: Verifier | ManagedVerifier): MiddlewareHandler<TesseraEnv> {
  const formBody = 'config' in verifier && verifier.config.transport.form_body;
  return async function tesseraHonoAuth(c: Context<TesseraEnv>, next: Next) {
    const raw = c.req.raw;
    let body: URLSearchParams | undefined;
    if (formBody && raw.body && (raw.headers.get('content-type') ?? '').startsWith('application/x-www-form-urlencoded')) {
      body = new URLSearchParams(await raw.clone().text());
    }
    const result = await verifier.verify({ method: raw.method, url: raw.url, headers: raw.headers, ...(body ? { body } : {}) });
    if (!result.ok) {
      const d = denyResponse(result.error, verifier.challenges);
      return c.body(d.body, d.status as 400, d.headers);
    }
    c.set('principal', result.principal);
    await next();
  };
}
