/**
 * Operations endpoints: `/healthz` (the process answers), `/readyz` (keys loaded, remote JWKS
 * fetched, audit queue not overflowing, injected checks such as the store, not shutting down; the
 * checks themselves to the metrics peers only) and `/metrics` (Prometheus text, to allowed peers only).
 *
 * @module
 */
import type { ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import type { ManagedVerifier } from '../verifier.ts';

/** A readiness check contributed from outside (the store, the token service). */
export interface ReadinessCheck {
  readonly name: string;
  check(): Promise<{ ok: boolean; detail?: string }> | { ok: boolean; detail?: string };
}

export interface ReadinessResult {
  readonly ready: boolean;
  readonly checks: { name: string; ok: boolean; detail?: string }[];
}

/**
 * Run the readiness checks. A remote JWKS must have been fetched once. A set past its TTL that
 * could not be refreshed keeps the gateway ready for `jwksMaxStaleMs` (the verifier keeps the last
 * good keys, and taking every replica out of service because an IdP is briefly down would turn
 * its outage into ours), reported as `stale`; beyond that the keys may no longer be the issuer's
 * (rotated, a key withdrawn after a compromise) and the gateway reports not ready. The injected
 * checks run at once under one deadline, `checkTimeoutMs` from the call: one that has not answered
 * by then is not ready, and the answer comes within that one timeout however many checks hang
 * (one after another, each with its own, two hung checks made a probe wait twice as long).
 */
export async function readiness(
  verifiers: readonly ManagedVerifier[],
  audit: { depth: number; max: number; refusing?: boolean; dropped?: number } | undefined,
  extra: readonly ReadinessCheck[],
  closing: boolean,
  jwksMaxStaleMs = Number.POSITIVE_INFINITY,
  checkTimeoutMs = 2000,
): Promise<ReadinessResult> {
  const checks: { name: string; ok: boolean; detail?: string }[] = [];
  if (closing) checks.push({ name: 'shutdown', ok: false, detail: 'shutting down' });
  for (const v of verifiers) {
    for (const s of v.jwksStatus()) {
      const tooStale = s.staleForMs > jwksMaxStaleMs;
      checks.push({
        name: `jwks ${s.url}`,
        ok: s.loaded && !tooStale,
        detail: s.dropped
          ? `key set dropped: not refreshed within jwks_cache.max_stale past its expiry${s.lastError === undefined ? '' : ` (${s.lastError})`}`
          : !s.loaded
            ? 'not loaded'
            : s.fresh
              ? `${s.keys} keys`
              : `${s.keys} keys, stale for ${Math.round(s.staleForMs / 1000)}s${tooStale ? ' (over operations.jwks_max_stale)' : ''}`,
      });
    }
  }
  if (audit?.refusing === true)
    checks.push({
      name: 'audit queue',
      ok: false,
      detail: `${audit.depth} queued, full: requests are refused (audit.on_queue_full: refuse) until the audit outputs take the queue${(audit.dropped ?? 0) > 0 ? `; ${audit.dropped} events no request reserved a slot for dropped since start` : ''}`,
    });
  else if (audit !== undefined) checks.push({ name: 'audit queue', ok: audit.depth < audit.max, detail: `${audit.depth} queued` });
  if (extra.length > 0) checks.push(...(await withinDeadline(extra, checkTimeoutMs)));
  return { ready: checks.every((c) => c.ok), checks };
}

type CheckResult = { ok: boolean; detail?: string };
const pendingChecks = new WeakMap<ReadinessCheck, Promise<CheckResult>>();

/**
 * Every check's answer, in the order given, all started at once: a check that has not answered
 * `timeoutMs` after the call is not ready. A store that hangs (a partitioned database) must turn
 * /readyz into a 503, not into a request that never ends, and probes arriving meanwhile wait for
 * the same pending check rather than queue one query each.
 */
async function withinDeadline(
  extra: readonly ReadinessCheck[],
  timeoutMs: number,
): Promise<{ name: string; ok: boolean; detail?: string }[]> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<CheckResult>((resolve) => {
    timer = setTimeout(() => resolve({ ok: false, detail: `no answer within ${timeoutMs}ms` }), timeoutMs);
    timer.unref();
  });
  try {
    return await Promise.all(
      extra.map(async (c) => {
        const answer = pending(c).then(
          (r) => r,
          (): CheckResult => ({ ok: false, detail: 'check failed' }),
        );
        const r = await Promise.race([answer, deadline]);
        return { name: c.name, ok: r.ok, ...(r.detail !== undefined ? { detail: r.detail } : {}) };
      }),
    );
  } finally {
    clearTimeout(timer);
  }
}

/** The check under way for `c`, or a new one. */
function pending(c: ReadinessCheck): Promise<CheckResult> {
  let p = pendingChecks.get(c);
  if (p === undefined) {
    p = Promise.resolve()
      .then(() => c.check())
      .finally(() => pendingChecks.delete(c));
    pendingChecks.set(c, p);
  }
  return p;
}

export function writeJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'cache-control': 'no-store',
    'content-length': String(Buffer.byteLength(text)),
    ...headers,
  });
  res.end(text);
}

/** The probes and metrics are read-only: any method but GET and HEAD is 405 (RFC 9110 §15.5.6). */
export function writeOpsMethodNotAllowed(res: ServerResponse): void {
  writeJson(
    res,
    405,
    { error: 'method_not_allowed', error_description: 'This endpoint accepts GET and HEAD only.' },
    { allow: 'GET, HEAD' },
  );
}

export async function writeMetrics(res: ServerResponse, registry: Registry): Promise<void> {
  const text = await registry.metrics();
  res.writeHead(200, {
    'content-type': registry.contentType,
    'cache-control': 'no-store',
    'content-length': String(Buffer.byteLength(text)),
  });
  res.end(text);
}

/** The paths of one set of operations endpoints (`gateway.operations`, `token_service.operations`). */
export interface OperationsPaths {
  readonly health_path: string;
  readonly ready_path: string;
  readonly metrics_path: string;
}

/**
 * Answer a request for one of `ops`' paths: liveness, readiness (its checks named to an `operator`
 * only: they name internal hosts, the store's state and why a key is refused; a probe needs the
 * status code), or the metrics (to an `operator` only, else `notFound`, as a path that does not
 * exist). `operator`: the caller's address is in `metrics_allowed_peers`.
 */
export async function answerOperations(
  res: ServerResponse,
  request: { readonly method: string | undefined; readonly path: string; readonly operator: boolean },
  o: {
    readonly ops: OperationsPaths;
    readonly ready: () => Promise<ReadinessResult>;
    readonly registry: Registry;
    readonly notFound: (res: ServerResponse) => void;
  },
): Promise<void> {
  const { method, path, operator } = request;
  try {
    if (path === o.ops.metrics_path && !operator) o.notFound(res);
    else if (method !== 'GET' && method !== 'HEAD') writeOpsMethodNotAllowed(res);
    else if (path === o.ops.health_path) writeJson(res, 200, { status: 'ok' });
    else if (path === o.ops.ready_path) {
      const r = await o.ready();
      const status = r.ready ? 'ready' : 'not_ready';
      writeJson(res, r.ready ? 200 : 503, operator ? { status, checks: r.checks } : { status });
    } else await writeMetrics(res, o.registry);
  } catch {
    if (!res.headersSent) writeJson(res, 500, { error: 'server_error' });
  }
}
