/**
 * `tessera.yaml`'s own top-level settings (the sections have their own schema tests).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfigText } from '../../src/config/load.ts';
import { issuesOf } from '../helpers/config.ts';

describe('config: server.host', () => {
  it('refuses a host with whitespace or control characters, naming the setting, instead of failing at listen with an unexpected error', () => {
    for (const host of ['" "', '"a b"', '"gw\\nx"', '"\\t127.0.0.1"']) {
      assert.deepEqual(
        issuesOf(() => parseConfigText(`server:\n  host: ${host}\n`, 'tessera.yaml', {})),
        [
          {
            path: 'server.host',
            message:
              'a host name or an address to listen on, without spaces or control characters (127.0.0.1, ::1, or 0.0.0.0 for every interface)',
          },
        ],
        host,
      );
    }
  });

  it('takes names, addresses and the wildcards', () => {
    for (const host of ['127.0.0.1', '::1', '0.0.0.0', '"::"', 'gw.internal.example']) {
      assert.equal(parseConfigText(`server:\n  host: ${host}\n`, 'tessera.yaml', {}).server.host, host.replaceAll('"', ''));
    }
  });
});

describe('config: server.public_url', () => {
  // The gateway's DPoP URL for a request (htu, RFC 9449 §4.3) is server.public_url followed by the
  // request target, and the token service's issuer defaults to it. A query or fragment in it would
  // swallow every request's path (`https://api.example/?x` + `/admin` has the path `/`), so a proof
  // made for the origin's root would pass at every path; userinfo or another scheme would make
  // every proof fail, and put credentials into the issuer.
  for (const [name, url] of [
    ['a query', 'https://api.example/?tenant=1'],
    ['an empty query', 'https://api.example/?'],
    ['a fragment', 'https://api.example/#top'],
    ['an empty fragment', 'https://api.example/#'],
    ['userinfo', 'https://user:pw@api.example/'],
    ['another scheme', 'ftp://api.example/'],
  ] as const) {
    it(`attack: a public_url with ${name} is refused at load, naming the setting`, () => {
      const issues = issuesOf(() => parseConfigText(`server:\n  public_url: "${url}"\n`, 'tessera.yaml', {}));
      assert.deepEqual(
        issues.map((i) => i.path),
        ['server.public_url'],
        url,
      );
    });
  }

  it('takes an http(s) URL with or without a path (a prefix a proxy in front removes)', () => {
    for (const url of ['https://api.example', 'https://api.example/', 'https://api.example/prefix/', 'http://127.0.0.1:8080']) {
      assert.equal(parseConfigText(`server:\n  public_url: "${url}"\n`, 'tessera.yaml', {}).server.public_url, url);
    }
  });
});
