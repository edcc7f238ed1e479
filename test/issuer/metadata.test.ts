/**
 * RFC 8414 metadata walked and probed over HTTP: every endpoint it names answers, every grant type,
 * client authentication method (at the token, revocation and introspection endpoints), signing
 * algorithm, PKCE method and DPoP algorithm it advertises really works, and what it leaves out
 * (mTLS-bound tokens, `plain` PKCE, public clients at introspection, other response types) is
 * refused. A value added to the metadata without support fails here, as does support dropped
 * under an advertised value.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { decodeJwt, type JWK, SignJWT } from 'jose';
import { approve, authorizationConfig, authorizationRequest, personHeaders } from '../helpers/authorize.ts';
import { basic, type RunningIssuer, startIssuer } from '../helpers/issuer.ts';
import { pkcePair } from '../helpers/pkce.ts';
import { makeKey, type TestKey } from '../helpers/tokens.ts';

const API = 'https://api.test';
const REDIRECT = 'http://127.0.0.1:7777/callback';
const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

let issuer: RunningIssuer;
let m: Record<string, unknown>;
let secretClient: { id: string; secret: string };
/** One key per algorithm the metadata lists for private_key_jwt, all in the `keyed` client's JWKS. */
const keys = new Map<string, TestKey>();

before(async () => {
  issuer = await startIssuer({
    config: { scopes: { 'api:read': {} }, token_service: { authorization: authorizationConfig() } } as never,
  });
  m = (await (await fetch(`${issuer.url}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
  const grantTypes = m.grant_types_supported as string[];
  secretClient = await issuer.addClient({
    id: 'walk-secret',
    scopes: ['api:read'],
    audiences: [API],
    grantTypes: grantTypes as never,
    redirectUris: [REDIRECT],
  });
  for (const alg of m.token_endpoint_auth_signing_alg_values_supported as string[])
    keys.set(alg, makeKey(alg as TestKey['alg'], `walk-${alg}`));
  await issuer.service.registerClient({
    id: 'walk-keyed',
    scopes: ['api:read'],
    audiences: [API],
    jwks: { keys: [...keys.values()].map((k) => ({ ...k.jwk, alg: k.alg })) },
  });
  await issuer.service.registerClient({
    id: 'walk-public',
    public: true,
    scopes: ['api:read'],
    audiences: [API],
    grantTypes: ['authorization_code', 'refresh_token'],
    redirectUris: [REDIRECT],
  });
});
after(() => issuer?.close());

const list = (name: string) => m[name] as string[];

async function assertion(alg: string): Promise<string> {
  const key = keys.get(alg) as TestKey;
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: 'walk-keyed', sub: 'walk-keyed', aud: issuer.url, iat: now, exp: now + 60, jti: crypto.randomUUID() })
    .setProtectedHeader({ alg, kid: key.kid })
    .sign(key.privateKey);
}

/** Body parameters and headers that authenticate with `method` (the secret client, or the keyed one signing with ES256). */
async function credentials(method: string): Promise<{ form: Record<string, string>; headers: Record<string, string> }> {
  switch (method) {
    case 'client_secret_basic':
      return { form: {}, headers: { authorization: basic(secretClient.id, secretClient.secret) } };
    case 'client_secret_post':
      return { form: { client_id: secretClient.id, client_secret: secretClient.secret }, headers: {} };
    case 'private_key_jwt':
      return { form: { client_assertion_type: JWT_BEARER, client_assertion: await assertion('ES256') }, headers: {} };
    case 'none':
      return { form: { client_id: 'walk-public' }, headers: {} };
    default:
      throw new Error(`the metadata advertises ${method}, which this test does not know how to use`);
  }
}

async function clientCredentialsToken(): Promise<string> {
  const res = await issuer.post('/oauth2/token', { grant_type: 'client_credentials' }, (await credentials('client_secret_basic')).headers);
  assert.equal(res.status, 200);
  return ((await res.json()) as { access_token: string }).access_token;
}

/** A code for `client` approved on the consent page, and the redirect that carried it. */
async function authorizationCode(client: string): Promise<{ code: string; verifier: string; back: URL }> {
  const { verifier, challenge } = pkcePair();
  const back = await approve(
    authorizationRequest(m.authorization_endpoint as string, {
      client_id: client,
      redirect_uri: REDIRECT,
      code_challenge: challenge,
      resource: API,
    }),
  );
  return { code: back.searchParams.get('code') as string, verifier, back };
}

describe('RFC 8414 metadata, walked', () => {
  it('names only endpoints that answer at their URL (not 404), and the metadata document is where RFC 8414 §3.1 puts it', async () => {
    for (const name of ['token_endpoint', 'revocation_endpoint', 'introspection_endpoint']) {
      const res = await issuer.post(new URL(m[name] as string).pathname, {});
      assert.notEqual(res.status, 404, name);
      assert.match(res.headers.get('content-type') ?? '', /^application\/json/, name);
    }
    assert.equal((await fetch(m.jwks_uri as string)).status, 200);
    const page = await fetch(
      authorizationRequest(m.authorization_endpoint as string, {
        client_id: 'walk-public',
        redirect_uri: REDIRECT,
        code_challenge: pkcePair().challenge,
      }),
      {
        headers: personHeaders(),
      },
    );
    assert.equal(page.status, 200, 'the authorization endpoint shows its consent page');
    assert.equal(m.issuer, issuer.url);
  });

  it('every grant in grant_types_supported issues a token; a grant outside it is unsupported_grant_type', async () => {
    const auth = (await credentials('client_secret_basic')).headers;
    const issued = new Map<string, Record<string, string>>();
    const { code, verifier } = await authorizationCode(secretClient.id);
    const byGrant: Record<string, () => Promise<Record<string, string>>> = {
      authorization_code: async () => ({ code, code_verifier: verifier, redirect_uri: REDIRECT }),
      client_credentials: async () => ({}),
      refresh_token: async () => ({ refresh_token: (issued.get('authorization_code') as Record<string, string>).refresh_token as string }),
      [EXCHANGE]: async () => ({ subject_token: await clientCredentialsToken(), subject_token_type: ACCESS_TOKEN_TYPE }),
    };
    // authorization_code first: its refresh token feeds refresh_token.
    const grants = [...list('grant_types_supported')].sort((a) => (a === 'authorization_code' ? -1 : 0));
    for (const grant of grants) {
      const make = byGrant[grant];
      assert.ok(make, `the metadata advertises ${grant}, which this test does not know how to use`);
      const res = await issuer.post('/oauth2/token', { grant_type: grant, ...(await make()) }, auth);
      const body = (await res.json()) as Record<string, string>;
      assert.equal(res.status, 200, `${grant}: ${JSON.stringify(body)}`);
      assert.equal(typeof body.access_token, 'string', grant);
      issued.set(grant, body);
    }
    for (const grant of [
      'password',
      'implicit',
      'urn:ietf:params:oauth:grant-type:device_code',
      'urn:ietf:params:oauth:grant-type:jwt-bearer',
    ]) {
      const res = await issuer.post('/oauth2/token', { grant_type: grant }, auth);
      assert.equal(((await res.json()) as { error: string }).error, 'unsupported_grant_type', grant);
    }
  });

  it('every method in token_endpoint_auth_methods_supported authenticates at the token endpoint (none: a public client redeeming its code)', async () => {
    for (const method of list('token_endpoint_auth_methods_supported')) {
      const { form, headers } = await credentials(method);
      const grant =
        method === 'none'
          ? await authorizationCode('walk-public').then(({ code, verifier }) => ({
              grant_type: 'authorization_code',
              code,
              code_verifier: verifier,
              redirect_uri: REDIRECT,
            }))
          : { grant_type: 'client_credentials' };
      const res = await issuer.post('/oauth2/token', { ...grant, ...form }, headers);
      assert.equal(res.status, 200, `${method}: ${await res.text()}`);
    }
  });

  it('every algorithm in token_endpoint_auth_signing_alg_values_supported signs an accepted client assertion; HS256 is neither listed nor accepted', async () => {
    const algs = list('token_endpoint_auth_signing_alg_values_supported');
    assert.ok(!algs.some((a) => a.startsWith('HS') || a === 'none'));
    for (const alg of algs) {
      const res = await issuer.post('/oauth2/token', {
        grant_type: 'client_credentials',
        client_assertion_type: JWT_BEARER,
        client_assertion: await assertion(alg),
      });
      assert.equal(res.status, 200, `${alg}: ${await res.text()}`);
    }
    for (const name of [
      'revocation_endpoint_auth_signing_alg_values_supported',
      'introspection_endpoint_auth_signing_alg_values_supported',
    ])
      assert.deepEqual(list(name), algs, name);
  });

  it('every method in revocation_endpoint_auth_methods_supported revokes; every one in introspection_endpoint_auth_methods_supported introspects, and a public client (not listed there) is refused', async () => {
    for (const method of list('revocation_endpoint_auth_methods_supported')) {
      const { form, headers } = await credentials(method);
      const res = await issuer.post('/oauth2/revoke', { token: 'not-a-token', ...form }, headers);
      assert.equal(res.status, 200, `${method}: ${await res.text()}`);
    }
    const token = await clientCredentialsToken();
    for (const method of list('introspection_endpoint_auth_methods_supported')) {
      const { form, headers } = await credentials(method);
      const res = await issuer.post('/oauth2/introspect', { token, ...form }, headers);
      const text = await res.text();
      assert.equal(res.status, 200, `${method}: ${text}`);
      assert.equal(JSON.parse(text).active, true, method);
    }
    assert.ok(!list('introspection_endpoint_auth_methods_supported').includes('none'));
    const res = await issuer.post('/oauth2/introspect', { token, client_id: 'walk-public' });
    assert.equal(res.status, 401);
  });

  it('code_challenge_methods_supported is S256 alone: S256 redeems, plain is refused at the authorization endpoint', async () => {
    assert.deepEqual(list('code_challenge_methods_supported'), ['S256']);
    const { verifier } = pkcePair();
    const res = await fetch(
      authorizationRequest(m.authorization_endpoint as string, {
        client_id: 'walk-public',
        redirect_uri: REDIRECT,
        code_challenge: verifier,
        code_challenge_method: 'plain',
      }),
      { headers: personHeaders(), redirect: 'manual' },
    );
    assert.equal(res.status, 303, 'a valid redirect URI gets the error');
    assert.equal(new URL(res.headers.get('location') as string).searchParams.get('error'), 'invalid_request');
  });

  it('authorization_response_iss_parameter_supported: the authorization response carries iss, the issuer (RFC 9207); response_types_supported and response_modes_supported are code and query alone', async () => {
    assert.equal(m.authorization_response_iss_parameter_supported, true);
    const { back } = await authorizationCode('walk-public');
    assert.equal(back.searchParams.get('iss'), issuer.url);
    assert.equal(back.hash, '', 'the query response mode, not a fragment');
    assert.deepEqual(list('response_types_supported'), ['code']);
    assert.deepEqual(list('response_modes_supported'), ['query']);
    const res = await fetch(
      authorizationRequest(m.authorization_endpoint as string, {
        client_id: 'walk-public',
        redirect_uri: REDIRECT,
        response_type: 'token',
        code_challenge: pkcePair().challenge,
      }),
      { headers: personHeaders(), redirect: 'manual' },
    );
    assert.equal(new URL(res.headers.get('location') as string).searchParams.get('error'), 'unsupported_response_type');
  });

  it('every algorithm in dpop_signing_alg_values_supported binds a token (token_type DPoP, cnf.jkt)', async () => {
    const pairs: Record<string, () => { privateKey: KeyObject; publicKey: KeyObject }> = {
      ES256: () => generateKeyPairSync('ec', { namedCurve: 'P-256' }),
      ES384: () => generateKeyPairSync('ec', { namedCurve: 'P-384' }),
      ES512: () => generateKeyPairSync('ec', { namedCurve: 'P-521' }),
      EdDSA: () => generateKeyPairSync('ed25519'),
      Ed25519: () => generateKeyPairSync('ed25519'),
    };
    const algs = list('dpop_signing_alg_values_supported');
    assert.ok(algs.length > 0);
    for (const alg of algs) {
      const pair = (pairs[alg] ?? (() => generateKeyPairSync('rsa', { modulusLength: 2048 })))();
      const jwk = pair.publicKey.export({ format: 'jwk' }) as JWK;
      const proof = await new SignJWT({
        htm: 'POST',
        htu: m.token_endpoint as string,
        iat: Math.floor(Date.now() / 1000),
        jti: crypto.randomUUID(),
      })
        .setProtectedHeader({ typ: 'dpop+jwt', alg, jwk } as never)
        .sign(pair.privateKey);
      const res = await issuer.post(
        '/oauth2/token',
        { grant_type: 'client_credentials' },
        { ...(await credentials('client_secret_basic')).headers, dpop: proof },
      );
      const body = (await res.json()) as { token_type: string; access_token: string };
      assert.equal(res.status, 200, `${alg}: ${JSON.stringify(body)}`);
      assert.equal(body.token_type, 'DPoP', alg);
      assert.equal(typeof (decodeJwt(body.access_token).cnf as { jkt?: string })?.jkt, 'string', alg);
    }
  });

  it('advertises nothing it lacks: no mTLS-bound tokens or mTLS client authentication (RFC 8705), no registration endpoint when registration is off, no userinfo', async () => {
    for (const absent of [
      'tls_client_certificate_bound_access_tokens',
      'mtls_endpoint_aliases',
      'registration_endpoint',
      'userinfo_endpoint',
      'request_parameter_supported',
      'pushed_authorization_request_endpoint',
    ]) {
      assert.equal(m[absent], undefined, absent);
    }
    for (const name of [
      'token_endpoint_auth_methods_supported',
      'revocation_endpoint_auth_methods_supported',
      'introspection_endpoint_auth_methods_supported',
    ]) {
      for (const method of list(name))
        assert.ok(['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'].includes(method), `${name}: ${method}`);
    }
  });
});
