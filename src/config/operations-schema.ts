/**
 * The operations endpoints (probes and Prometheus metrics), one schema for their two places:
 * `gateway.operations` (with the gateway’s `jwks_max_stale`) and `token_service.operations` (the
 * listener of `tessera serve` without a gateway section). Under `tessera serve` there is one
 * listener: with a gateway section it serves `gateway.operations`, and `token_service.operations`
 * is refused (as `token_service.limits` is, see `schema.ts`).
 *
 * @module
 */
import { z } from 'zod';

/** What `tessera serve` says of the one listener’s operations endpoints, in both sections’ descriptions. */
export const operationsRule =
  'Under `tessera serve` the token service and the gateway share one listener, and one set of operations endpoints answers on it: `gateway.operations` when there is a `gateway` section (`token_service.operations` beside one is refused), else `token_service.operations`; the metrics are the same (names and labels) in both.';

/** The fields both sections share. */
export const operationsFields = {
  health_path: z
    .string()
    .startsWith('/')
    .default('/healthz')
    .meta({ description: 'Liveness probe: 200 `{"status":"ok"}` while the process answers.' }),
  ready_path: z.string().startsWith('/').default('/readyz').meta({
    description:
      'Readiness probe: 200 when ready, else 503; the checks it ran (named, with why one failed) to `metrics_allowed_peers` only, the status alone to others.',
  }),
  metrics_path: z.string().startsWith('/').default('/metrics').meta({
    description:
      'Prometheus metrics (text format), to `metrics_allowed_peers` only: 404 to anyone else, as for a path that does not exist. No label carries a token, secret or request data.',
  }),
  metrics_allowed_peers: z
    .array(z.string().min(1))
    // Loopback only, as Envoy's admin listener: a private source address proves nothing about
    // the client once kube-proxy (externalTrafficPolicy: Cluster) or a TCP load balancer has
    // rewritten it to its own.
    .default(['127.0.0.0/8', '::1'])
    .meta({
      description:
        'Addresses or CIDRs allowed to scrape metrics and to read the checks /readyz names (others get its status alone). Default: loopback only; to scrape from another host list its address or network, e.g. the Prometheus pods’ CIDR ["127.0.0.0/8", "::1", "10.0.0.0/8"]. The client’s address as the section’s `trust_proxy` reads it: a request relayed by a proxy not listed there (it carries X-Forwarded-For, Forwarded or X-Real-IP) is never allowed.',
    }),
};

/** `token_service.operations`: the operations endpoints of the token service alone. */
export const tokenServiceOperationsSchema = z.strictObject(operationsFields).meta({
  description: `The operations endpoints of \`tessera serve\` without a \`gateway\` section (the token service alone): probes and Prometheus metrics. Unset: the defaults below, the same as \`gateway.operations\`’. ${operationsRule}`,
});

export type OperationsConfig = z.output<typeof tokenServiceOperationsSchema>;
