/**
 * The route's rules (method + path (+ MCP tool and JSON-RPC method) → scopes and claim conditions), evaluated by the
 * core policy against the principal's effective scopes. First match decides; no match is 403.
 *
 * @module
 */
import { TesseraError } from '../../../core/errors.ts';
import type { Policy } from '../../../core/policy.ts';
import type { Authorizer } from './authorizer.ts';

export function policyAuthorizer(policy: Policy): Authorizer {
  return {
    id: 'policy',
    authorize(request, principal, rpc) {
      if (principal === undefined) return { ok: false, error: new TesseraError('credentials_missing'), rule: undefined };
      const input =
        rpc === undefined
          ? { method: request.method, path: request.path }
          : { method: request.method, path: request.path, tool: rpc.tool, rpc: rpc.method };
      const d = policy.evaluate(input, principal);
      if (d.allowed) return { ok: true, rule: d.rule };
      const details: { scope?: string; claim?: string } = {};
      if (d.code === 'scope_insufficient' && d.rule?.scopeHint) details.scope = d.rule.scopeHint;
      if (d.claim) details.claim = d.claim;
      return { ok: false, error: new TesseraError(d.code, details), rule: d.rule };
    },
  };
}
