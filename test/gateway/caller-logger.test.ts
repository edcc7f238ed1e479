/**
 * A library user's own pino logger (`createGateway(config, { logger })`): the default logger's
 * terminalSafeJson hook is not there, and a log viewer (pino-pretty, jq -r) prints the parsed
 * values. What another party chose must reach such a logger already escaped.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, describe, it } from 'node:test';
import {
  AUDIENCE,
  baseConfig,
  capturedLog,
  issuersAt,
  key,
  startGateway,
  startUpstream,
  type TestGateway,
  token,
  type Upstream,
} from './helpers.ts';

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is looked for
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

function strings(value: unknown, out: string[] = []): string[] {
  if (typeof value === 'string') out.push(value);
  else if (value !== null && typeof value === 'object') for (const v of Object.values(value)) strings(v, out);
  return out;
}

describe('gateway with the caller’s own logger', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  const log = capturedLog();
  const jwks = createServer((_req, res) => {
    res.setHeader('content-type', 'application/json');
    // A key of an algorithm the issuer does not allow, named with a kid that clears the screen,
    // sets a colour (ESC [ and the one-byte CSI U+009B), forges a line (\n, U+2028) and reverses
    // the text after it (U+202E): skipped, and named in a verifier_warning.
    const bad = { ...key.jwk, kid: 'k\u001b[2J\u009b31m\nforged\u2028line\u202eevil', alg: 'RS256' };
    res.end(JSON.stringify({ keys: [bad, { ...key.jwk, kid: 'good' }] }));
  });
  before(async () => {
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    upstream = await startUpstream();
    gw = await startGateway(
      {
        ...baseConfig(),
        issuers: issuersAt(jwks),
        gateway: {
          routes: [
            { id: 'api', match: { path_prefix: '/api' }, upstream: { url: upstream.url }, auth: 'jwt', audience: AUDIENCE, rules: [{}] },
          ],
        },
      },
      { logger: log.logger },
    );
  });
  after(async () => {
    await gw?.close();
    await upstream?.close();
    jwks.close();
  });

  it('attack: a JWKS kid with ANSI escapes, line breaks and bidi overrides reaches the caller’s logger escaped (verifier_warning)', async () => {
    const res = await fetch(`${gw.url}/api/x`, { headers: { authorization: `Bearer ${await token()}` } });
    await res.arrayBuffer();
    const warnings = log.lines.filter((l) => l.event === 'verifier_warning');
    assert.ok(
      warnings.some((l) => String(l.msg).includes('forged')),
      JSON.stringify(log.lines),
    );
    for (const line of warnings) for (const s of strings(line)) assert.doesNotMatch(s, UNSAFE, JSON.stringify(s));
  });
});
