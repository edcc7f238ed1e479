/**
 * `tessera token decode`, run as a real process: header, claims, expiry countdown, actor chain,
 * and the verdict with its reason code against a JWKS file and a JWKS URL (loopback server).
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AUDIENCE, claims, makeKey, sign } from '../helpers/tokens.ts';
import { listen, type TestServer } from '../helpers/verify.ts';

const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run `tessera ARGS` with Node 24 (the test runner's own binary). */
export function tessera(args: string[], stdin?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [MAIN, ...args], { timeout: 20_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
    if (stdin !== undefined) child.stdin?.end(stdin);
    else child.stdin?.end();
  });
}

const key = makeKey('ES256');
const stranger = makeKey('ES256', key.kid);

describe('tessera token decode', { concurrency: true }, () => {
  let dir: string;
  let jwksFile: string;
  let server: TestServer;
  let hits = 0;
  const now = Math.floor(Date.now() / 1000);
  let token: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-cli-'));
    jwksFile = join(dir, 'jwks.json');
    writeFileSync(jwksFile, JSON.stringify({ keys: [key.jwk] }));
    server = await listen((_req, res) => {
      hits++;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [key.jwk] }));
    });
    token = await sign(key, claims({ exp: now + 7230, iat: now, act: { sub: 'agent-b', act: { sub: 'agent-a' } }, grant_id: 'g-1' }, now), {
      typ: 'at+jwt',
    });
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('prints header, claims, expiry countdown and actor chain without keys', async () => {
    const run = await tessera(['token', 'decode', token]);
    assert.equal(run.code, 0, run.stderr);
    const lines = run.stdout.split('\n');
    assert.equal(lines[0], `header  {"alg":"ES256","kid":"${key.kid}","typ":"at+jwt"}`);
    assert.match(run.stdout, /^claims {2}\{\n {10}"iss": "https:\/\/issuer\.test",/m);
    assert.match(run.stdout, /"grant_id": "g-1"/);
    assert.match(run.stdout, /^expiry {2}expires in 2h0m$/m);
    assert.match(run.stdout, /^actors {2}agent-b ← agent-a$/m);
    assert.match(run.stdout, /^verdict not verified: pass --jwks URL\|FILE to check the signature and claims$/m);
    const hash = createHash('sha256').update(token).digest('base64url').slice(0, 16);
    assert.match(run.stdout, new RegExp(`^hash {4}${hash}$`, 'm'));
  });

  it("names the issuer of an actor from another issuer than the token's (sub (iss)), and not of one from the same", async () => {
    const now = Math.floor(Date.now() / 1000);
    const t = await sign(
      key,
      claims(
        { act: { sub: 'agent-b', act: { sub: 'x1', iss: 'https://idp.test', act: { sub: 'agent-a', iss: 'https://issuer.test' } } } },
        now,
      ),
    );
    const run = await tessera(['token', 'decode', t]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^actors {2}agent-b ← x1 \(https:\/\/idp\.test\) ← agent-a$/m);
  });

  it('escapes control characters a hostile token puts in its actors and aud (a forged line, a rewritten screen)', async () => {
    const hostile = await sign(
      key,
      claims(
        { exp: now + 600, iat: now, aud: 'x\x1b]0;owned\x07', act: { sub: 'evil\x1b[2J\nverdict valid', act: { sub: 'b\u202e' } } },
        now,
      ),
    );
    const run = await tessera(['token', 'decode', hostile, '--jwks', jwksFile]);
    assert.equal(run.code, 0, run.stderr);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what must not be printed
    assert.doesNotMatch(run.stdout, /[\x00-\x09\x0b-\x1f\x7f\u202e]/);
    assert.match(run.stdout, /^actors {2}evil\\x1b\[2J\\nverdict valid ← b\\u202e$/m);
    assert.match(run.stdout, /own aud "x\\x1b\]0;owned\\x07"/);
  });

  it('prints one JSON object with --json, reading the token from stdin with -', async () => {
    const run = await tessera(['token', 'decode', '-', '--json'], `${token}\n`);
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout);
    assert.deepEqual(report.header, { alg: 'ES256', kid: key.kid, typ: 'at+jwt' });
    assert.equal(report.claims.sub, 'user-1');
    assert.deepEqual(report.actor_chain, ['agent-b', 'agent-a']);
    assert.equal(report.expiry, 'expires in 2h0m');
    assert.equal(report.verification.verified, false);
  });

  it('notes which audience it checked when --audience is not given', async () => {
    const run = await tessera(['token', 'decode', token, '--jwks', jwksFile]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(
      run.stdout,
      /^verdict valid \(audience checked against the token's own aud "https:\/\/api\.test"; pass --audience to check yours\)$/m,
    );
  });

  it('exits non-zero with the reason code for an expired token', async () => {
    const expired = await sign(key, claims({ iat: now - 4000, exp: now - 630 }, now));
    const run = await tessera(['token', 'decode', expired, '--jwks', jwksFile]);
    assert.equal(run.code, 1);
    assert.match(run.stdout, /^expiry {2}expired 10m[3-5]\ds ago$/m);
    assert.match(run.stdout, /^verdict INVALID token_expired: The access token expired\.$/m);
  });

  it('exits non-zero with token_signature_invalid for a token signed by another key', async () => {
    const forged = await sign(stranger, claims({}, now));
    const run = await tessera(['token', 'decode', forged, '--jwks', jwksFile, '--json']);
    assert.equal(run.code, 1);
    assert.deepEqual(JSON.parse(run.stdout).verification, {
      verified: false,
      code: 'token_signature_invalid',
      status: 401,
      reason: 'The access token signature is invalid.',
    });
  });

  it('exits non-zero with token_audience_invalid for another --audience', async () => {
    const run = await tessera(['token', 'decode', token, '--jwks', jwksFile, '--audience', 'https://other.test']);
    assert.equal(run.code, 1);
    assert.match(run.stdout, /^verdict INVALID token_audience_invalid: /m);
  });

  it('verifies against a JWKS URL', async () => {
    const before = hits;
    const ok = await tessera(['token', 'decode', token, '--jwks', `${server.origin}/jwks`, '--audience', AUDIENCE]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^verdict valid$/m);
    assert.ok(hits > before);
  });

  it('exits non-zero for a bad signature checked against a JWKS URL', async () => {
    const forged = await sign(stranger, claims({}, now));
    const run = await tessera(['token', 'decode', forged, '--jwks', `${server.origin}/jwks`]);
    assert.equal(run.code, 1);
    assert.match(run.stdout, /^verdict INVALID token_signature_invalid: The access token signature is invalid\.$/m);
  });

  it('exits non-zero with one line on stderr for a token that is not a JWT', async () => {
    const run = await tessera(['token', 'decode', 'not-a-jwt']);
    assert.equal(run.code, 1);
    assert.equal(run.stdout, '');
    assert.equal(run.stderr, 'tessera: not a compact JWT (three base64url segments with a JSON header and claims)\n');
  });

  it('exits non-zero for a missing JWKS file', async () => {
    const run = await tessera(['token', 'decode', token, '--jwks', join(dir, 'missing.json')]);
    assert.equal(run.code, 1);
    assert.equal(run.stderr, `tessera: --jwks: cannot load a JWKS from ${join(dir, 'missing.json')}: no such file\n`);
  });

  it('refuses an endless --jwks file (/dev/zero) with one line instead of reading it until memory runs out', async () => {
    const run = await tessera(['token', 'decode', token, '--jwks', '/dev/zero']);
    assert.equal(run.code, 1, run.stderr.slice(0, 500));
    assert.equal(run.stdout, '');
    assert.equal(run.stderr, 'tessera: --jwks: cannot load a JWKS from /dev/zero: larger than 512 KiB, the most a JWKS file may hold\n');
  });

  it('refuses a stdin that never ends (token decode - < /dev/zero) with one line instead of reading it until memory runs out', () => {
    const stdin = openSync('/dev/zero', 'r');
    try {
      const r = spawnSync(process.execPath, [MAIN, 'token', 'decode', '-'], {
        stdio: [stdin, 'pipe', 'pipe'],
        encoding: 'utf8',
        timeout: 30_000,
      });
      assert.equal(r.signal, null, r.stderr.slice(0, 500));
      assert.equal(r.status, 1, r.stderr.slice(0, 500));
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, 'tessera: <token> -: stdin holds more than 1 MiB, more than any token; pipe the token alone\n');
    } finally {
      closeSync(stdin);
    }
  });

  it('reports token_claim_missing for a token without iss', async () => {
    const noIss = await sign(key, claims({ iss: undefined }, now));
    const run = await tessera(['token', 'decode', noIss, '--jwks', jwksFile]);
    assert.equal(run.code, 1);
    assert.match(run.stdout, /^verdict INVALID token_claim_missing: the token has no iss claim$/m);
  });
});
