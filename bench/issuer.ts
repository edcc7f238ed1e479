/**
 * `npm run bench:issuer`: the token endpoint over HTTP on loopback, Tessera beside
 * node-oidc-provider (client_credentials, RFC 9068 JWT access tokens, ES256, client_secret_basic),
 * in one run with the same load generator (autocannon in this process, or wrk with BENCH_LOADGEN=wrk),
 * each server alone in its own child process whose CPU time is read from inside (process.cpuUsage).
 * Also measures one raw ES256 signature (`crypto.sign` over the same claims) as the unit of cost.
 *
 * Prints tokens/s and server CPU µs per token, the ratios against the goals, and as its last line
 * `{"bench":"issuer","results":[{"system","grant","ops","cpu_us_per_token"}],"raw_sign_us":N}`.
 *
 * Each figure is the median of BENCH_REPEAT runs (default 3) of BENCH_DURATION seconds (default 5)
 * with BENCH_CONNECTIONS connections (default 8). A last row, the node:http floor, answers a canned
 * response of the same size at Tessera's client_credentials rate: what HTTP alone costs there.
 */
import { type ChildProcess, execFileSync, fork } from 'node:child_process';
import { generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import autocannon from 'autocannon';

const DURATION = Number(process.env.BENCH_DURATION ?? 5);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 8);
const REPEAT = Number(process.env.BENCH_REPEAT ?? 3);
const WARMUP = 2;
const LOADGEN = process.env.BENCH_LOADGEN ?? 'autocannon';
const WRK = '/usr/bin/wrk';
const LUA = new URL('./issuer-post.lua', import.meta.url).pathname;
if (LOADGEN !== 'autocannon' && LOADGEN !== 'wrk')
  throw new Error(`BENCH_LOADGEN: write autocannon or wrk, not ${JSON.stringify(LOADGEN)}`);
if (LOADGEN === 'wrk' && !existsSync(WRK)) throw new Error(`BENCH_LOADGEN=wrk needs ${WRK} (apt-get install wrk)`);

interface Child {
  readonly process: ChildProcess;
  readonly info: Record<string, string>;
  cpu(): Promise<number>;
  stop(): Promise<Record<string, unknown>>;
}

async function start(file: string, env: Record<string, string> = {}): Promise<Child> {
  const child = fork(new URL(file, import.meta.url).pathname, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const info = await new Promise<Record<string, string>>((resolve, reject) => {
    child.once('message', (m) => resolve(m as Record<string, string>));
    child.once('exit', (code) => reject(new Error(`${file} exited (${code})`)));
  });
  const ask = <T>(msg: string, key: string) =>
    new Promise<T>((resolve) => {
      const on = (m: unknown) => {
        if (typeof m === 'object' && m !== null && key in m) {
          child.off('message', on);
          resolve(m as T);
        }
      };
      child.on('message', on);
      child.send(msg);
    });
  return {
    process: child,
    info,
    cpu: async () => (await ask<{ cpu: number }>('cpu', 'cpu')).cpu,
    stop: async () => {
      const done = new Promise((resolve) => child.once('exit', resolve));
      const answer = ask<Record<string, unknown>>('stop', 'stopped').catch(() => ({}));
      const result = await Promise.race([answer, done.then(() => ({}))]);
      await done;
      return result as Record<string, unknown>;
    },
  };
}

interface Measured {
  readonly system: string;
  readonly grant: string;
  readonly ops: number;
  readonly cpu_us_per_token: number;
  readonly failed: number;
}

async function measureOnce(
  system: string,
  grant: string,
  child: Child,
  headers: Record<string, string>,
  body: string,
  rate?: number,
): Promise<Measured> {
  const options = {
    ...(rate !== undefined ? { overallRate: rate } : {}),
    url: `${child.info.url}${child.info.token_path}`,
    method: 'POST' as const,
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body,
    connections: CONNECTIONS,
  };
  if (LOADGEN === 'wrk') return measureWithWrk(system, grant, child, options.url, headers, body, rate);
  await autocannon({ ...options, duration: WARMUP });
  const cpu0 = await child.cpu();
  const t0 = performance.now();
  const r = await autocannon({ ...options, duration: DURATION });
  const seconds = (performance.now() - t0) / 1000;
  const cpu1 = await child.cpu();
  const ok = r['2xx'];
  // CPU of the measured window divided by the tokens issued in it (the `cpu` round trips are noise).
  return {
    system,
    grant,
    ops: Math.round(ok / seconds),
    cpu_us_per_token: Math.round(((cpu1 - cpu0) / Math.max(1, ok)) * 10) / 10,
    failed: r.non2xx + r.errors,
  };
}

/** The same measurement driven by wrk (one thread, a C load generator) instead of autocannon. */
async function measureWithWrk(
  system: string,
  grant: string,
  child: Child,
  url: string,
  headers: Record<string, string>,
  body: string,
  rate?: number,
): Promise<Measured> {
  const env = { ...process.env, WRK_BODY: body, WRK_AUTH: headers.authorization ?? '', WRK_RATE: String(rate ?? 0) };
  const run = (seconds: number) => execFileSync(WRK, ['-t1', `-c${CONNECTIONS}`, `-d${seconds}s`, '-s', LUA, url], { env }).toString();
  run(WARMUP);
  const cpu0 = await child.cpu();
  const out = run(DURATION);
  const cpu1 = await child.cpu();
  const done = /(\d+) requests in ([\d.]+)(ms|s|m)/.exec(out);
  if (!done) throw new Error(`wrk printed no request count:\n${out}`);
  const requests = Number(done[1]);
  const seconds = Number(done[2]) * (done[3] === 'ms' ? 1e-3 : done[3] === 'm' ? 60 : 1);
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const ok = requests - non2xx;
  return {
    system,
    grant,
    ops: Math.round(ok / seconds),
    cpu_us_per_token: Math.round(((cpu1 - cpu0) / Math.max(1, ok)) * 10) / 10,
    failed: non2xx + (sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0),
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

/** CPU µs of one `crypto.sign` (ES256, DER) over a header and claims like the ones Tessera issues. */
function rawSign(): number {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Math.floor(Date.now() / 1000);
  const header = Buffer.from(JSON.stringify({ alg: 'ES256', kid: 'x'.repeat(43), typ: 'at+jwt' })).toString('base64url');
  const claims = {
    iss: 'http://127.0.0.1:8080',
    sub: 'bench',
    aud: 'https://api.test',
    exp: now + 600,
    iat: now,
    jti: randomUUID(),
    client_id: 'bench',
    scope: 'api:read api:write',
    grant_id: `g_${randomUUID()}`,
  };
  const input = Buffer.from(`${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`);
  for (let i = 0; i < 2000; i++) sign('sha256', input, privateKey);
  const n = 20_000;
  const c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) sign('sha256', input, privateKey);
  const c = process.cpuUsage(c0);
  return Math.round(((c.user + c.system) / n) * 10) / 10;
}

const basicAuth = (id: string, secret: string) => `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`;

process.stdout.write(
  `bench:issuer  node ${process.version}, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), ${LOADGEN}, ${CONNECTIONS} connections, median of ${REPEAT} × ${DURATION}s\n\n`,
);

// All servers run side by side (idle ones cost nothing) and every repetition measures each in
// turn, so load from elsewhere on the machine falls on all of them alike; each figure is a median.
const secret = `tcs_${Buffer.from(randomUUID()).toString('base64url')}`;
const oidc = await start('./issuer-oidc-provider.ts', { BENCH_SECRET: secret });
const tessera = await start('./issuer-tessera.ts');
const floor = await start('./issuer-floor.ts');
const runs: Record<string, Measured[]> = {};
const signs: number[] = [];
const keep = (m: Measured) => (runs[`${m.system}\n${m.grant}`] ??= []).push(m);
let grantsWritten: unknown;
try {
  const tauth = { authorization: basicAuth('bench', tessera.info.secret as string) };
  for (let i = 0; i < REPEAT; i++) {
    signs.push(rawSign());
    keep(
      await measureOnce(
        'node-oidc-provider',
        'client_credentials',
        oidc,
        { authorization: basicAuth('bench', secret) },
        'grant_type=client_credentials&scope=api%3Aread&resource=https%3A%2F%2Fapi.test',
      ),
    );
    const cc = await measureOnce('tessera', 'client_credentials', tessera, tauth, 'grant_type=client_credentials&scope=api%3Aread');
    keep(cc);
    keep(await measureOnce('tessera', 'token_exchange', tessera, tauth, tessera.info.exchange_body as string));
    keep(
      await measureOnce(
        'node:http floor',
        'canned response',
        floor,
        { authorization: basicAuth('bench', 'x') },
        'grant_type=client_credentials',
        cc.ops,
      ),
    );
  }
} finally {
  await oidc.stop();
  grantsWritten = (await tessera.stop()).exchange_grants_written;
  await floor.stop();
}
const rawSignUs = median(signs);
const results: Measured[] = Object.values(runs).map((list) => ({
  system: (list[0] as Measured).system,
  grant: (list[0] as Measured).grant,
  ops: median(list.map((r) => r.ops)),
  cpu_us_per_token: median(list.map((r) => r.cpu_us_per_token)),
  failed: list.reduce((a, r) => a + r.failed, 0),
}));

const rows = [['system', 'grant', 'tokens/s', 'cpu µs/token', '× raw sign', 'failed']];
for (const r of results) {
  rows.push([
    r.system,
    r.grant,
    String(r.ops),
    r.cpu_us_per_token.toFixed(1),
    (r.cpu_us_per_token / rawSignUs).toFixed(2),
    String(r.failed),
  ]);
}
const widths = rows[0]?.map((_, i) => Math.max(...rows.map((row) => (row[i] ?? '').length))) ?? [];
for (const row of rows) process.stdout.write(`${row.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ')}\n`);

const find = (system: string, grant: string) => results.find((r) => r.system === system && r.grant === grant) as Measured;
const tcc = find('tessera', 'client_credentials');
const tex = find('tessera', 'token_exchange');
const occ = find('node-oidc-provider', 'client_credentials');
const floorRow = find('node:http floor', 'canned response');
const ratio = (a: number, b: number) => (a / b).toFixed(2);
process.stdout.write(
  [
    '',
    `raw ES256 signature (crypto.sign, DER): ${rawSignUs} µs CPU`,
    `token exchange grants written: ${String(grantsWritten ?? '?')}`,
    '',
    `tessera / node-oidc-provider client_credentials throughput: ${ratio(tcc.ops, occ.ops)}×   (goal ≥ 2)`,
    `tessera client_credentials CPU per token: ${ratio(tcc.cpu_us_per_token, rawSignUs)}× raw sign   (goal ≤ 3)`,
    `tessera token exchange CPU per token:     ${ratio(tex.cpu_us_per_token, rawSignUs)}× raw sign   (goal ≤ 5)`,
    `above the node:http floor at the same rate: client_credentials ${(tcc.cpu_us_per_token - floorRow.cpu_us_per_token).toFixed(1)} µs (${ratio(tcc.cpu_us_per_token - floorRow.cpu_us_per_token, rawSignUs)}× raw sign), token exchange ${(tex.cpu_us_per_token - floorRow.cpu_us_per_token).toFixed(1)} µs (${ratio(tex.cpu_us_per_token - floorRow.cpu_us_per_token, rawSignUs)}× raw sign)`,
    '',
  ].join('\n'),
);
process.stdout.write(
  `${JSON.stringify({
    bench: 'issuer',
    results: results
      .filter((r) => r.system !== 'node:http floor')
      .map(({ system, grant, ops, cpu_us_per_token }) => ({ system, grant, ops, cpu_us_per_token })),
    http_floor_cpu_us: floorRow.cpu_us_per_token,
    raw_sign_us: rawSignUs,
  })}\n`,
);
