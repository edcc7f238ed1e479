/**
 * `npm run bench:gateway`: every competitor in front of the same upstream, driven by the same load
 * generator (wrk) in one run, repeated and summarized by medians.
 *
 *   direct               wrk → upstream
 *   baseline             bare node:http + undici proxy, no auth, fast-proxy style (the reference)
 *   baseline-dispatch    the same on undici's raw dispatch handler, as Tessera forwards (the floor)
 *   tessera-warm         Tessera: JWT (ES256) + scope rule + audit to a file + metrics, one token
 *   tessera-cold         same, every request a distinct pre-generated token
 *   express              Express + express-oauth2-jwt-bearer + http-proxy-middleware
 *   fastify              Fastify + @fastify/jwt + @fastify/http-proxy
 *   nginx                nginx alone (1 worker)
 *   nginx+forward-auth   nginx (1 worker) + auth_request to Tessera's forward-auth (warm), the
 *                        shipped examples/nginx/nginx.conf
 *   nginx+fa-cached      the same with the example's optional decision cache on (cache_ttl 5s)
 *   nginx+null-auth      the same nginx config with auth_request to a server that does no work
 *                        (null-auth.ts): the ceiling any forward-auth server can reach here
 *
 * Server CPU per request comes from /proc/PID/stat (utime+stime of the server processes, workers
 * included) before and after each measured run. The machine is shared: compare ratios within a
 * run. Environment: BENCH_DURATION (s, default 10), BENCH_REPS (3), BENCH_CONNECTIONS (64),
 * BENCH_ONLY (comma-separated system names), BENCH_TESSERA_NODE_FLAGS (extra node flags for the
 * Tessera server only, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`; node refuses those in NODE_OPTIONS).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  createPrivateKey,
  createPublicKey,
  sign as cryptoSign,
  verify as cryptoVerify,
  generateKeyPairSync,
  randomUUID,
} from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT } from 'jose';

const HERE = new URL('.', import.meta.url).pathname;
const ROOT = new URL('../../', import.meta.url).pathname;
const DURATION = Number(process.env.BENCH_DURATION ?? 10);
const REPS = Number(process.env.BENCH_REPS ?? 3);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 64);
const ONLY = process.env.BENCH_ONLY?.split(',').map((s) => s.trim());
const NGINX = '/usr/sbin/nginx';
const WRK = '/usr/bin/wrk';
const ISSUER = 'https://issuer.bench';
const AUDIENCE = 'https://api.bench';
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-'));
const children: ChildProcess[] = [];
const log = (s: string) => process.stderr.write(`${s}\n`);

async function stopAll(): Promise<void> {
  await Promise.all(
    children.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          const t = setTimeout(() => {
            c.kill('SIGKILL');
            resolve();
          }, 3000);
          c.once('exit', () => {
            clearTimeout(t);
            resolve();
          });
          c.kill('SIGTERM');
        }),
    ),
  );
  rmSync(dir, { recursive: true, force: true });
}
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});
process.on('SIGINT', () => process.exit(130));

// ---- keys and tokens ----
const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = { ...publicKey.export({ format: 'jwk' }), kid: 'bench-1', alg: 'ES256', use: 'sig' };
const JWKS = JSON.stringify({ keys: [jwk] });

async function mint(): Promise<string> {
  return new SignJWT({ scope: 'api:read', client_id: 'bench-agent' })
    .setProtectedHeader({ alg: 'ES256', kid: 'bench-1', typ: 'at+jwt' })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setSubject(`user-${randomUUID()}`)
    .setJti(randomUUID())
    .setIssuedAt()
    .setExpirationTime('2h')
    .sign(privateKey);
}

/** One raw ES256 signature verification (node:crypto, the primitive under every JWT library). */
function rawVerifyMicros(): number {
  const data = Buffer.from('eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEiLCJzY29wZSI6ImFwaTpyZWFkIn0');
  const key = createPublicKey(publicKey.export({ type: 'spki', format: 'pem' }));
  const sig = cryptoSign('sha256', data, {
    key: createPrivateKey(privateKey.export({ type: 'pkcs8', format: 'pem' })),
    dsaEncoding: 'ieee-p1363',
  });
  const run = (n: number) => {
    const t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) cryptoVerify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, sig);
    return Number(process.hrtime.bigint() - t) / 1000 / n;
  };
  run(500);
  const samples = [run(3000), run(3000), run(3000)].sort((a, b) => a - b);
  return samples[1] as number;
}

// ---- processes ----
async function startNode(file: string, env: Record<string, string>): Promise<{ port: number; pid: number }> {
  const flags = file === 'tessera.ts' ? (process.env.BENCH_TESSERA_NODE_FLAGS ?? '').split(' ').filter(Boolean) : [];
  const child = spawn(process.execPath, [...flags, join(HERE, file)], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    // The child's first line naming its port; log lines before it (a config warning) are skipped.
    child.stdout?.on('data', (d) => {
      out += d.toString();
      const lines = out.split('\n');
      for (const line of lines.slice(0, -1)) {
        let port: unknown;
        try {
          port = (JSON.parse(line) as { port?: unknown }).port;
        } catch (e) {
          reject(e);
          return;
        }
        if (typeof port === 'number') {
          resolve({ port, pid: child.pid as number });
          return;
        }
      }
    });
    child.once('exit', (code) => reject(new Error(`${file} exited with ${code}`)));
    child.unref();
  });
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as { port: number };
  await new Promise((r) => s.close(r));
  return port;
}

async function startNginx(name: string, conf: string): Promise<{ port: number; pid: number }> {
  const d = join(dir, name);
  mkdirSync(d, { recursive: true });
  const port = await freePort();
  writeFileSync(join(d, 'nginx.conf'), conf.replace(/listen 127\.0\.0\.1:8000;/, `listen 127.0.0.1:${port};`));
  const child = spawn(NGINX, ['-p', d, '-c', join(d, 'nginx.conf'), '-e', 'stderr', '-g', 'daemon off;'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  children.push(child);
  const end = Date.now() + 5000;
  while (Date.now() < end) {
    if (
      await fetch(`http://127.0.0.1:${port}/`).then(
        () => true,
        () => false,
      )
    )
      return { port, pid: child.pid as number };
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nginx (${name}) did not start`);
}

/** A process and its descendants (nginx workers). */
function processTree(pid: number): number[] {
  const out = [pid];
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const kids = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
      if (kids) for (const k of kids.split(/\s+/)) out.push(...processTree(Number(k)));
    }
  } catch {
    // process gone
  }
  return out;
}

function cpuTicks(pids: readonly number[]): number {
  let total = 0;
  for (const root of pids) {
    for (const pid of processTree(root)) {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        total += Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15)
      } catch {
        // exited
      }
    }
  }
  return total;
}

// ---- load ----
interface Sample {
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  errors: number;
  cpuUsPerReq: number;
  wrapped: number;
}

function ms(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v.trim());
  if (!m) return Number.NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : n * 60_000;
}

let coldOffset = 0;

function wrk(url: string, seconds: number, token: string | undefined, cold: boolean): Omit<Sample, 'cpuUsPerReq'> {
  const args = ['-t1', `-c${CONNECTIONS}`, `-d${seconds}s`, '--latency', '--timeout', '5s'];
  const env: Record<string, string> = { ...(process.env as Record<string, string>) };
  if (cold) {
    args.push('-s', join(HERE, 'tokens.lua'));
    env.TOKENS_FILE = join(dir, 'tokens.txt');
    env.WRK_THREADS = '1';
    env.TOKENS_OFFSET = String(coldOffset);
  } else if (token) args.push('-H', `Authorization: Bearer ${token}`);
  args.push(url);
  const out = execFileSync(WRK, args, { env, maxBuffer: 16 * 1024 * 1024 }).toString();
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  const p50 = ms(/\s50%\s+(\S+)/.exec(out)?.[1] ?? '');
  const p99 = ms(/\s99%\s+(\S+)/.exec(out)?.[1] ?? '');
  const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = non2xx + (sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
  const wrapped = Number(/WRAPPED (\d+)/.exec(out)?.[1] ?? 0);
  if (cold) coldOffset += requests;
  return { rps, p50, p99, requests, errors, wrapped };
}

interface System {
  readonly name: string;
  readonly url: string;
  readonly pids: number[];
  readonly token?: string;
  readonly cold?: boolean;
}

function measure(s: System, seconds: number): Sample {
  const before = cpuTicks(s.pids);
  const r = wrk(s.url, seconds, s.token, s.cold === true);
  const after = cpuTicks(s.pids);
  return { ...r, cpuUsPerReq: ((after - before) * (1e6 / CLK_TCK)) / Math.max(1, r.requests) };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

// ---- main ----
async function main(): Promise<void> {
  if (!existsSync(WRK)) throw new Error(`${WRK} is required (apt-get install wrk)`);
  const warmToken = await mint();
  // Every cold request must miss the verifier's result cache (10 000 entries, oldest evicted
  // first): tokens are used in order across runs, so any count well above the cache size works;
  // a token comes round again only after 60 000 others.
  const coldCount = Number(process.env.BENCH_COLD_TOKENS ?? 60_000);
  log(`minting ${coldCount} distinct tokens for the cold run…`);
  const cold: string[] = [];
  for (let i = 0; i < coldCount; i++) cold.push(await mint());
  writeFileSync(join(dir, 'tokens.txt'), `${cold.join('\n')}\n`);

  const env = { BENCH_ISSUER: ISSUER, BENCH_AUDIENCE: AUDIENCE, BENCH_JWKS: JWKS, BENCH_DIR: dir };
  const up = await startNode('upstream.ts', env);
  const upstream = `http://127.0.0.1:${up.port}`;
  const withUp = { ...env, BENCH_UPSTREAM: upstream };
  const want = (n: string) => !ONLY || ONLY.includes(n);
  const systems: System[] = [];
  if (want('direct')) systems.push({ name: 'direct', url: `${upstream}/items`, pids: [up.pid] });
  if (want('baseline')) {
    const p = await startNode('baseline.ts', withUp);
    systems.push({ name: 'baseline', url: `http://127.0.0.1:${p.port}/items`, pids: [p.pid] });
  }
  if (want('baseline-dispatch')) {
    const p = await startNode('baseline-dispatch.ts', withUp);
    systems.push({ name: 'baseline-dispatch', url: `http://127.0.0.1:${p.port}/items`, pids: [p.pid] });
  }
  if (want('tessera-warm') || want('tessera-cold')) {
    const p = await startNode('tessera.ts', withUp);
    if (want('tessera-warm'))
      systems.push({ name: 'tessera-warm', url: `http://127.0.0.1:${p.port}/items`, pids: [p.pid], token: warmToken });
    if (want('tessera-cold')) systems.push({ name: 'tessera-cold', url: `http://127.0.0.1:${p.port}/items`, pids: [p.pid], cold: true });
  }
  if (want('express')) {
    const p = await startNode('express.ts', withUp);
    systems.push({ name: 'express', url: `http://127.0.0.1:${p.port}/items`, pids: [p.pid], token: warmToken });
  }
  if (want('fastify')) {
    const p = await startNode('fastify.ts', withUp);
    systems.push({ name: 'fastify', url: `http://127.0.0.1:${p.port}/items`, pids: [p.pid], token: warmToken });
  }
  const nginxAvailable = existsSync(NGINX);
  if (!nginxAvailable && (want('nginx') || want('nginx+forward-auth'))) log(`${NGINX} not found: skipping the nginx systems`);
  if (nginxAvailable && want('nginx')) {
    const conf = readFileSync(join(HERE, 'nginx-alone.conf'), 'utf8').replace('server 127.0.0.1:9000;', `server 127.0.0.1:${up.port};`);
    const n = await startNginx('nginx', conf);
    systems.push({ name: 'nginx', url: `http://127.0.0.1:${n.port}/items`, pids: [n.pid], token: warmToken });
  }
  const exampleConf = (tesseraPort: number, cached: boolean) => {
    let conf = readFileSync(join(ROOT, 'examples/nginx/nginx.conf'), 'utf8')
      .replace('worker_processes auto;', `worker_processes 1;${cached && process.getuid?.() === 0 ? '\nuser root;' : ''}`)
      .replace('server 127.0.0.1:8080;', `server 127.0.0.1:${tesseraPort};`)
      .replace('server 127.0.0.1:9000;', `server 127.0.0.1:${up.port};`)
      // The shared secret of bench/gateway/tessera.ts.
      .replace('@FORWARD_AUTH_SECRET@', 'bench-forward-auth-secret-0123456789');
    if (cached) conf = conf.replace(/^(\s*)#cache /gm, '$1');
    return conf;
  };
  if (nginxAvailable && want('nginx+forward-auth')) {
    const fa = await startNode('tessera.ts', withUp);
    const n = await startNginx('nginx-fa', exampleConf(fa.port, false));
    systems.push({ name: 'nginx+forward-auth', url: `http://127.0.0.1:${n.port}/items`, pids: [n.pid, fa.pid], token: warmToken });
  }
  if (nginxAvailable && want('nginx+null-auth')) {
    const na = await startNode('null-auth.ts', {});
    const n = await startNginx('nginx-null-auth', exampleConf(na.port, false));
    systems.push({ name: 'nginx+null-auth', url: `http://127.0.0.1:${n.port}/items`, pids: [n.pid, na.pid], token: warmToken });
  }
  if (nginxAvailable && want('nginx+fa-cached')) {
    const fa = await startNode('tessera.ts', { ...withUp, BENCH_FA_CACHE_TTL: '5' });
    const n = await startNginx('nginx-fa-cached', exampleConf(fa.port, true));
    systems.push({ name: 'nginx+fa-cached', url: `http://127.0.0.1:${n.port}/items`, pids: [n.pid, fa.pid], token: warmToken });
  }

  const rawVerify = rawVerifyMicros();
  log(`raw ES256 verify: ${rawVerify.toFixed(1)} µs; ${REPS} × ${DURATION}s per system, ${CONNECTIONS} connections, CLK_TCK ${CLK_TCK}`);
  for (const s of systems) {
    const w = measure(s, 3); // JIT and pools warm-up
    if (w.errors > 0) throw new Error(`${s.name}: ${w.errors} errors during warm-up (misconfigured competitor?)`);
  }
  const samples = new Map<string, Sample[]>(systems.map((s) => [s.name, []]));
  const rawVerifies: number[] = [rawVerify];
  for (let rep = 0; rep < REPS; rep++) {
    if (rep > 0) rawVerifies.push(rawVerifyMicros());
    for (const s of systems) {
      const r = measure(s, DURATION);
      samples.get(s.name)?.push(r);
      log(
        `  rep ${rep + 1} ${s.name.padEnd(20)} ${r.rps.toFixed(0).padStart(7)} req/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  ${r.cpuUsPerReq.toFixed(1)} µs CPU/req${r.errors ? `  ERRORS ${r.errors}` : ''}`,
      );
    }
  }

  const results = systems.map((s) => {
    const xs = samples.get(s.name) as Sample[];
    return {
      system: s.name,
      rps: Math.round(median(xs.map((x) => x.rps))),
      p50_ms: Number(median(xs.map((x) => x.p50)).toFixed(2)),
      p99_ms: Number(median(xs.map((x) => x.p99)).toFixed(2)),
      cpu_us_per_req: Number(median(xs.map((x) => x.cpuUsPerReq)).toFixed(1)),
      errors: xs.reduce((a, x) => a + x.errors, 0),
    };
  });
  const by = (n: string) => results.find((r) => r.system === n);
  console.log('');
  console.log(`${'system'.padEnd(20)} ${'req/s'.padStart(8)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'CPU µs/req'.padStart(11)}`);
  for (const r of results) {
    console.log(
      `${r.system.padEnd(20)} ${String(r.rps).padStart(8)} ${r.p50_ms.toFixed(2).padStart(8)} ${r.p99_ms.toFixed(2).padStart(8)} ${r.cpu_us_per_req.toFixed(1).padStart(11)}${r.errors ? `  (${r.errors} errors)` : ''}`,
    );
  }
  console.log('');
  // Goals are judged on ratios taken within each round (the systems of one round ran minutes
  // apart at most, under similar load from the rest of the machine), then the median over rounds;
  // CPU-based ratios (1/CPU per request) are printed beside them because they move less with load.
  const perRep = (a: string, b: string, f: (x: Sample, y: Sample) => number): number | undefined => {
    const xs = samples.get(a);
    const ys = samples.get(b);
    if (!xs || !ys) return undefined;
    return median(xs.map((x, i) => f(x, ys[i] as Sample)));
  };
  const rps = (x: Sample, y: Sample) => x.rps / y.rps;
  const cpu = (x: Sample, y: Sample) => y.cpuUsPerReq / x.cpuUsPerReq;
  const check = (label: string, value: number | undefined, cpuValue: number | undefined, goal: string, ok: (v: number) => boolean) => {
    if (value === undefined) return;
    console.log(
      `${ok(value) ? 'MET ' : 'MISS'} ${label}: ${value.toFixed(2)} (goal ${goal})${cpuValue === undefined ? '' : `; by CPU per request: ${cpuValue.toFixed(2)}`}`,
    );
  };
  const rawMedian = median(rawVerifies);
  console.log(`raw ES256 signature verify (node:crypto, median of ${rawVerifies.length}): ${rawMedian.toFixed(1)} µs`);
  check(
    'tessera-warm / baseline throughput',
    perRep('tessera-warm', 'baseline', rps),
    perRep('tessera-warm', 'baseline', cpu),
    '≥ 0.85',
    (v) => v >= 0.85,
  );
  const floorRatio = perRep('tessera-warm', 'baseline-dispatch', rps);
  if (floorRatio !== undefined)
    console.log(
      `     tessera-warm / baseline-dispatch (the floor): ${floorRatio.toFixed(2)}; by CPU per request: ${perRep('tessera-warm', 'baseline-dispatch', cpu)?.toFixed(2)}`,
    );
  const peers = ['express', 'fastify'].filter((n) => samples.has(n));
  const fasterPeer = peers.sort((a, b) => (by(b)?.rps ?? 0) - (by(a)?.rps ?? 0))[0];
  if (fasterPeer)
    check(
      `tessera-warm / ${fasterPeer} throughput`,
      perRep('tessera-warm', fasterPeer, rps),
      perRep('tessera-warm', fasterPeer, cpu),
      '≥ 1.5',
      (v) => v >= 1.5,
    );
  const coldSamples = samples.get('tessera-cold');
  const baseSamples = samples.get('baseline');
  if (coldSamples && baseSamples) {
    const ratios = coldSamples.map((c, i) => (c.cpuUsPerReq - (baseSamples[i] as Sample).cpuUsPerReq) / (rawVerifies[i] ?? rawMedian));
    const extra = median(coldSamples.map((c, i) => c.cpuUsPerReq - (baseSamples[i] as Sample).cpuUsPerReq));
    check(
      `tessera-cold extra CPU over baseline (${extra.toFixed(1)} µs) / raw verify`,
      median(ratios),
      undefined,
      '≤ 1.3',
      (v) => v <= 1.3,
    );
  }
  check(
    'nginx+forward-auth / tessera-warm throughput',
    perRep('nginx+forward-auth', 'tessera-warm', rps),
    perRep('nginx+forward-auth', 'tessera-warm', cpu),
    '≥ 2',
    (v) => v >= 2,
  );
  const ceiling = perRep('nginx+null-auth', 'tessera-warm', rps);
  if (ceiling !== undefined)
    console.log(
      `     nginx+null-auth / tessera-warm (the ceiling of any auth_request server): ${ceiling.toFixed(2)}; by CPU per request: ${perRep('nginx+null-auth', 'tessera-warm', cpu)?.toFixed(2)}`,
    );
  check(
    'nginx+fa-cached / tessera-warm throughput',
    perRep('nginx+fa-cached', 'tessera-warm', rps),
    perRep('nginx+fa-cached', 'tessera-warm', cpu),
    '≥ 2',
    (v) => v >= 2,
  );
  console.log(JSON.stringify({ bench: 'gateway', results: results.map(({ errors: _e, ...r }) => r) }));
}

main().then(
  () => stopAll().then(() => process.exit(0)),
  (e) => {
    log(`bench failed: ${(e as Error).message}`);
    void stopAll().then(() => process.exit(1));
  },
);
