/**
 * Peer stack: Express 5 + express-oauth2-jwt-bearer (JWKS by URL, cached) + requiredScopes +
 * http-proxy-middleware with a keep-alive agent. Prints `{"port":N}`.
 */
import { Agent } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { auth, requiredScopes } from 'express-oauth2-jwt-bearer';
import { createProxyMiddleware } from 'http-proxy-middleware';

const env = process.env;
const app = express();
app.disable('x-powered-by');
app.use(
  auth({
    issuer: env.BENCH_ISSUER as string,
    audience: env.BENCH_AUDIENCE as string,
    jwksUri: `${env.BENCH_UPSTREAM}/.well-known/jwks.json`,
    tokenSigningAlg: 'ES256',
  }),
);
app.use(requiredScopes('api:read'));
app.use(
  createProxyMiddleware({
    target: env.BENCH_UPSTREAM as string,
    changeOrigin: true,
    agent: new Agent({ keepAlive: true, maxSockets: 128 }),
    on: {
      proxyReq: (proxyReq) => {
        proxyReq.removeHeader('authorization');
        proxyReq.setHeader('authorization', 'Bearer bench-upstream-credential-0123456789');
      },
    },
  }),
);
const server = app.listen(0, '127.0.0.1', () =>
  process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`),
);
server.keepAliveTimeout = 65_000;
