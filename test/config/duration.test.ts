import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { z } from 'zod';
import { formatDuration, parseDuration } from '../../src/config/duration.ts';
import { parseConfigText } from '../../src/config/load.ts';
import { configSchema } from '../../src/config/schema.ts';
import { issuesOf } from '../helpers/config.ts';

describe('config: durations', () => {
  it('reads seconds as a number and units as a string', () => {
    assert.equal(parseDuration(30), 30);
    assert.equal(parseDuration('250ms'), 0.25);
    assert.equal(parseDuration(' 10m '), 600);
    assert.equal(parseDuration('7d'), 604800);
  });
  it('reads a quoted zero as zero (a tool quoting every scalar writes "0" for "off")', () => {
    assert.equal(parseDuration('0'), 0);
  });
  it('refuses a quoted number other than zero (seconds or days?), negatives, units it does not know', () => {
    for (const v of ['30', '-1s', '1w', '1e3s', '0x10', '10 m', '', -1, Number.NaN, null])
      assert.equal(parseDuration(v), undefined, String(v));
  });
  it('writes the shortest exact form', () => {
    assert.equal(formatDuration(600), '10m');
    assert.equal(formatDuration(90), '90s');
    assert.equal(formatDuration(86400 * 30), '30d');
  });
});

/** Every node of `schema` (JSON Schema of the input) that is a duration, by path. */
function durations(schema: Record<string, unknown>, path = ''): [string, Record<string, unknown>][] {
  if (schema.format === 'duration') return [[path, schema]];
  const out: [string, Record<string, unknown>][] = [];
  for (const [k, v] of Object.entries(schema)) {
    if (v !== null && typeof v === 'object')
      out.push(...durations(v as Record<string, unknown>, k === 'properties' ? path : `${path}.${k}`));
  }
  return out;
}

describe('config: every duration has a maximum', () => {
  const all = durations(z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>);

  it('has one, and no accepted value overflows a date (an expiry computed from it) or a timer', () => {
    assert.ok(all.length > 40, `found ${all.length} durations`);
    for (const [path, s] of all) {
      assert.equal(typeof s.maximum, 'number', `${path} has no maximum`);
      // Ten years at most: an expiry of now + that, in ms, is far inside a Date's range.
      assert.ok((s.maximum as number) <= 3660 * 86_400, `${path}: ${s.maximum}`);
    }
  });

  const text = (yaml: string) => issuesOf(() => parseConfigText(yaml, 'tessera.yaml', {}));

  it('overflow at issuance: refresh_token_ttl: 1e300 is refused with its path and the allowed range', () => {
    assert.deepEqual(text('token_service: { refresh_token_ttl: 1e300 }'), [
      { path: 'token_service.refresh_token_ttl', message: '1e+300 is longer than allowed here: write a duration from 0 to 366d' },
    ]);
  });

  it('timers: durations that run a timer (a re-introspection interval, fetch timeouts) are at most what a Node timer can hold', () => {
    const introspection = 'introspection: { endpoint: https://as.test/introspect, client_id: c, client_secret: s';
    assert.deepEqual(
      text(`${introspection}, cache_max_ttl: 30d, timeout: 30d }
issuers: [{ issuer: https://i.test, audiences: [a], jwks_uri: https://i.test/jwks, jwks_cache: { timeout: 30d } }]`).map((i) => i.path),
      ['issuers[0].jwks_cache.timeout', 'introspection.cache_max_ttl', 'introspection.timeout'],
    );
  });

  it('says .nan is not a number and .inf is infinite, instead of "expected a number, got a number"', () => {
    assert.deepEqual(text('token_service: { refresh_token_ttl: .nan }\nserver: { port: .inf }'), [
      { path: 'server.port', message: 'expected a number (digits without quotes, as in port: 8080), got .inf (infinity)' },
      {
        path: 'token_service.refresh_token_ttl',
        message: 'expected a number (digits without quotes, as in refresh_token_ttl: 10), got .nan (not a number)',
      },
    ]);
  });
});

describe('config: the top level', () => {
  for (const [what, yaml, got] of [
    ['a list', '- gateway: {}', 'a list'],
    ['a number', '42', 'a number'],
    ['a string', 'gateway', 'a string'],
  ] as const) {
    it(`says the file must be a mapping when it is ${what}`, () => {
      assert.deepEqual(
        issuesOf(() => parseConfigText(yaml, 'tessera.yaml', {})),
        [
          {
            path: '(file)',
            message: `the file must be a mapping of settings (data_dir:, server:, issuers: …, each at the start of a line), got ${got}`,
          },
        ],
      );
    });
  }
});
