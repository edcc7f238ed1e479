/**
 * Fastify plugin: an `onRequest` hook (or `preValidation` when form-body tokens are enabled, so
 * the body is parsed) that sets `request.principal` or answers the refusal.
 *
 * @example
 * ```ts
 * import Fastify from 'fastify';
 * import { createVerifier } from 'tessera';
 * import { fastifyAuth } from 'tessera/adapters/fastify';
 *
 * const app = Fastify();
 * // publicUrl: the URL clients call, which their DPoP proofs name (see NodeAdapterOptions).
 * await app.register(fastifyAuth(createVerifier(options), { publicUrl: 'https://api.example.com' }));
 * app.get('/items', async (request) => ({ subject: request.principal?.subject }));
 * ```
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ConfigError } from '../core/errors.ts';
import type { Principal } from '../core/verify/principal.ts';
import type { Verifier } from '../core/verify/verifier.ts';
import type { ManagedVerifier } from '../verifier.ts';
import type { NodeAdapterOptions } from './node.ts';
import { denyResponse } from './response.ts';
import { AdapterFailure, adapterOptions, formParams, toVerifyRequest, verifyOnce } from './shared.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by Tessera's hook for verified requests. */
    principal?: Principal;
  }
}

/**
 * Fastify plugin: an `onRequest` hook (`preValidation` when the verifier accepts form-body tokens,
 * so that the body is parsed) that sets `request.principal` or answers the refusal (status,
 * `WWW-Authenticate`, JSON error), for the routes of the scope that registers it. Registering it
 * in an app created with `caseSensitive: false` under rules that compare case throws a
 * `ConfigError`.
 *
 * @throws {ConfigError} when `verifier` is not a verifier or `options` are invalid (see
 * {@link NodeAdapterOptions}; `body` is not taken), listing every problem.
 *
 * @example
 * ```ts
 * import Fastify from 'fastify';
 * import { createVerifier } from 'tessera';
 * import { fastifyAuth } from 'tessera/adapters/fastify';
 *
 * const app = Fastify();
 * await app.register(fastifyAuth(createVerifier(options), { publicUrl: 'https://api.example.com' }));
 * app.get('/items', async (request) => ({ subject: request.principal?.subject }));
 * ```
 */
export function fastifyAuth(
  verifier: Verifier | ManagedVerifier,
  options: Omit<NodeAdapterOptions, 'body'> = {},
): (app: FastifyInstance) => Promise<void> {
  options = adapterOptions<Omit<NodeAdapterOptions, 'body'>>('fastifyAuth', verifier, options, {
    publicUrl: 'origin',
    trustProxy: 'boolean',
  });
  const formBody = 'config' in verifier && verifier.config.transport.form_body;
  async function tesseraFastifyAuth(app: FastifyInstance): Promise<void> {
    // With `caseSensitive: false` Fastify routes /ADMIN to /admin; rules that compare case would
    // then let /ADMIN past the rule written for /admin.
    if (verifier.rules?.caseInsensitivePaths === false && app.initialConfig.caseSensitive === false) {
      throw new ConfigError([
        {
          path: 'case_insensitive_paths',
          message:
            'this Fastify app routes paths ignoring case (caseSensitive: false) but the rules compare case: set `case_insensitive_paths: true`',
        },
      ]);
    }
    // With useSemicolonDelimiter, /admin;x is routed to /admin: the rules must see /admin.
    const config = app.initialConfig as { routerOptions?: { useSemicolonDelimiter?: boolean }; useSemicolonDelimiter?: boolean };
    const semicolon =
      config.routerOptions?.useSemicolonDelimiter ?? Object.getOwnPropertyDescriptor(config, 'useSemicolonDelimiter')?.value === true;
    if (!app.hasRequestDecorator('principal')) app.decorateRequest('principal', undefined);
    app.addHook(formBody ? 'preValidation' : 'onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
      let result: Awaited<ReturnType<typeof verifyOnce>>;
      try {
        result = await verifyOnce(
          verifier,
          request.raw,
          toVerifyRequest(request.raw, { ...options, body: () => formParams(request.body) }, semicolon),
        );
      } catch (error) {
        // A callback of the application threw while verifying: Fastify's default handler would
        // send its message (which may quote the request) in the 500 and log it.
        throw new AdapterFailure('fastifyAuth', error);
      }
      if (result.ok) {
        request.principal = result.principal;
        // A fresh DPoP nonce when the proof's is about to expire (RFC 9449 §9).
        if (result.dpopNonce !== undefined) reply.header('dpop-nonce', result.dpopNonce);
        return;
      }
      const d = denyResponse(result.error, verifier.challenges);
      return reply.code(d.status).headers(d.headers).send(d.body);
    });
  }
  // Skip Fastify's encapsulation so the hook applies to the routes of the registering scope.
  (tesseraFastifyAuth as unknown as Record<symbol, boolean>)[Symbol.for('skip-override')] = true;
  return tesseraFastifyAuth;
}
