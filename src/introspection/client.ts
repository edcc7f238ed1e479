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
    await response.body?.cancel().catch(() => {});
    throw new IntrospectionFailure(`the introspection response is larger than ${limit} bytes`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of response.body ?? []) {
    size += chunk.byteLength;
    if (size > limit) throw new IntrospectionFailure(`the introspection response is larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/**
 * Why the endpoint gave no answer, in words safe for a log line: a status, a size, a timeout, a
 * connection error code; never the token, the client secret or a message from the endpoint.
 */
export class IntrospectionFailure extends Error {
  override readonly name = 'IntrospectionFailure';
}

/** A failure of `fetch` itself (timeout, connection refused, TLS) as an {@link IntrospectionFailure}. */
function fetchFailure(e: unknown): IntrospectionFailure {
  const name = (e as Error | undefined)?.name;
  if (name === 'TimeoutError' || name === 'AbortError')
    return new IntrospectionFailure('the introspection endpoint did not answer in time');
  const code = ((e as { cause?: { code?: unknown } } | undefined)?.cause?.code ?? '') as unknown;
  const safe = typeof code === 'string' && /^[A-Z0-9_]{1,40}$/.test(code) ? ` (${code})` : '';
  return new IntrospectionFailure(`the introspection endpoint is unreachable${safe}`);
}

export function createIntrospectionClient(options: IntrospectionClientOptions): Introspector {
  const doFetch = options.fetch ?? fetch;
  // RFC 6749 §2.3.1: form-urlencode id and secret before base64.
  const basic = Buffer.from(`${encodeURIComponent(options.clientId)}:${encodeURIComponent(options.clientSecret)}`).toString('base64');
  return {
    async introspect(token) {
      let response: Response;
      try {
        response = await doFetch(options.endpoint, {
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
      } catch (e) {
        throw fetchFailure(e);
      }
      if (!response.ok) {
        await response.body?.cancel().catch(() => {});
        throw new IntrospectionFailure(`the introspection endpoint answered HTTP ${response.status}`);
      }
      let bytes: Buffer;
      try {
        bytes = await readLimited(response, MAX_RESPONSE_BYTES);
      } catch (e) {
        throw e instanceof IntrospectionFailure ? e : fetchFailure(e);
      }
      // Strict JSON, as for JOSE: with a duplicate member (`"active":false,"active":true`) the
      // answer depends on the parser, so it is no answer.
      const body = parseJsonObject(bytes);
      if (body === undefined) throw new IntrospectionFailure('the introspection response is not a JSON object without duplicate members');
      if (typeof body.active !== 'boolean') throw new IntrospectionFailure('the introspection response has no boolean "active"');
      return body as IntrospectionResponse;
    },
  };
}
