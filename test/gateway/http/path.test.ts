import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { secretIndex } from '../../../src/core/secret-shape.ts';
import {
  auditPath,
  auditRawPath,
  hasMethodOverride,
  normalizePath,
  normalizeTarget,
  stripAccessToken,
} from '../../../src/gateway/http/path.ts';

describe('path normalization: refused targets', () => {
  const refused: Record<string, string> = {
    'dot-dot segment': '/api/../admin',
    'dot segment': '/api/./admin',
    'trailing dot-dot': '/api/..',
    'encoded dot-dot (lower)': '/api/%2e%2e/admin',
    'encoded dot-dot (upper)': '/api/%2E%2E/admin',
    'half-encoded dot-dot': '/api/.%2e/admin',
    'encoded slash (lower)': '/api/a%2fb',
    'encoded slash (upper)': '/api/..%2Fadmin',
    'raw backslash': '/api\\..\\admin',
    'encoded backslash': '/api/%5c..%5cadmin',
    'encoded NUL': '/api/a%00b',
    'encoded line feed': '/api/admin%0A/x',
    'encoded carriage return': '/api/admin%0d/x',
    'encoded tab': '/api/admin%09',
    'encoded unit separator': '/api/admin%1F/x',
    'encoded DEL': '/api/admin%7f/x',
    'double-encoded line feed': '/api/admin%250A/x',
    'trailing encoded space': '/api/admin%20/x',
    'leading encoded space': '/api/%20admin',
    'encoded space behind a trailing dot (Windows drops both)': '/api/admin%20./x',
    'encoded space behind trailing dots, one encoded': '/api/admin%20.%2e',
    'trailing encoded no-break space': '/api/admin%C2%A0',
    'double-encoded trailing space (a second decode reads admin%20)': '/api/admin%2520/x',
    'double-encoded leading space': '/api/%2520admin',
    'double-encoded space behind a trailing dot': '/api/admin%2520.',
    'double-encoded trailing no-break space': '/api/admin%25C2%25A0',
    'trailing encoded NEL (U+0085)': '/api/admin%C2%85/x',
    'double-encoded dot': '/api/%252e%252e/admin',
    'double-encoded slash': '/api/a%252fb',
    'double-encoded dot, its digits encoded too (normalizes to %252e)': '/api/x/%25%32%65%25%32%65/admin',
    'double-encoded slash, half-encoded digits (normalizes to %252f)': '/api/a%25%32fb',
    'double-encoded backslash, encoded digits (normalizes to %255c)': '/api/a%25%35%63b',
    // An upstream that decodes twice (or nginx forwarding $uri: proxy_pass http://app$uri) reads
    // `admin` where the rules matched `%61dmin` (single-decoders, routes and rules alike).
    'double-encoded letter (a second decode reads admin)': '/api/%2561dmin/x',
    'double-encoded letter, upper-case escape': '/api/%2541dmin/x',
    'double-encoded letter, its digits encoded too (normalizes to %2561)': '/api/%25%36%31dmin/x',
    'double-encoded colon (a rule may name /v1/models:delete)': '/v1/models%253Adelete',
    'double-encoded at sign': '/users/%2540me',
    // A second decode makes these non-ASCII: a rule for `/straße` never saw them, and an upstream
    // that also folds case or applies NFKC reads `ａdmin` and `admın` as `admin`.
    'double-encoded non-ASCII letter (a second decode reads straße)': '/wiki/stra%25C3%259Fe',
    'double-encoded fullwidth letter (a second decode and NFKC read admin)': '/api/%25EF%25BD%2581dmin',
    'double-encoded dotless i, lower-case escapes': '/api/adm%25c4%25b1n',
    'half-double-encoded dotless i (a stray lead byte, refused as not UTF-8)': '/api/adm%C4%25B1n',
    'double-encoded non-ASCII, its digits encoded too (normalizes to %25C4)': '/api/adm%25%43%34%25B1n',
    'double-encoded overlong dot-dot (a lenient second decode reads ..)': '/api/x/%25C0%25AE%25C0%25AE/admin',
    'semicolon path parameter': '/admin;jsessionid=x/secret',
    'encoded semicolon': '/admin%3bx/secret',
    // An upstream that decodes the path once and parses it again (nginx `proxy_pass http://app$uri`)
    // reads `/admin?x/secret` as `/admin` with a query, `/admin#x` as `/admin`.
    'encoded question mark': '/admin%3Fx/secret',
    'encoded question mark ending the path (lower)': '/admin%3f',
    'encoded hash': '/admin%23x/secret',
    'encoded hash ending the path': '/admin%23',
    'empty segment': '/api//admin',
    'malformed escape': '/api/%zz',
    'truncated escape': '/api/%2',
    'control character': '/api/\x01',
    'non-ASCII': '/api/é',
    'asterisk-form': '*',
    'absolute-form': 'http://evil.test/api',
    empty: '',
    fragment: '/api#x',
    // Lenient UTF-8 decoders (old IIS, Tomcat with URIEncoding=UTF-8 before 6.0.18) read overlong
    // forms as the ASCII character: `%c0%ae` is `.`, `%c0%af` is `/`, `%c1%9c` is `\`.
    'overlong UTF-8 dot-dot': '/api/x/%c0%ae%c0%ae/admin',
    'overlong UTF-8 slash': '/api/..%c0%afadmin',
    'overlong UTF-8 backslash': '/api/..%c1%9cadmin',
    'three-byte overlong dot': '/api/%e0%80%ae%e0%80%ae/admin',
    'UTF-8 surrogate': '/api/%ed%a0%80',
    'stray UTF-8 continuation byte': '/api/%80',
    'truncated UTF-8 sequence': '/api/%e2%82',
    'UTF-8 past U+10FFFF': '/api/%f4%90%80%80',
  };
  for (const [name, target] of Object.entries(refused)) {
    it(`refuses ${name}`, () => assert.equal(normalizeTarget(target), undefined));
  }
});

describe('path normalization: accepted targets', () => {
  it('keeps a double-encoded space inside a segment and a literal percent at its end', () => {
    assert.equal(normalizePath('/a/b%2520c'), '/a/b%2520c');
    assert.equal(normalizePath('/a/100%25'), '/a/100%25');
    assert.equal(normalizePath('/a/100%25.'), '/a/100%25.');
    assert.equal(normalizePath('/a/%25%C3%A9'), '/a/%25%C3%A9');
    assert.equal(normalizePath('/a/50%25off'), '/a/50%25off');
  });
  it('keeps a plain path and query', () => {
    assert.deepEqual(normalizeTarget('/api/items/1?x=1&y=2'), { path: '/api/items/1', query: '?x=1&y=2', queryToken: false });
  });
  it('decodes escaped unreserved characters so an encoding cannot dodge a rule', () => {
    assert.equal(normalizePath('/api/%61dmin'), '/api/admin');
    assert.equal(normalizePath('/a/%7Euser'), '/a/~user');
  });
  it('upper-cases other escapes', () => {
    assert.equal(normalizePath('/a/b%20c%3a'), '/a/b%20c%3A');
  });
  it('keeps well-formed percent-encoded UTF-8 as it came (upper-cased)', () => {
    assert.equal(normalizePath('/docs/caf%c3%a9/%e2%82%ac/%f0%9f%98%80'), '/docs/caf%C3%A9/%E2%82%AC/%F0%9F%98%80');
  });
  it('keeps a trailing slash and the root', () => {
    assert.equal(normalizePath('/api/'), '/api/');
    assert.equal(normalizePath('/'), '/');
  });
  it('keeps a space inside a segment and a trailing dot (see docs/gateway.md)', () => {
    assert.equal(normalizePath('/api/a%20b/Washington,_D.C./example.com%2e'), '/api/a%20b/Washington,_D.C./example.com.');
  });
  it('accepts dots inside segments', () => {
    assert.equal(normalizePath('/files/a..b/.well-known/x.json'), '/files/a..b/.well-known/x.json');
  });
});

describe('query tokens', () => {
  it('removes access_token and keeps the rest byte for byte', () => {
    assert.deepEqual(normalizeTarget('/a?x=1&access_token=secret&y=%20'), { path: '/a', query: '?x=1&y=%20', queryToken: true });
  });
  it('removes an encoded access_token key', () => {
    assert.deepEqual(stripAccessToken('access%5Ftoken=s&a=1'), { query: 'a=1', found: true });
    assert.deepEqual(stripAccessToken('access_token&a=1'), { query: 'a=1', found: true });
  });
  it('removes every copy', () => {
    assert.deepEqual(normalizeTarget('/a?access_token=1&access_token=2'), { path: '/a', query: '', queryToken: true });
  });
  it('leaves similar names alone', () => {
    assert.deepEqual(stripAccessToken('my_access_token=1'), { query: 'my_access_token=1', found: false });
  });

  it('attack: query keys that PHP or a ;-splitting server reads as access_token or _method are removed too', () => {
    for (const q of [
      'access.token=s',
      'access+token=s',
      'access%20token=s',
      'access[token=s',
      'access_token[]=s',
      'access_token[0]=s',
      'access%2Etoken=s',
      // PHP drops leading spaces from a key before it maps the rest.
      '+access_token=s',
      '%20%20access.token=s',
    ]) {
      assert.deepEqual(stripAccessToken(`${q}&a=1`), { query: 'a=1', found: true }, q);
    }
    assert.deepEqual(stripAccessToken('a=1;access_token=s&b=2'), { query: 'b=2', found: true });
    assert.deepEqual(stripAccessToken('_method=DELETE&a=1&%5Fmethod=PUT&_method[]=X'), { query: 'a=1', found: false }, 'method override');
    assert.deepEqual(stripAccessToken('method=x&my_method=y'), { query: 'method=x&my_method=y', found: false });
    for (const q of ['access.tokens=1', 'xaccess.token=1', 'access_token_x[]=1', 'accessXtoken=1']) {
      assert.deepEqual(stripAccessToken(q), { query: q, found: false }, q);
    }
  });

  it('hasMethodOverride finds every _method stripAccessToken removes (forward-auth refuses them), and nothing else', () => {
    for (const q of [
      '_method=DELETE',
      'a=1&%5Fmethod=PUT',
      '_method[]=X',
      '%5f%6Dethod=X',
      'a=1;_method=PUT',
      'access_token=s;_method=PUT',
      '.method=X',
      // attack: a leading space PHP drops (`+_method` and `%20_method` are `_method` to Symfony and Laravel)
      '+_method=DELETE',
      'a=1&%20_method=DELETE',
      '++.method=X',
    ]) {
      assert.equal(hasMethodOverride(q), true, q);
      assert.notEqual(stripAccessToken(q)?.query, q, q);
    }
    for (const q of ['', 'method=x&my_method=y', 'a=%20', '_methods=1', 'x=_method']) assert.equal(hasMethodOverride(q), false, q);
  });
});

describe('audit paths', () => {
  it('drops query values and keeps keys', () => {
    assert.equal(auditPath('/items', '?limit=10&q=secret&flag'), '/items?limit=&q=&flag=');
    assert.equal(auditPath('/items', ''), '/items');
  });
  it('a token sent as a bare query key (?tgw_…) is not recorded: keys as long as a secret are *', () => {
    const staticToken = `tgw_${'A'.repeat(43)}`;
    assert.equal(auditPath('/items', `?${staticToken}&page=2`), '/items?*=&page=');
    assert.equal(auditPath('/items', `?${'k'.repeat(32)}=1&${'k'.repeat(31)}=1`), `/items?*=&${'k'.repeat(31)}=`);
  });
  it('attack: a token sent as a path segment (a JWT, a refresh token, a client secret, a tgw_ static token) is not recorded: the segment is *', () => {
    const jwt = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ';
    const rt = `trt_${'B'.repeat(43)}`;
    assert.equal(auditPath(`/items/${jwt}/x`, '?a=1'), '/items/*/x?a=');
    assert.equal(auditPath(`/hook/${rt}`, ''), '/hook/*');
    assert.equal(auditPath(`/c/tcs_${'c'.repeat(43)};v=tgw_${'d'.repeat(43)}`, ''), '/c/*;v=*');
    // Cut at 2048 characters, a JWT's header and payload would be left: redacted before the cut.
    const long = auditPath(`/${'a'.repeat(2000)}/${jwt}`, '');
    assert.equal(long, `/${'a'.repeat(2000)}/*`);
    assert.equal(auditRawPath(`/x/${jwt}/%01?q=1`), '/x/*/%01');
    // Not a token: kept.
    assert.equal(auditPath('/eyJ/a.b/treat_me', ''), '/eyJ/a.b/treat_me');
  });
  it('attack: a token after a percent-encoded separator in the path (a client URL-encoding `Bearer <token>` or `/<token>` into it) was recorded whole', () => {
    const jwt = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ';
    const gw = `tgw_${'A'.repeat(43)}`;
    assert.equal(auditPath(`/auth/Bearer%20${jwt}`, ''), '/auth/Bearer%20*');
    assert.equal(auditPath(`/files/a%2F${gw}/b`, '?x=1'), '/files/a%2F*/b?x=');
    assert.equal(auditPath(`/k%3D${jwt}`, ''), '/k%3D*');
    // A refused target (an encoded slash is refused by the normalizer) is recorded the same way.
    assert.equal(auditRawPath(`/x%2f${jwt}?q=1`), '/x%2f*');
  });
  it('attack: a static token the operator chose (no prefix) sent in the path or as a query key is not recorded: the presented or configured credential is *', () => {
    // `openssl rand -base64 32`: `/` splits it over two segments, `+` and `=` may arrive percent-encoded.
    const b64 = 'q7Xk/9vR2mP+Lw0zT4nYc8HsE1uJbA6dFgK3oQiV5xM=';
    assert.equal(auditPath(`/hook/${b64}/x`, '?a=1', [b64]), '/hook/*/x?a=');
    assert.equal(auditPath(`/hook/q7Xk/9vR2mP%2BLw0zT4nYc8HsE1uJbA6dFgK3oQiV5xM%3D`, '', [b64]), '/hook/*');
    assert.equal(auditPath(`/a;k=${b64}.json`, '', [b64]), '/a;k=*.json');
    // A short credential (an operator's upstream API key) is * as a whole segment or query key only.
    assert.equal(auditPath('/items/k3y/k3y.txt', '?k3y&page=2', ['k3y']), '/items/*/k3y.txt?*=&page=');
    assert.equal(auditRawPath(`/x/${b64}/%01?q=1`, [b64]), '/x/*/%01');
    assert.equal(auditRawPath('/x/k3y/..', ['k3y']), '/x/*/..');
    // Nothing presented, nothing configured: kept.
    assert.equal(auditPath('/items/k3y', '?k3y', []), '/items/k3y?k3y=');
  });
  it('attack: the userinfo of an absolute-form target (http://SECRET@host/…) is not recorded', () => {
    assert.equal(auditRawPath('http://static-secret-value-0123456789@a/api/x?q=1'), 'http://a/api/x');
    assert.equal(auditRawPath('https://user:pass@a:8443/'), 'https://a:8443/');
  });
  it('attack: a query of thousands of keys records the first 64, then …', () => {
    const q = `?${Array.from({ length: 5000 }, (_, i) => `k${i}=1`).join('&')}`;
    const keys = Array.from({ length: 64 }, (_, i) => `k${i}=`).join('&');
    assert.equal(auditPath('/items', q), `/items?${keys}&…`);
    assert.equal(auditPath('/items', `?${Array.from({ length: 64 }, (_, i) => `k${i}=1`).join('&')}`), `/items?${keys}`);
  });
  it('attack: query keys are matched against a compiled set of the configured secrets, not each key against every secret', () => {
    const configured = Array.from({ length: 1000 }, (_, i) => `key${i}`);
    const index = secretIndex(configured);
    let reads = 0;
    const counted = new Proxy(configured, {
      get(t, k, r) {
        if (typeof k === 'string' && /^\d+$/.test(k)) reads++;
        return Reflect.get(t, k, r);
      },
    });
    const q = `?${Array.from({ length: 64 }, (_, i) => `key${i * 7}`).join('&')}&key%35`;
    assert.equal(auditPath('/items', q, counted, index), `/items?${Array.from({ length: 64 }, () => '*=').join('&')}&…`);
    // The path is compared with them once (three passes); each of 64 keys with each secret would be 64,000 reads.
    assert.ok(reads <= 3 * configured.length, String(reads));
    assert.equal(auditPath('/items', '?key5&x&cred', ['cred', ...configured], index), '/items?*=&x=&*=');
  });
  it('records at most 2048 characters of a path', () => {
    assert.equal(auditPath(`/${'a'.repeat(5000)}`, '?x=1'), `/${'a'.repeat(2047)}?x=`);
  });
  it('escapes and truncates a refused raw path, without its query', () => {
    assert.equal(auditRawPath('/a\x01b?access_token=x'), '/a%01b');
    assert.equal(auditRawPath(`/${'a'.repeat(400)}`).length, 256);
  });
});
