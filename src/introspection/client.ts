/**
 * An RFC 7662 introspection client authenticating with client_secret_basic (RFC 6749 §2.3.1).
 */
import type { IntrospectionResponse, Introspector } from '../core/ports.ts';

export interface IntrospectionClientOptions {
  readonly endpoint: string;
  readonly clientId: string;
  readonly clientSecret: string;
  /** Seconds. */
  readonly timeout: number;
  readonly fetch?: typeof fetch;
}

export function createIntrospectionClient(options: IntrospectionClientOptions): Introspector {
  const doFetch = options.fetch ?? fetch;
  // RFC 6749 §2.3.1: form-urlencode id and secret before base64.
  const basic = Buffer.from(`${encodeURIComponent(options.clientId)}:${encodeURIComponent(options.clientSecret)}`).toString('base64');
  return {
    async introspect(token) {
      const response = await doFetch(options.endpoint, {
        method: 'POST',
        headers: {
          authorization: `Basic ${basic}`,
          'content-type': 'application/x-www-form-urlencoded',
          accept: 'application/json',
        },
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }).toString(),
        redirect: 'error',
        signal: AbortSignal.timeout(options.timeout * 1000),
      });
      if (!response.ok) throw new Error(`introspection endpoint answered HTTP ${response.status}`);
      const body = (await response.json()) as unknown;
      if (typeof body !== 'object' || body === null || typeof (body as { active?: unknown }).active !== 'boolean') {
        throw new Error('introspection response has no boolean "active"');
      }
      return body as IntrospectionResponse;
    },
  };
}
