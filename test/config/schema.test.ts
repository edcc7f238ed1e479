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
