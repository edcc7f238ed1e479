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

/** An introspection answer is a few hundred bytes; a larger one is refused before it is all read. */
const MAX_RESPONSE_BYTES = 64 * 1024;

async function readLimited(response: Response, limit: number): Promise<string> {
  if (Number(response.headers.get('content-length') ?? 0) > limit) {
    await response.body?.cancel();
    throw new Error(`introspection response is larger than ${limit} bytes`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of response.body ?? []) {
    size += chunk.byteLength;
    if (size > limit) throw new Error(`introspection response is larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
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
      if (!response.ok) {
        await response.body?.cancel();
        throw new Error(`introspection endpoint answered HTTP ${response.status}`);
      }
      const body = JSON.parse(await readLimited(response, MAX_RESPONSE_BYTES)) as unknown;
      if (typeof body !== 'object' || body === null || typeof (body as { active?: unknown }).active !== 'boolean') {
        throw new Error('introspection response has no boolean "active"');
      }
      return body as IntrospectionResponse;
    },
  };
}
