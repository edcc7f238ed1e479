import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  callerResponseHeaders,
  compileHeaderPolicy,
  connectionNamed,
  filterCookies,
  headerSafe,
  upstreamRequestHeaders,
} from '../../../src/gateway/http/headers.ts';

const policy = compileHeaderPolicy(['x-tessera-subject'], ['x-internal'], ['session', 'csrf']);
const facts = { remoteAddress: '10.0.0.9', proto: 'https', host: 'api.example.com', trustProxy: false };

describe('upstream request headers', () => {
  it('drops hop-by-hop headers and those the Connection header names', () => {
    const out = upstreamRequestHeaders(
      {
        connection: 'keep-alive, x-hop',
        'keep-alive': 'timeout=5',
        'x-hop': '1',
        te: 'trailers',
        upgrade: 'h2c',
        'transfer-encoding': 'chunked',
        'proxy-authorization': 'Basic x',
        accept: 'a',
      },
      policy,
      facts,
      {},
    );
    for (const h of ['connection', 'keep-alive', 'x-hop', 'te', 'upgrade', 'transfer-encoding', 'proxy-authorization'])
      assert.equal(out[h], undefined, h);
    assert.equal(out.accept, 'a');
  });
  it('never forwards the caller credentials', () => {
    const out = upstreamRequestHeaders({ authorization: 'Bearer caller', dpop: 'proof' }, policy, facts, {});
    assert.equal(out.authorization, undefined);
    assert.equal(out.dpop, undefined);
  });
  it('strips spoofed identity headers and configured extras; the gateway’s own values win', () => {
    const out = upstreamRequestHeaders({ 'x-tessera-subject': 'admin', 'x-internal': 'yes' }, policy, facts, {
      'x-tessera-subject': 'user-1',
    });
    assert.equal(out['x-tessera-subject'], 'user-1');
    assert.equal(out['x-internal'], undefined);
    const none = upstreamRequestHeaders({ 'x-tessera-subject': 'admin' }, policy, facts, {});
    assert.equal(none['x-tessera-subject'], undefined);
  });
  it('identity spoofing with underscores: X_Tessera_Subject and X_Forwarded_For never pass (CGI, WSGI, PHP read them as the dashed name)', () => {
    const out = upstreamRequestHeaders(
      {
        x_tessera_subject: 'admin',
        'x-tessera_subject': 'admin',
        x_internal: 'yes',
        x_forwarded_for: '6.6.6.6',
        proxy_authorization: 'Basic x',
        x_other: 'kept',
      },
      policy,
      facts,
      { 'x-tessera-subject': 'user-1' },
    );
    for (const h of ['x_tessera_subject', 'x-tessera_subject', 'x_internal', 'x_forwarded_for', 'proxy_authorization'])
      assert.equal(out[h], undefined, h);
    assert.equal(out['x-tessera-subject'], 'user-1');
    assert.equal(out.x_other, 'kept');
  });
  it('credential spoofing with underscores: X_Api_Key does not ride along with the credential the gateway sets in X-Api-Key', () => {
    const out = upstreamRequestHeaders({ x_api_key: 'caller-key', 'x-api-key': 'caller-key' }, policy, facts, {
      'x-api-key': 'upstream-key',
    });
    assert.equal(out.x_api_key, undefined);
    assert.equal(out['x-api-key'], 'upstream-key');
  });
  it('removes configured cookies and keeps the others', () => {
    const out = upstreamRequestHeaders({ cookie: 'session=abc; theme=dark; csrf=1' }, policy, facts, {});
    assert.equal(out.cookie, 'theme=dark');
    const gone = upstreamRequestHeaders({ cookie: 'session=abc' }, policy, facts, {});
    assert.equal(gone.cookie, undefined);
  });
  it('replaces X-Forwarded-* and Forwarded from an untrusted peer', () => {
    const out = upstreamRequestHeaders(
      {
        'x-forwarded-for': '1.2.3.4',
        'x-forwarded-host': 'evil',
        'x-forwarded-proto': 'http',
        forwarded: 'for=1.2.3.4',
        'x-real-ip': '1.2.3.4',
      },
      policy,
      facts,
      {},
    );
    assert.equal(out['x-forwarded-for'], '10.0.0.9');
    assert.equal(out['x-forwarded-host'], 'api.example.com');
    assert.equal(out['x-forwarded-proto'], 'https');
    assert.equal(out.forwarded, 'for=10.0.0.9;host=api.example.com;proto=https');
    assert.equal(out['x-real-ip'], undefined);
  });
  it('appends to X-Forwarded-For and Forwarded from a trusted proxy', () => {
    const out = upstreamRequestHeaders(
      { 'x-forwarded-for': '1.2.3.4', forwarded: 'for=1.2.3.4' },
      policy,
      { ...facts, trustProxy: true, remoteAddress: '::1' },
      {},
    );
    assert.equal(out['x-forwarded-for'], '1.2.3.4, ::1');
    assert.equal(out.forwarded, 'for=1.2.3.4, for="[::1]";host=api.example.com;proto=https');
  });
  it('quotes a host with a port in Forwarded', () => {
    const out = upstreamRequestHeaders({}, policy, { ...facts, host: 'localhost:8080', remoteAddress: '::ffff:127.0.0.1' }, {});
    assert.equal(out.forwarded, 'for=127.0.0.1;host="localhost:8080";proto=https');
  });
  it('sets its own request id and trace context', () => {
    const out = upstreamRequestHeaders({ 'x-request-id': 'spoof', traceparent: 'x' }, policy, facts, {
      'x-request-id': 'r1',
      traceparent: 't',
    });
    assert.equal(out['x-request-id'], 'r1');
    assert.equal(out.traceparent, 't');
  });
  it('drops Expect and Host (undici sets the upstream host)', () => {
    const out = upstreamRequestHeaders({ expect: '100-continue', host: 'a' }, policy, facts, {});
    assert.equal(out.expect, undefined);
    assert.equal(out.host, undefined);
  });
});

describe('caller response headers', () => {
  it('drops hop-by-hop and Connection-named headers, keeps duplicates', () => {
    const raw = [
      'Connection',
      'keep-alive, X-Secret-Hop',
      'Keep-Alive',
      'timeout=5',
      'Transfer-Encoding',
      'chunked',
      'X-Secret-Hop',
      '1',
      'Set-Cookie',
      'a=1',
      'Set-Cookie',
      'b=2',
    ];
    assert.deepEqual(callerResponseHeaders(raw, ['x-request-id', 'r']), ['set-cookie', 'a=1', 'set-cookie', 'b=2', 'x-request-id', 'r']);
  });

  it("upstream challenge leak: with the gateway's own credential injected, WWW-Authenticate and Proxy-Authenticate are dropped", () => {
    const raw = ['WWW-Authenticate', 'Bearer resource_metadata="https://up.internal/x"', 'Proxy-Authenticate', 'Basic', 'X-A', '1'];
    assert.deepEqual(callerResponseHeaders(raw, [], true), ['x-a', '1']);
    // Without it (credential none or passthrough) the upstream's challenge is the caller's to answer.
    assert.deepEqual(callerResponseHeaders(raw), ['www-authenticate', 'Bearer resource_metadata="https://up.internal/x"', 'x-a', '1']);
  });
});

describe('small helpers', () => {
  it('lists Connection-named headers', () => {
    assert.deepEqual(connectionNamed('close, X-A ,upgrade, x-b'), ['x-a', 'x-b']);
    assert.equal(connectionNamed('keep-alive'), undefined);
  });
  it('filters cookies by exact name', () => {
    assert.equal(filterCookies('session_id=1; session=2', new Set(['session'])), 'session_id=1');
  });
  it('makes identity values header-safe', () => {
    assert.equal(headerSafe('user-1'), 'user-1');
    assert.equal(headerSafe('evil\r\nx-admin: 1'), 'evil%0D%0Ax-admin%3A%201');
    assert.equal(headerSafe('José'), 'Jos%C3%A9');
    assert.equal(headerSafe('a,b'), 'a%2Cb');
  });
});
