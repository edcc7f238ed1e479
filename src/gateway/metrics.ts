/**
 * Prometheus metrics. Counters on the request path are plain numbers in a map, copied into
 * prom-client when scraped (a labelled `inc` hashes and validates its labels on every call);
 * latencies go to a small histogram of our own registered as a custom metric.
 *
 * Label values are route ids, decisions, statuses and reason codes: bounded sets chosen by the
 * configuration and the error catalogue, never request data. The status is the one sent to the
 * caller, which for a relayed response is the upstream's choice (any three digits, 100 to 999):
 * an unregistered one is counted under its class ({@link statusLabel}). A reload that removes (or renames) a
 * route drops that route's series; an exchange of it still in flight is not observed when it ends.
 *
 * @module
 */

import { Counter, Gauge, type Registry } from 'prom-client';
import type { SendTimeoutKind } from '../server/send-timeout.ts';

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * A latency histogram by route with the request-path cost of an array increment. Registered in
 * prom-client as a custom metric (an object with `get()`), rendered in the standard
 * `_bucket`/`_sum`/`_count` form.
 */
class RouteHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly #series = new Map<string, { counts: Float64Array; sum: number; count: number }>();

  constructor(name: string, help: string) {
    this.name = name;
    this.help = help;
  }

  observe(route: string, seconds: number): void {
    let s = this.#series.get(route);
    if (s === undefined) {
      s = { counts: new Float64Array(LATENCY_BUCKETS.length + 1), sum: 0, count: 0 };
      this.#series.set(route, s);
    }
    let i = 0;
    while (i < LATENCY_BUCKETS.length && seconds > (LATENCY_BUCKETS[i] as number)) i++;
    s.counts[i] = (s.counts[i] as number) + 1;
    s.sum += seconds;
    s.count++;
  }

  get() {
    const values: { metricName: string; labels: Record<string, string | number>; value: number }[] = [];
    for (const [route, s] of this.#series) {
      let cumulative = 0;
      for (let i = 0; i <= LATENCY_BUCKETS.length; i++) {
        cumulative += s.counts[i] as number;
        values.push({
          metricName: `${this.name}_bucket`,
          labels: { le: i < LATENCY_BUCKETS.length ? (LATENCY_BUCKETS[i] as number) : '+Inf', route },
          value: cumulative,
        });
      }
      values.push({ metricName: `${this.name}_sum`, labels: { route }, value: s.sum });
      values.push({ metricName: `${this.name}_count`, labels: { route }, value: s.count });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  reset(): void {
    this.#series.clear();
  }

  /** Drop the series of every route `keep` refuses. */
  retain(keep: (route: string) => boolean): void {
    for (const route of this.#series.keys()) if (!keep(route)) this.#series.delete(route);
  }
}

/**
 * The status codes of the IANA HTTP Status Code Registry (RFC 9110 §15 and its updates), and 0
 * (no response was sent: the caller went away first). Each is its own `status` label value.
 */
const REGISTERED_STATUSES: ReadonlySet<number> = new Set([
  0, 100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307, 308, 400, 401, 402, 403, 404,
  405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421, 422, 423, 424, 425, 426, 428, 429, 431, 451, 500, 501, 502, 503,
  504, 505, 506, 507, 508, 510, 511,
]);

/**
 * The `status` label of a response status: the code itself when registered, else its class
 * (`2xx` … `5xx`, which a `status=~"5.."` query still matches), else `other` (600 to 999: an
 * upstream may send them, and the gateway answers 502 `upstream_status_invalid` instead). An upstream that answers with whatever status a caller asks
 * for (an echo service, `/status/{code}`) would otherwise open up to 900 series per route.
 */
export function statusLabel(status: number): string {
  if (REGISTERED_STATUSES.has(status)) return String(status);
  if (status >= 100 && status <= 599) return `${Math.floor(status / 100)}xx`;
  return 'other';
}

/**
 * The status of a request the HTTP layer answers before the gateway sees it: unparseable (400), a
 * head over `limits.max_header_size` (431), a head or body not whole in time (408), an `Expect`
 * other than `100-continue` (417), CONNECT (501).
 */
export type ParserRefusal = 400 | 408 | 417 | 431 | 501;

/**
 * Why a connection was closed unanswered as it was accepted: its address held
 * `limits.max_connections_per_address` already (`per_address`), or the listener held
 * `limits.max_connections` (`max_connections`).
 */
export type ConnectionRefusal = 'per_address' | 'max_connections';

export type { SendTimeoutKind };

/** The route label of a request that matched no route: always kept. */
export const NO_ROUTE = '(none)';

export interface MetricsSources {
  /** Cumulative verifier cache hits and misses across the current verifiers. */
  verifierCache(): { hits: number; misses: number };
  auditStats(): { depth: number; dropped: number; failed: number };
  activeStreams(): { websocket: number; http: number };
  inflight(): number;
}

/**
 * What the listener counts (`createListener`): requests it answered itself, connections it closed
 * unanswered, connections cut by `send_timeout`. Under a gateway part of {@link GatewayMetrics};
 * under `tessera serve` without one, the token service's listener registers them alone, with the
 * same names, so one dashboard reads both deployments.
 */
export class ListenerMetrics {
  readonly #refused: Record<ParserRefusal, number> = { 400: 0, 408: 0, 417: 0, 431: 0, 501: 0 };
  readonly #connectionsRefused: Record<ConnectionRefusal, number> = { per_address: 0, max_connections: 0 };
  readonly #sendTimeouts: Record<SendTimeoutKind, number> = { http: 0, websocket: 0 };

  constructor(registry: Registry) {
    const refused = this.#refused;
    const connectionsRefused = this.#connectionsRefused;
    const sendTimeouts = this.#sendTimeouts;
    new Counter({
      name: 'tessera_gateway_parser_refusals_total',
      help: 'Requests answered before the gateway or the token service saw them (no audit event): 400 unparseable, 408 head too slow, 417 an Expect other than 100-continue, 431 head too large, 501 CONNECT.',
      labelNames: ['status'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [status, n] of Object.entries(refused)) this.inc({ status }, n);
      },
    });
    new Counter({
      name: 'tessera_gateway_connections_refused_total',
      help: 'Connections closed unanswered as they were accepted: per_address past limits.max_connections_per_address, max_connections past limits.max_connections.',
      labelNames: ['reason'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [reason, n] of Object.entries(connectionsRefused)) this.inc({ reason }, n);
      },
    });
    new Counter({
      name: 'tessera_gateway_send_timeouts_total',
      help: 'Connections destroyed because their client took no byte of their pending output for limits.send_timeout: http (an answer or stream being written), websocket.',
      labelNames: ['kind'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [kind, n] of Object.entries(sendTimeouts)) this.inc({ kind }, n);
      },
    });
  }

  /** A connection closed unanswered as it was accepted ({@link ConnectionRefusal}). */
  refusedConnection(reason: ConnectionRefusal): void {
    this.#connectionsRefused[reason]++;
  }

  /** A connection cut by `limits.send_timeout` ({@link SendTimeoutKind}). */
  sendTimedOut(kind: SendTimeoutKind): void {
    this.#sendTimeouts[kind]++;
  }

  /** A request refused before any handler saw it ({@link ParserRefusal}). */
  refusedByParser(status: ParserRefusal): void {
    this.#refused[status]++;
  }
}

export class GatewayMetrics {
  readonly #requests = new Map<string, { labels: Record<string, string>; n: number }>();
  readonly #denies = new Map<string, number>();
  readonly #upstreamErrors = new Map<string, { labels: Record<string, string>; n: number }>();
  readonly #reloads = { ok: 0, refused: 0 };
  readonly #latency: RouteHistogram;
  /** The listener's own counters ({@link ListenerMetrics}). */
  readonly listener: ListenerMetrics;
  /** Verifier counters of verifiers replaced by a reload, so totals never go down. */
  #retiredCache = { hits: 0, misses: 0 };
  /** Ids of the routes of the configuration in force: the only route labels observed. */
  #routes: ReadonlySet<string>;

  /** `routes`: the ids of the configuration's routes (see {@link GatewayMetrics.routes}). */
  constructor(registry: Registry, sources: MetricsSources, routes: Iterable<string>) {
    this.#routes = new Set(routes);
    const requests = this.#requests;
    const denies = this.#denies;
    const upstreamErrors = this.#upstreamErrors;
    const reloads = this.#reloads;
    const self = this;
    new Counter({
      name: 'tessera_gateway_requests_total',
      help: 'Requests by route, decision and response status.',
      labelNames: ['route', 'decision', 'status'],
      registers: [registry],
      collect() {
        this.reset();
        for (const { labels, n } of requests.values()) this.inc(labels, n);
      },
    });
    this.#latency = new RouteHistogram(
      'tessera_gateway_request_duration_seconds',
      'Time from request to response end (upgrade for WebSocket), by route.',
    );
    registry.registerMetric(this.#latency as unknown as Parameters<Registry['registerMetric']>[0]);
    new Counter({
      name: 'tessera_gateway_denies_total',
      help: 'Refused requests by stable reason code.',
      labelNames: ['reason'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [reason, n] of denies) this.inc({ reason }, n);
      },
    });
    new Counter({
      name: 'tessera_gateway_upstream_errors_total',
      help: 'Upstream failures by route and kind (connect, connect_timeout, header_timeout, idle_timeout, reset, session_id_invalid, credential_rejected, extended_card_invalid, upgrade_invalid, status_invalid).',
      labelNames: ['route', 'kind'],
      registers: [registry],
      collect() {
        this.reset();
        for (const { labels, n } of upstreamErrors.values()) this.inc(labels, n);
      },
    });
    new Counter({
      name: 'tessera_verifier_cache_hits_total',
      help: 'Verified-result cache hits.',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(sources.verifierCache().hits + self.#retiredCache.hits);
      },
    });
    new Counter({
      name: 'tessera_verifier_cache_misses_total',
      help: 'Verified-result cache misses.',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(sources.verifierCache().misses + self.#retiredCache.misses);
      },
    });
    new Gauge({
      name: 'tessera_verifier_cache_hit_ratio',
      help: 'Verified-result cache hits / lookups since start.',
      registers: [registry],
      collect() {
        const c = sources.verifierCache();
        const hits = c.hits + self.#retiredCache.hits;
        const total = hits + c.misses + self.#retiredCache.misses;
        this.set(total === 0 ? 0 : hits / total);
      },
    });
    new Gauge({
      name: 'tessera_audit_queue_depth',
      help: 'Audit events waiting to be written.',
      registers: [registry],
      collect() {
        this.set(sources.auditStats().depth);
      },
    });
    new Counter({
      name: 'tessera_audit_events_dropped_total',
      help: 'Audit events dropped because the queue was full.',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(sources.auditStats().dropped);
      },
    });
    new Counter({
      name: 'tessera_audit_write_failures_total',
      help: 'Audit events an output refused to write, each counted once per output however often it is retried.',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(sources.auditStats().failed);
      },
    });
    new Gauge({
      name: 'tessera_gateway_active_streams',
      help: 'Open long-lived exchanges watched for revocation and expiry.',
      labelNames: ['kind'],
      registers: [registry],
      collect() {
        const s = sources.activeStreams();
        this.set({ kind: 'websocket' }, s.websocket);
        this.set({ kind: 'http' }, s.http);
      },
    });
    new Gauge({
      name: 'tessera_gateway_inflight_requests',
      help: 'Requests being handled.',
      registers: [registry],
      collect() {
        this.set(sources.inflight());
      },
    });
    new Counter({
      name: 'tessera_gateway_config_reloads_total',
      help: 'Configuration reloads by result.',
      labelNames: ['result'],
      registers: [registry],
      collect() {
        this.reset();
        this.inc({ result: 'ok' }, reloads.ok);
        this.inc({ result: 'refused' }, reloads.refused);
      },
    });
    this.listener = new ListenerMetrics(registry);
  }

  /** A connection closed unanswered as it was accepted ({@link ConnectionRefusal}). */
  refusedConnection(reason: ConnectionRefusal): void {
    this.listener.refusedConnection(reason);
  }

  /** A connection cut by `limits.send_timeout` ({@link SendTimeoutKind}). */
  sendTimedOut(kind: SendTimeoutKind): void {
    this.listener.sendTimedOut(kind);
  }

  /** A request refused before it reached the gateway ({@link ParserRefusal}). */
  refusedByParser(status: ParserRefusal): void {
    this.listener.refusedByParser(status);
  }

  /** One finished request; not recorded for a route the configuration no longer has. */
  request(route: string, decision: 'allow' | 'deny', status: number, seconds: number): void {
    if (!this.#observed(route)) return;
    const label = statusLabel(status);
    const key = `${route}\n${decision}\n${label}`;
    const e = this.#requests.get(key);
    if (e !== undefined) e.n++;
    else this.#requests.set(key, { labels: { route, decision, status: label }, n: 1 });
    this.#latency.observe(route, seconds);
  }

  deny(reason: string): void {
    this.#denies.set(reason, (this.#denies.get(reason) ?? 0) + 1);
  }

  upstreamError(route: string, kind: string): void {
    if (!this.#observed(route)) return;
    const key = `${route}\n${kind}`;
    const e = this.#upstreamErrors.get(key);
    if (e !== undefined) e.n++;
    else this.#upstreamErrors.set(key, { labels: { route, kind }, n: 1 });
  }

  /**
   * The routes of the configuration now in force (after a reload): the series labelled with any
   * other route are dropped, those of the routes kept stay as they are. An exchange of a removed
   * route that ends later (a stream the reload cuts, a request in flight) is not recorded, so it
   * cannot bring the series back.
   */
  routes(ids: Iterable<string>): void {
    this.#routes = new Set(ids);
    const keep = (route: string) => this.#observed(route);
    for (const [key, e] of this.#requests) if (!keep(e.labels.route as string)) this.#requests.delete(key);
    for (const [key, e] of this.#upstreamErrors) if (!keep(e.labels.route as string)) this.#upstreamErrors.delete(key);
    this.#latency.retain(keep);
  }

  #observed(route: string): boolean {
    return route === NO_ROUTE || this.#routes.has(route);
  }

  reload(ok: boolean): void {
    if (ok) this.#reloads.ok++;
    else this.#reloads.refused++;
  }

  /** Keep the counts of verifiers a reload retires. */
  retireVerifierCache(hits: number, misses: number): void {
    this.#retiredCache = { hits: this.#retiredCache.hits + hits, misses: this.#retiredCache.misses + misses };
  }
}

/**
 * The token service's audit queue beside the gateway's metrics (`tessera serve`): the events it
 * dropped because its queue was full while the store failed, which are lost.
 */
export function tokenServiceAuditMetrics(registry: Registry, audit: () => { dropped: number }): void {
  new Counter({
    name: 'tessera_token_service_audit_events_dropped_total',
    help: 'Token service audit events dropped because its queue was full (the store failing); they are lost.',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(audit().dropped);
    },
  });
}

/**
 * The age of the token service's view of the revocation log beside the gateway's metrics (`tessera
 * serve`): seconds since its last read of the log to its end began. Past
 * `token_service.revocation_max_staleness` (when set) this issuer's tokens are refused; past
 * 2 × `sync_interval` + 10 s /readyz fails.
 */
export function revocationLogMetrics(registry: Registry, age: () => number | undefined): void {
  new Gauge({
    name: 'tessera_revocation_log_age_seconds',
    help: 'Seconds since this instance last read the revocation log to its end (revocations made elsewhere since are not enforced here).',
    registers: [registry],
    collect() {
      const seconds = age();
      if (seconds !== undefined) this.set(seconds);
    },
  });
}

/** What the token service tells its metrics ({@link tokenServiceMetrics}); a `TokenService` is one. */
export interface TokenServiceMetricsSource {
  readonly audit: { readonly dropped: number };
  revocationLogAge(): number | undefined;
  tokenAnswers(): readonly { readonly labels: Readonly<Record<string, string>>; readonly n: number }[];
}

/**
 * Every metric of the token service, in the registry of the gateway it runs beside (`tessera
 * serve` with a gateway section) or in its own (without one): the same names either way. Its
 * token endpoint's answers, its audit events dropped, its revocation log's age.
 */
export function tokenServiceMetrics(registry: Registry, service: () => TokenServiceMetricsSource): void {
  new Counter({
    name: 'tessera_token_service_token_requests_total',
    help: 'Token endpoint answers by grant_type (a supported grant type, unsupported or missing), decision (allow: a token issued; deny: refused), reason (ok, or the stable reason code of the refusal, as its token.denied event says) and error (the OAuth error sent, such as invalid_client; empty when allowed).',
    labelNames: ['grant_type', 'decision', 'reason', 'error'],
    registers: [registry],
    collect() {
      this.reset();
      for (const { labels, n } of service().tokenAnswers()) this.inc(labels, n);
    },
  });
  tokenServiceAuditMetrics(registry, () => service().audit);
  revocationLogMetrics(registry, () => service().revocationLogAge());
}
