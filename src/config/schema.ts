/**
 * `tessera.yaml`: the whole configuration, composed from one schema per part. This is the single
 * source of defaults, validation and docs/configuration.md.
 *
 * @module
 */
import { z } from 'zod';
import type { ConfigIssue } from '../core/errors.ts';
import { gatewayChecks } from '../gateway/check.ts';
import { addConfigIssues, always, trusted } from './cross-check.ts';
import { auditSchema, gatewaySchema } from './gateway-schema.ts';
import {
  exchangeClientsChecks,
  ownIssuerAlgorithmChecks,
  storeSchema,
  tokenServiceChecks,
  tokenServiceSchema,
} from './token-service-schema.ts';
import { filePath, verifierChecks, verifierFields } from './verifier-schema.ts';

/**
 * One listener, one set of limits and operations endpoints: beside a `gateway` section, `tessera
 * serve` serves the token service on the gateway’s listener, whose limits are `gateway.limits` and
 * whose probes and metrics are `gateway.operations`; `token_service.limits` or
 * `token_service.operations` there would read as applied and be ignored.
 */
function listenerLimitsChecks(c: {
  readonly gateway?: unknown;
  readonly token_service?: { readonly limits?: unknown; readonly operations?: unknown } | undefined;
}): ConfigIssue[] {
  if (c.gateway === undefined) return [];
  const issues: ConfigIssue[] = [];
  if (c.token_service?.limits !== undefined)
    issues.push({
      path: 'token_service.limits',
      message:
        'with a gateway section, the token service is served on the gateway’s listener, whose limits are gateway.limits: write these there (gateway.limits has the same fields) and remove token_service.limits',
    });
  if (c.token_service?.operations !== undefined)
    issues.push({
      path: 'token_service.operations',
      message:
        'with a gateway section, the token service is served on the gateway’s listener, whose probes and metrics are gateway.operations (the token service’s metrics among them): write these there (gateway.operations has the same fields) and remove token_service.operations',
    });
  return issues;
}

export const serverSchema = z
  .strictObject({
    host: z
      .string()
      .regex(
        /^[^\s\p{Cc}]+$/u,
        'a host name or an address to listen on, without spaces or control characters (127.0.0.1, ::1, or 0.0.0.0 for every interface)',
      )
      .default('127.0.0.1')
      .meta({ description: 'Address to listen on.' }),
    port: z.number().int().min(0).max(65535).default(8080).meta({ description: 'Port to listen on (0 picks a free one).' }),
    public_url: z
      .string()
      .url()
      // The gateway's DPoP URL (htu) is this followed by the request target, and the issuer
      // defaults to it: a query or fragment (even a bare `?` or `#`) would swallow every path, so
      // a proof for the origin's root would pass anywhere; userinfo would end up in the issuer.
      .refine(
        (v) => {
          if (!URL.canParse(v)) return true;
          const u = new URL(v);
          return (u.protocol === 'https:' || u.protocol === 'http:') && u.username === '' && u.password === '' && !/[?#]/.test(v);
        },
        {
          message:
            'write the http(s) URL clients reach Tessera at, without a query, fragment or user:password@ part (e.g. https://api.example.com, or https://example.com/prefix behind a proxy that removes /prefix)',
        },
      )
      .optional()
      .meta({
        description:
          "External base URL (http or https; a query, fragment or user:password@ part is refused): the issuer identifier, and the base of the URL a DPoP proof names (`htu`) at the token endpoint and the gateway. Unset: http://host:port; at the gateway, the URL a proxy in `gateway.trust_proxy` forwards, else http://host:port (for a wildcard host, 0.0.0.0 or ::, the address the connection arrives at), never the caller's Host header. A forward-auth check names this origin and the original URI, except on a route matched by `match.host` (the host the proxy reports); unset, the URL the proxy reports, whose host is the caller's Host unless the proxy refuses other names (see docs/gateway.md).",
      }),
    trust_proxy: z
      .boolean()
      .refine((v) => v === false, {
        message:
          'trust_proxy is now a list of proxy addresses under the gateway: write gateway.trust_proxy: ["127.0.0.1/32"] (the CIDRs of the proxies in front of Tessera) and remove server.trust_proxy',
      })
      .optional()
      .meta({ description: 'Replaced by `gateway.trust_proxy` (a CIDR list); only `false` is accepted.' }),
  })
  .meta({ description: 'The HTTP listener shared by the token service and the gateway.' });

export const configSchema = z
  .strictObject({
    data_dir: filePath().default('.tessera').meta({
      description:
        'Directory for the SQLite store, keys and generated secrets. Created with mode 0700 when missing; an existing one must belong to the user Tessera runs as (or root) and be writable by its owner alone (no group or other write bit, as OpenSSH requires of ~/.ssh; every file in it is 0600), else `init`, `serve` and the commands that open the store refuse it, naming the `chmod` to run. On a volume whose mount point you cannot change (e.g. a group-writable Kubernetes `fsGroup` volume), use a subdirectory of it. Not checked on Windows.',
    }),
    server: serverSchema.prefault({}),
    ...verifierFields,
    token_service: tokenServiceSchema.optional(),
    store: storeSchema.optional(),
    gateway: gatewaySchema.optional(),
    audit: auditSchema.optional(),
  })
  .superRefine((c, ctx) => {
    // Across sections, in the same parse as the field checks: on every part that parsed.
    const ok = trusted(ctx.issues);
    const verifier = verifierChecks(c, ok);
    addConfigIssues(ctx, [
      ...verifier.issues,
      ...gatewayChecks(c, ok, verifier.scopes),
      ...tokenServiceChecks(c.token_service, ok, verifier.scopes, c.server),
      ...exchangeClientsChecks(c, ok),
      ...ownIssuerAlgorithmChecks(c, ok),
      ...listenerLimitsChecks(c),
    ]);
  }, always)
  .meta({ description: 'tessera.yaml' });

/** `tessera.yaml` as written (before defaults): what {@link TesseraConfig} is parsed from. */
export type TesseraConfigInput = z.input<typeof configSchema>;
/**
 * `tessera.yaml` validated, with its defaults, deep-frozen: what `loadConfigFile` returns and
 * `createGateway`, `createVerifierFromConfig` and `createTokenServiceFromConfig` take (docs/configuration.md).
 */
export type TesseraConfig = z.output<typeof configSchema>;
