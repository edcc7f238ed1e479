/**
 * Peer stack: Fastify 5 + @fastify/jwt (fast-jwt, ES256 public key, iss/aud checked) with a scope
 * check in a preHandler + @fastify/http-proxy (undici). Prints `{"port":N}`.
 */
import { createPublicKey } from 'node:crypto';
import fastifyHttpProxy from '@fastify/http-proxy';
import fastifyJwt from '@fastify/jwt';
import Fastify from 'fastify';

const env = process.env;
const jwk = (JSON.parse(env.BENCH_JWKS as string) as { keys: Record<string, unknown>[] }).keys[0] as Record<string, unknown>;
const publicPem = createPublicKey({ key: jwk as never, format: 'jwk' })
  .export({ type: 'spki', format: 'pem' })
  .toString();

const app = Fastify({ logger: false, keepAliveTimeout: 65_000 });
await app.register(fastifyJwt, {
  secret: { public: publicPem, private: 'unused-private-key-for-signing' },
  verify: { algorithms: ['ES256'], allowedIss: env.BENCH_ISSUER as string, allowedAud: env.BENCH_AUDIENCE as string },
});
await app.register(fastifyHttpProxy, {
  upstream: env.BENCH_UPSTREAM as string,
  preHandler: async (request, reply) => {
    try {
      const claims = await request.jwtVerify<{ scope?: string }>();
      if (!claims.scope?.split(' ').includes('api:read')) return reply.code(403).send({ error: 'insufficient_scope' });
    } catch {
      return reply.code(401).header('www-authenticate', 'Bearer error="invalid_token"').send({ error: 'invalid_token' });
    }
    request.headers.authorization = 'Bearer bench-upstream-credential-0123456789';
  },
});
await app.listen({ port: 0, host: '127.0.0.1' });
process.stdout.write(`${JSON.stringify({ port: (app.server.address() as { port: number }).port })}\n`);
