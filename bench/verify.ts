/**
 * `npm run bench:verify`: JWT verification throughput, Tessera beside its baselines, in one
 * process and one run.
 *
 * For each of ES256, EdDSA and RS256, on the same tokens:
 * - raw: `node:crypto` `verify` of the signing input in its fastest call shape (bare `KeyObject`,
 *   DER signature for ECDSA, inputs decoded before timing) — the limit;
 * - jose `jwtVerify` (issuer, audience, algorithms, typ, required claims);
 * - fast-jwt `createVerifier` (issuer, audience, algorithms, required claims; no cache);
 * - Tessera `verify(request)` cold: every token distinct, full claim checks, the result cache on
 *   and missing (a JWT is cached from its second presentation, and the pool of tokens is large
 *   enough that the cache's doorkeeper has forgotten a token before it comes round again);
 * - Tessera `verify(request)` warm: one token repeated (a cache hit).
 *
 * The machine is shared and noisy, so measurements are short and interleaved: each round runs every
 * contestant of one algorithm once (about BENCH_MS each, in rotating order), and rounds repeat. The
 * table shows the median rate of each contestant and, as "% of raw", the median over rounds of its
 * rate divided by raw's rate in the same round (neighbours in time share the machine's load).
 * The last line is one JSON object for scripts (median rates).
 *
 * Environment: BENCH_ROUNDS (default 25), BENCH_MS (target milliseconds per measurement, default
 * 40), BENCH_POOL (distinct tokens per algorithm, default 8192), BENCH_ONLY (comma-separated
 * contestants to run besides raw) and BENCH_ALGS (comma-separated algorithms), for development.
 */
import { Buffer } from 'node:buffer';
import { sign as cryptoSign, verify as cryptoVerify, generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import os from 'node:os';
import { createVerifier as createFastJwtVerifier } from 'fast-jwt';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { createVerifier } from '../src/verifier.ts';

type Alg = 'ES256' | 'EdDSA' | 'RS256';
const ALGS: readonly Alg[] = (process.env.BENCH_ALGS?.split(',') as Alg[] | undefined) ?? ['ES256', 'EdDSA', 'RS256'];
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 25);
const TARGET_MS = Number(process.env.BENCH_MS ?? 40);
const POOL = Number(process.env.BENCH_POOL ?? 8192);
const ISSUER = 'https://issuer.bench.test';
const AUDIENCE = 'https://api.bench.test';
const NOW = Math.floor(Date.now() / 1000);

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

/** Signature of a compact JWS in the shape `crypto.verify` checks fastest (DER for ECDSA). */
function p1363ToDer(sig: Buffer): Buffer {
  const int = (b: Buffer) => {
    let i = 0;
    while (i < b.length - 1 && b[i] === 0) i++;
    const v = b.subarray(i);
    return (v[0] as number) & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v;
  };
  const r = int(sig.subarray(0, 32));
  const s = int(sig.subarray(32));
  const body = Buffer.concat([Buffer.from([2, r.length]), r, Buffer.from([2, s.length]), s]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body]);
}

interface Fixture {
  readonly alg: Alg;
  readonly publicKey: KeyObject;
  readonly jwk: Record<string, unknown>;
  readonly pem: string;
  readonly tokens: string[];
  /** Decoded for the raw baseline. */
  readonly inputs: Buffer[];
  readonly signatures: Buffer[];
}

function fixture(alg: Alg): Fixture {
  const pair =
    alg === 'ES256'
      ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : alg === 'EdDSA'
        ? generateKeyPairSync('ed25519')
        : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = `${alg.toLowerCase()}-bench`;
  const header = b64({ alg, kid, typ: 'at+jwt' });
  const tokens: string[] = [];
  const inputs: Buffer[] = [];
  const signatures: Buffer[] = [];
  for (let i = 0; i < POOL; i++) {
    // A typical RFC 9068 access token from Tessera's token service.
    const payload = b64({
      iss: ISSUER,
      sub: `user-${i % 97}`,
      aud: AUDIENCE,
      exp: NOW + 3600,
      iat: NOW,
      jti: randomBytes(12).toString('base64url'),
      client_id: 'agent-7',
      scope: 'api:read api:write',
      grant_id: `g-${i % 13}`,
    });
    const input = `${header}.${payload}`;
    const raw = cryptoSign(alg === 'EdDSA' ? null : 'sha256', Buffer.from(input), {
      key: pair.privateKey,
      ...(alg === 'ES256' ? { dsaEncoding: 'ieee-p1363' as const } : {}),
    });
    tokens.push(`${input}.${raw.toString('base64url')}`);
    inputs.push(Buffer.from(input));
    signatures.push(alg === 'ES256' ? p1363ToDer(raw) : raw);
  }
  const { publicKey } = pair;
  return {
    alg,
    publicKey,
    jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' },
    pem: publicKey.export({ format: 'pem', type: 'spki' }) as string,
    tokens,
    inputs,
    signatures,
  };
}

/** One contestant: `run(n)` performs n verifications and must leave every one accepted. */
interface Contestant {
  readonly name: string;
  run(n: number): Promise<void> | void;
}

function contestants(f: Fixture): Contestant[] {
  const { alg, tokens, inputs, signatures, publicKey } = f;
  const digest = alg === 'EdDSA' ? null : 'sha256';
  let ri = 0;
  const raw: Contestant = {
    name: 'raw',
    run(n) {
      for (let k = 0; k < n; k++) {
        const i = ri++ % POOL;
        if (!cryptoVerify(digest, inputs[i] as Buffer, publicKey, signatures[i] as Buffer)) throw new Error('raw: rejected');
      }
    },
  };

  const jwks = createLocalJWKSet({ keys: [f.jwk as never] });
  const joseOptions = { issuer: ISSUER, audience: AUDIENCE, algorithms: [alg], typ: 'at+jwt', requiredClaims: ['exp', 'iat'] };
  let ji = 0;
  const jose: Contestant = {
    name: 'jose',
    async run(n) {
      for (let k = 0; k < n; k++) await jwtVerify(tokens[ji++ % POOL] as string, jwks, joseOptions);
    },
  };

  const fast = createFastJwtVerifier({
    key: f.pem,
    algorithms: [alg === 'EdDSA' ? 'EdDSA' : alg],
    allowedIss: ISSUER,
    allowedAud: AUDIENCE,
    requiredClaims: ['exp', 'iat'],
    checkTyp: 'at+jwt',
    cache: false,
  });
  let fi = 0;
  const fastjwt: Contestant = {
    name: 'fastjwt',
    run(n) {
      for (let k = 0; k < n; k++) fast(tokens[fi++ % POOL] as string);
    },
  };

  const config = (cacheEntries: number) => ({
    issuers: [
      {
        issuer: ISSUER,
        audiences: [AUDIENCE],
        algorithms: [alg],
        jwks: { keys: [f.jwk] },
        token_type: 'at+jwt',
        required_claims: ['iat', 'sub', 'jti'],
      },
    ],
    scopes: { 'api:read': {}, 'api:write': { implies: ['api:read'] } },
    dpop: { mode: 'disabled' as const },
    cache: { max_entries: cacheEntries },
  });
  // The cold verifier's cache is small, so its doorkeeper (1024 fingerprints) has overwritten a
  // token's fingerprint (all but e^-8 of them) by the time the pool comes round to it again: every
  // presentation is a first one, paying the cache lookup and the admission check.
  const coldVerifier = createVerifier(config(64));
  // Header values as node:http delivers them: flat one-byte strings (a template literal would be a
  // rope that the first string operation flattens).
  const flat = (v: string) => Buffer.from(v, 'latin1').toString('latin1');
  const coldRequests = tokens.map((t) => ({ method: 'GET', url: '/items/1', headers: { authorization: flat(`Bearer ${t}`) } }));
  let ci = 0;
  const cold: Contestant = {
    name: 'tessera_cold',
    async run(n) {
      for (let k = 0; k < n; k++) {
        const r = await coldVerifier.verify(coldRequests[ci++ % POOL] as (typeof coldRequests)[number]);
        if (!r.ok) throw new Error(`tessera cold: ${r.error.code}`);
      }
      const { cacheHits, cacheMisses } = coldVerifier.stats;
      if (cacheHits > cacheMisses / 1000) throw new Error(`tessera cold: ${cacheHits} cache hits in ${cacheHits + cacheMisses}`);
    },
  };

  const warmVerifier = createVerifier(config(10_000));
  const warmRequest = coldRequests[0] as (typeof coldRequests)[number];
  const warm: Contestant = {
    name: 'tessera_warm',
    async run(n) {
      for (let k = 0; k < n; k++) {
        const r = await warmVerifier.verify(warmRequest);
        if (!r.ok) throw new Error(`tessera warm: ${r.error.code}`);
      }
    },
  };
  // BENCH_ONLY=raw,tessera_cold (for instance) runs a subset; the JSON then reports 0 for the rest.
  const only = process.env.BENCH_ONLY?.split(',');
  return [raw, jose, fastjwt, cold, warm].filter((c) => c.name === 'raw' || only === undefined || only.includes(c.name));
}

async function measure(c: Contestant, n: number): Promise<number> {
  const start = process.hrtime.bigint();
  await c.run(n);
  const ns = Number(process.hrtime.bigint() - start);
  return (n * 1e9) / ns;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

async function main(): Promise<void> {
  const t0 = Date.now();
  const fixtures = ALGS.map(fixture);
  process.stderr.write(`fixtures: ${POOL} tokens per algorithm in ${Date.now() - t0} ms\n`);
  const all = fixtures.map((f) => ({ alg: f.alg, list: contestants(f) }));
  const samples = new Map<string, number[]>();
  const batch = new Map<string, number>();

  // Warm-up and calibration: batch sizes that take about TARGET_MS each.
  for (const { alg, list } of all) {
    for (const c of list) {
      await measure(c, 200);
      const rate = await measure(c, 500);
      batch.set(`${alg}/${c.name}`, Math.max(200, Math.round((rate * TARGET_MS) / 1000)));
    }
  }
  for (let round = 0; round < ROUNDS; round++) {
    for (const { alg, list } of all) {
      // Rotate the order so no contestant always runs first (or after the same neighbour).
      for (let j = 0; j < list.length; j++) {
        const c = list[(j + round) % list.length] as Contestant;
        const key = `${alg}/${c.name}`;
        const ops = await measure(c, batch.get(key) as number);
        samples.set(key, [...(samples.get(key) ?? []), ops]);
      }
    }
    process.stderr.write(`round ${round + 1}/${ROUNDS}\n`);
  }

  const med = (alg: Alg, name: string) => median(samples.get(`${alg}/${name}`) ?? [0]);
  /** Median over rounds of a contestant's rate relative to raw's in the same round. */
  const ratio = (alg: Alg, name: string) => {
    const raw = samples.get(`${alg}/raw`) ?? [];
    return median((samples.get(`${alg}/${name}`) ?? []).map((ops, i) => ops / (raw[i] as number)));
  };
  const results = ALGS.map((alg) => ({
    alg,
    raw_ops: Math.round(med(alg, 'raw')),
    tessera_cold_ops: Math.round(med(alg, 'tessera_cold')),
    tessera_warm_ops: Math.round(med(alg, 'tessera_warm')),
    jose_ops: Math.round(med(alg, 'jose')),
    fastjwt_ops: Math.round(med(alg, 'fastjwt')),
  }));

  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  console.log(`verify benchmark: Node ${process.version}, ${cpu}, ${os.cpus().length} cores; medians of ${ROUNDS} interleaved rounds`);
  console.log('');
  const cols = ['raw node:crypto', 'tessera cold', 'tessera warm', 'jose', 'fast-jwt'];
  const names = ['raw', 'tessera_cold', 'tessera_warm', 'jose', 'fastjwt'];
  const fields = ['raw_ops', 'tessera_cold_ops', 'tessera_warm_ops', 'jose_ops', 'fastjwt_ops'] as const;
  console.log(`| alg   | ${cols.map((c) => c.padStart(22)).join(' | ')} |`);
  console.log(`|-------|${cols.map(() => `${'-'.repeat(23)}:`).join('|')}|`);
  for (const r of results) {
    const cells = fields.map((f, i) => {
      const x = 100 * ratio(r.alg, names[i] as string);
      const pct = `${x.toFixed(f === 'tessera_warm_ops' ? 0 : 1)}%`;
      return `${r[f].toLocaleString('en-US')}/s ${pct.padStart(7)}`.padStart(22);
    });
    console.log(`| ${r.alg.padEnd(5)} | ${cells.join(' | ')} |`);
  }
  console.log('');
  for (const r of results) {
    const us = (ops: number) => 1e6 / ops;
    // Overhead per verify from the same-round ratio: raw time × (1/ratio − 1).
    const overhead = us(r.raw_ops) * (1 / ratio(r.alg, 'tessera_cold') - 1);
    console.log(
      `${r.alg}: cold overhead ${overhead.toFixed(2)} µs/verify over raw's ${us(r.raw_ops).toFixed(1)} µs; warm ${us(r.tessera_warm_ops).toFixed(2)} µs/verify (${ratio(r.alg, 'tessera_warm').toFixed(1)}× raw)`,
    );
  }
  console.log(JSON.stringify({ bench: 'verify', results }));
}

await main();
