/**
 * An RFC 7662 introspection client authenticating with client_secret_basic (RFC 6749 §2.3.1).
 */
import { Buffer } from 'node:buffer';
import { parseJsonObject } from '../core/jose/json.ts';
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

async function readLimited(response: Response, limit: number): Promise<Buffer> {
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
  return Buffer.concat(chunks);
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
      // Strict JSON, as for JOSE: with a duplicate member (`"active":false,"active":true`) the
      // answer depends on the parser, so it is no answer.
      const body = parseJsonObject(await readLimited(response, MAX_RESPONSE_BYTES));
      if (body === undefined) throw new Error('introspection response is not a JSON object without duplicate members');
      if (typeof body.active !== 'boolean') throw new Error('introspection response has no boolean "active"');
      return body as IntrospectionResponse;
    },
  };
}
