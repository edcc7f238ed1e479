/**
 * `tessera demo`: a self-contained verifier demo: an API on loopback protected by Tessera's
 * verifier, a freshly generated signing key, and a token written to a file (not printed) for the
 * curl commands it prints.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import type { Command } from 'commander';
import { SignJWT } from 'jose';
import { nodeAuth } from '../../adapters/node.ts';
import { jwkThumbprint } from '../../core/jose/jwk.ts';
import { createVerifier } from '../../verifier.ts';

export async function startDemo(options: { port: number; host: string; dir: string }): Promise<{ close(): Promise<void>; url: string }> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' }) as Record<string, string>;
  const kid = jwkThumbprint(jwk);
  const issuer = 'https://tessera.demo.invalid';
  const audience = `http://${options.host}:${options.port}`;
  const verifier = createVerifier({
    issuers: [
      {
        issuer,
        audiences: [audience],
        algorithms: ['ES256'],
        jwks: { keys: [{ ...jwk, kid, alg: 'ES256', use: 'sig' }] },
        token_type: 'at+jwt',
      },
    ],
    scopes: { 'demo:read': { description: 'Read the greeting' }, 'demo:write': { implies: ['demo:read'] } },
    rules: [{ id: 'hello', methods: ['GET'], path: '/hello', scopes: ['demo:read'] }],
    dpop: { mode: 'disabled' },
    realm: 'tessera-demo',
  });
  const auth = nodeAuth(verifier);
  const server = createServer(async (req, res) => {
    const principal = await auth(req, res);
    if (!principal) return;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ hello: principal.subject, scopes: principal.effectiveScopes.list }));
  });
  await new Promise<void>((resolve) => server.listen(options.port, options.host, resolve));
  const token = await new SignJWT({ scope: 'demo:write', client_id: 'demo-agent' })
    .setProtectedHeader({ alg: 'ES256', kid, typ: 'at+jwt' })
    .setIssuer(issuer)
    .setAudience(audience)
    .setSubject('demo-user')
    .setJti(crypto.randomUUID())
    .setIssuedAt()
    .setExpirationTime('10m')
    .sign(privateKey);
  mkdirSync(options.dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(options.dir, 'token'), `${token}\n`, { mode: 0o600 });
  return {
    url: audience,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('Run a verifier demo: an API on loopback protected by Tessera, with a 10-minute token in a file.')
    .option('--port <port>', 'port to listen on', (v) => Number.parseInt(v, 10), 8080)
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--dir <dir>', 'directory for the demo token', '.tessera-demo')
    .action(async (opts: { port: number; host: string; dir: string }) => {
      const demo = await startDemo(opts);
      const tokenFile = join(opts.dir, 'token');
      process.stdout.write(
        [
          `Tessera verifier demo listening on ${demo.url}`,
          `A token (scope demo:write, 10 minutes) is in ${tokenFile}. Try:`,
          '',
          `  curl -i ${demo.url}/hello                                                 # 401, bare challenge`,
          `  curl -i -H "Authorization: Bearer $(cat ${tokenFile})" ${demo.url}/hello   # 200`,
          `  curl -i -H "Authorization: Bearer $(cat ${tokenFile})" ${demo.url}/other   # 403, no rule`,
          '',
          'Ctrl-C to stop.',
          '',
        ].join('\n'),
      );
      const stop = () => void demo.close().then(() => process.exit(0));
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
}
