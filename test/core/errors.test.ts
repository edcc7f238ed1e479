/**
 * The error catalogue and docs/errors.md agree both ways (fastify's
 * test/internals/errors.test.js): every code is documented with its status, RFC error and
 * description, and every documented code exists.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ERROR_CODES, type ErrorCode, RETIRED_CODES, TesseraError } from '../../src/core/errors.ts';

const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');

interface Row {
  readonly status: number;
  readonly error: string | null;
  readonly description: string;
}

function documentedCodes(): Map<string, Row> {
  const rows = new Map<string, Row>();
  for (const line of doc.split('\n')) {
    const m = /^\| `([a-z0-9_]+)` \| (\d{3}) \| (—|`[a-z_]+`) \| (.+) \|$/.exec(line);
    if (!m) continue;
    assert.ok(!rows.has(m[1] as string), `${m[1]} is documented twice`);
    rows.set(m[1] as string, {
      status: Number(m[2]),
      error: m[3] === '—' ? null : (m[3] as string).slice(1, -1),
      description: m[4] as string,
    });
  }
  return rows;
}

describe('docs/errors.md and ERROR_CODES', () => {
  const rows = documentedCodes();

  it('documents every code with its status, RFC error and description', () => {
    for (const [code, spec] of Object.entries(ERROR_CODES)) {
      const row = rows.get(code);
      assert.ok(row, `${code} is missing from docs/errors.md`);
      assert.deepEqual(row, { status: spec.status, error: spec.error, description: spec.description }, code);
    }
  });

  it('documents no code that does not exist', () => {
    for (const code of rows.keys()) assert.ok(Object.hasOwn(ERROR_CODES, code), `docs/errors.md lists unknown code ${code}`);
  });

  it('has no table row the parser skipped', () => {
    const tableRows = doc.split('\n').filter((l) => l.startsWith('| `'));
    assert.equal(tableRows.length, rows.size);
  });

  it('never reuses a retired code, and lists every retired code', () => {
    const retired = doc.slice(doc.indexOf('## Retired codes'));
    for (const code of RETIRED_CODES) {
      assert.ok(!Object.hasOwn(ERROR_CODES, code), `retired code ${code} is in use again`);
      assert.ok(retired.includes(`\`${code}\``), `retired code ${code} is not listed`);
    }
  });
});

describe('TesseraError', () => {
  it('carries the catalogue status, RFC error and fixed description for every code', () => {
    for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) {
      const e = new TesseraError(code, { claim: 'aud', issuer: 'https://issuer.test' });
      const spec = ERROR_CODES[code];
      assert.equal(e.code, code);
      assert.equal(e.status, spec.status);
      assert.equal(e.error, spec.error);
      assert.equal(e.message, spec.description);
      assert.deepEqual(e.toJSON(), { error: spec.error ?? 'unauthorized', error_description: spec.description });
      assert.equal(JSON.stringify(e), JSON.stringify(e.toJSON()));
      assert.ok(e instanceof Error);
    }
  });

  it('maps each RFC error to the status RFC 6750 §3.1 and RFC 9449 §7.1 give it', () => {
    const statusOf: Record<string, number> = {
      invalid_request: 400,
      invalid_token: 401,
      insufficient_scope: 403,
      invalid_dpop_proof: 401,
      use_dpop_nonce: 401,
    };
    for (const [code, spec] of Object.entries(ERROR_CODES)) {
      if (spec.error !== null && spec.error in statusOf) assert.equal(spec.status, statusOf[spec.error], code);
    }
  });
});
