/**
 * `node:http` adapter.
 *
 * @example
 * ```ts
 * import { createServer } from 'node:http';
 * import { createVerifier } from 'tessera';
 * import { nodeAuth } from 'tessera/adapters/node';
 *
 * // publicUrl: the URL clients call, which their DPoP proofs name (see NodeAdapterOptions).
 * const auth = nodeAuth(createVerifier(options), { publicUrl: 'https://api.example.com' });
 * createServer(async (req, res) => {
 *   const principal = await auth(req, res); // on refusal the response is already written
 *   if (!principal) return;
 *   res.end(`hello ${principal.subject}`);
 * }).listen(8080);
 * ```
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { VerifyRequest } from '../core/verify/extract.ts';
import type { Principal } from '../core/verify/principal.ts';
import type { Verifier } from '../core/verify/verifier.ts';
import { AdapterFailure, adapterOptions, checkNodeRequest, SERVER_ERROR, toVerifyRequest, verifyOnce, writeDeny } from './shared.ts';

/**
 * Options of {@link nodeAuth}; `expressAuth` and `fastifyAuth` take the same but `body` (they
 * read the body their framework parsed). Checked when the middleware is created: an unknown
 * option, a value of the wrong type or an invalid `publicUrl` throws one `ConfigError` listing
 * every problem with its option's name as its path.
 *
 * @example
 * ```ts
 * import { createVerifier } from 'tessera';
 * import { type NodeAdapterOptions, nodeAuth } from 'tessera/adapters/node';
 *
 * const adapterOptions: NodeAdapterOptions = { publicUrl: 'https://api.example.com' };
 * const auth = nodeAuth(createVerifier(options), adapterOptions);
 * ```
 */
export interface NodeAdapterOptions {
  /**
   * The external origin of the protected API, as its clients call it (`https://api.example.com`;
   * no path, query or credentials): the request URL a DPoP proof's `htu` must name (RFC 9449 §4.3)
   * is this followed by the request's path. Set it whenever DPoP tokens are accepted (`dpop.mode`
   * `allowed`, the default, or `required`) and clients reach the API under a name of its own.
   *
   * Without it the URL is the one a proxy forwards when {@link NodeAdapterOptions.trustProxy} is
   * set, else `http(s)://<address>:<port>` the connection arrived at: never the caller's Host
   * header, which would let a proof made for another server (and captured there) pass with
   * `Host:` naming that server. So without `publicUrl`, a proof for `https://api.example.com/...`
   * is refused (`invalid_dpop_proof`, "for another URI") unless a trusted proxy forwards that URL;
   * bearer tokens are not affected. An invalid value throws a `ConfigError` when the middleware is
   * created.
   *
   * @example
   * ```ts
   * app.use(expressAuth(verifier, { publicUrl: 'https://api.example.com' }));
   * ```
   */
  readonly publicUrl?: string;
  /**
   * Trust `X-Forwarded-Proto` and `X-Forwarded-Host` (else the Host the proxy sends) for the
   * request URL (DPoP `htu` checks) when `publicUrl` is not set: of several entries, the rightmost,
   * which the proxy wrote after any the caller sent. Only behind a proxy that sets them and that
   * every request passes through; otherwise a caller could choose the URL it is checked against.
   */
  readonly trustProxy?: boolean;
  /**
   * Form body for RFC 6750 §2.2 tokens, when `transport.form_body` is enabled: called only for a
   * request whose Content-Type is `application/x-www-form-urlencoded` (any other body is never
   * read for a token).
   */
  readonly body?: (req: IncomingMessage) => VerifyRequest['body'];
}

/**
 * Returns a function that verifies a request and resolves to the principal, or writes the
 * refusal (status, `WWW-Authenticate`, JSON error) and resolves to `undefined`. When verifying
 * fails (the `body` option or the verifier's `revocation` check throws, `verify` rejects) it
 * writes 500 `{"error":"server_error"}`, emits a process warning (`TESSERA_ADAPTER_FAILED`, naming
 * the error's class only; the error is the warning's `original`) and resolves to `undefined`. It
 * rejects only when `req` is not a request (an `ArgumentError`).
 *
 * @throws {ConfigError} when `verifier` is not a verifier or `options` are invalid (see
 * {@link NodeAdapterOptions}), listing every problem.
 *
 * @example
 * ```ts
 * import { createServer } from 'node:http';
 * import { createVerifier } from 'tessera';
 * import { nodeAuth } from 'tessera/adapters/node';
 *
 * const auth = nodeAuth(createVerifier(options), { publicUrl: 'https://api.example.com' });
 * createServer(async (req, res) => {
 *   const principal = await auth(req, res); // undefined: the 400/401/403 is already written
 *   if (principal) res.end(`hello ${principal.subject}`);
 * }).listen(8080);
 * ```
 */
export function nodeAuth(
  verifier: Verifier,
  options: NodeAdapterOptions = {},
): (req: IncomingMessage, res: ServerResponse) => Promise<Principal | undefined> {
  const checked = adapterOptions<NodeAdapterOptions>('nodeAuth', verifier, options, {
    publicUrl: 'origin',
    trustProxy: 'boolean',
    body: 'function',
  });
  return async function tesseraNodeAuth(req, res) {
    checkNodeRequest(req);
    let result: Awaited<ReturnType<typeof verifyOnce>>;
    try {
      result = await verifyOnce(verifier, req, toVerifyRequest(req, checked));
    } catch (error) {
      // A callback of the application threw (`body`, the verifier's revocation check): nothing
      // awaits this promise but the application's handler, whose rejection would end the process
      // (unhandled) with the request unanswered. Answer 500 and report it by its class alone.
      process.emitWarning(new AdapterFailure('nodeAuth', error));
      if (!res.headersSent) res.writeHead(SERVER_ERROR.status, SERVER_ERROR.headers).end(SERVER_ERROR.body);
      return undefined;
    }
    if (result.ok) {
      // A fresh DPoP nonce when the proof's is about to expire (RFC 9449 §9): set now, so the
      // application's response carries it (and may still replace it).
      if (result.dpopNonce !== undefined && !res.headersSent) res.setHeader('dpop-nonce', result.dpopNonce);
      return result.principal;
    }
    writeDeny(res, result.error, verifier);
    return undefined;
  };
}
