/**
 * Express middleware. Sets `req.principal` on success; answers refusals itself.
 *
 * @example
 * ```ts
 * import express from 'express';
 * import { createVerifier } from 'tessera';
 * import { expressAuth } from 'tessera/adapters/express';
 *
 * const app = express();
 * // Rules compare path case; Express folds it unless told before its first route or middleware
 * // (and each express.Router({ caseSensitive: true })). Without this, or `case_insensitive_paths:
 * // true` in the options, every request is refused with a ConfigError passed to next.
 * app.enable('case sensitive routing');
 * // publicUrl: the URL clients call, which their DPoP proofs name (see NodeAdapterOptions).
 * app.use(expressAuth(createVerifier(options), { publicUrl: 'https://api.example.com' }));
 * app.get('/items', (req, res) => res.json({ subject: req.principal?.subject }));
 * ```
 */
import type { NextFunction, Request, Response } from 'express';
import { ConfigError } from '../core/errors.ts';
import type { Principal } from '../core/verify/principal.ts';
import type { Verifier } from '../core/verify/verifier.ts';
import type { NodeAdapterOptions } from './node.ts';
import { denyResponse } from './response.ts';
import { AdapterFailure, adapterOptions, formParams, toVerifyRequest, verifyOnce } from './shared.ts';

declare global {
  namespace Express {
    interface Request {
      /** Set by Tessera's middleware for verified requests. */
      principal?: Principal;
    }
  }
}

const caseMismatch = new ConfigError([
  {
    path: 'case_insensitive_paths',
    message:
      "this Express app routes paths ignoring case (its default, and every express.Router()'s) or mounts another app, but the rules compare case: set `case_insensitive_paths: true`, or `app.enable('case sensitive routing')` before any route or middleware and make each Router with { caseSensitive: true }",
  },
]);

/** The parts of an Express router (Express 4's and 5's `router`) read here. */
interface RouterLike {
  readonly caseSensitive?: boolean;
  readonly stack?: readonly { readonly handle?: unknown }[];
}

/**
 * True when every router the app routes through compares case, as far as can be seen: the router
 * the app built (from 'case sensitive routing' as it was when the app first routed, not as it is
 * now), and each `express.Router()` mounted in it, whose own `caseSensitive` defaults to false
 * whatever the app says. A mounted sub-app keeps its router out of sight: not provably so.
 */
function routesByCase(router: RouterLike | undefined, seen: Set<unknown> = new Set()): boolean {
  if (router === undefined || router === null || router.caseSensitive !== true) return false;
  if (seen.has(router)) return true;
  seen.add(router);
  for (const layer of router.stack ?? []) {
    if (typeof layer.handle !== 'function') continue;
    const h = layer.handle as RouterLike & { readonly name?: string };
    if (Array.isArray(h.stack) && 'caseSensitive' in h) {
      if (!routesByCase(h, seen)) return false;
    } else if (h.name === 'mounted_app') return false;
  }
  return true;
}

/** The app's router: `_router` in Express 4 (whose `router` getter throws), `router` in Express 5. */
function appRouter(app: Request['app']): RouterLike | undefined {
  const a = app as unknown as { _router?: RouterLike; router?: RouterLike };
  return '_router' in a ? a._router : a.router;
}

/**
 * Express middleware: verifies each request, sets `req.principal` and calls `next()`, or answers
 * the refusal (status, `WWW-Authenticate`, JSON error). A form-body token (`transport.form_body`)
 * is read from `req.body`, so mount a urlencoded body parser before it. Refuses to run rules that
 * compare path case under an app that routes ignoring it (a `ConfigError` passed to `next`).
 *
 * @throws {ConfigError} when `verifier` is not a verifier or `options` are invalid (see
 * {@link NodeAdapterOptions}; `body` is not taken), listing every problem.
 *
 * @example
 * ```ts
 * import express from 'express';
 * import { createVerifier } from 'tessera';
 * import { expressAuth } from 'tessera/adapters/express';
 *
 * const app = express();
 * app.enable('case sensitive routing'); // before any route or middleware: the rules compare case
 * app.use(expressAuth(createVerifier(options), { publicUrl: 'https://api.example.com' }));
 * app.get('/items', (req, res) => res.json({ subject: req.principal?.subject }));
 * ```
 */
export function expressAuth(
  verifier: Verifier,
  options: Omit<NodeAdapterOptions, 'body'> = {},
): (req: Request, res: Response, next: NextFunction) => void {
  options = adapterOptions<Omit<NodeAdapterOptions, 'body'>>('expressAuth', verifier, options, {
    publicUrl: 'origin',
    trustProxy: 'boolean',
  });
  return function tesseraExpressAuth(req, res, next) {
    // Express routes /ADMIN to app.get('/admin') unless told otherwise; rules that compare case
    // would then let /ADMIN past the rule written for /admin. Refuse rather than guess. The
    // setting alone is not enough: a Router folds case unless made with caseSensitive: true.
    if (verifier.rules?.caseInsensitivePaths === false && !routesByCase(appRouter(req.app))) {
      next(caseMismatch);
      return;
    }
    // Read only for an urlencoded body (toVerifyRequest): a JSON one's access_token is the app's.
    verifyOnce(verifier, req, toVerifyRequest(req, { ...options, body: () => formParams(req.body) })).then(
      (result) => {
        if (result.ok) {
          req.principal = result.principal;
          // A fresh DPoP nonce when the proof's is about to expire (RFC 9449 §9).
          if (result.dpopNonce !== undefined && !res.headersSent) res.setHeader('dpop-nonce', result.dpopNonce);
          next();
          return;
        }
        // Another middleware answered while the verifier waited (a request timeout): writing now
        // would throw in this callback, an unhandled rejection that ends the process.
        if (res.headersSent) return;
        const d = denyResponse(result.error, verifier.challenges);
        res.status(d.status).set(d.headers).send(d.body);
      },
      // A callback of the application threw while verifying: its error may quote the request, and
      // Express's default handler shows it outside production. 500 through the app's error handling.
      (error: unknown) => next(new AdapterFailure('expressAuth', error)),
    );
  };
}
