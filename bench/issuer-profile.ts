/**
 * In-process profile of the token endpoint's client_credentials path (no HTTP): the token service
 * as `tessera serve` runs it (SQLite in WAL mode, batched audit), called through `service.token()`
 * in a loop. Prints µs per token; run under `node --cpu-prof bench/issuer-profile.ts` to see where
 * the time goes. `PROFILE_GRANT=exchange` profiles token exchange instead, `PROFILE_CONCURRENCY=8`
 * keeps 8 requests in flight. Not part of bench:issuer.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { OAuthRequest } from '../src/issuer/service.ts';
import { benchTokenService } from './issuer-service.ts';

const N = Number(process.env.PROFILE_N ?? 100_000);
const url = 'http://127.0.0.1:1';
const { dir, store, service, secret, user } = await benchTokenService(url, mkdtempSync(join(tmpdir(), 'tessera-profile-')));
const authorization = `Basic ${Buffer.from(`bench:${secret}`).toString('base64')}`;
const body =
  process.env.PROFILE_GRANT === 'exchange'
    ? new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: user.access_token,
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        scope: 'api:read',
      }).toString()
    : 'grant_type=client_credentials';
const request = (): OAuthRequest => ({
  params: new URLSearchParams(body),
  authorization,
  endpointUrl: `${url}/oauth2/token`,
  requestId: 'r',
});
for (let i = 0; i < 5000; i++) await service.token(request());
const c0 = process.cpuUsage();
// PROFILE_CONCURRENCY requests in flight (default 1), as connections under load: with more than
// one, exchange grant writes share a commit as they do over HTTP.
const CONCURRENCY = Number(process.env.PROFILE_CONCURRENCY ?? 1);
await Promise.all(
  Array.from({ length: CONCURRENCY }, async (_, w) => {
    for (let i = w; i < N; i += CONCURRENCY) await service.token(request());
  }),
);
await service.audit.flush();
const c1 = process.cpuUsage(c0);
process.stdout.write(
  `${process.env.PROFILE_GRANT ?? 'client_credentials'}: ${((c1.user + c1.system) / N).toFixed(1)} µs CPU per token (in-process, no HTTP)\n`,
);
await service.close();
await store.close();
rmSync(dir, { recursive: true, force: true });
