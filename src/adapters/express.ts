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
 * // publicUrl: the URL clients call, which their DPoP proofs name (see NodeAdapterOptions).
 * app.use(expressAuth(createVerifier(options), { publicUrl: 'https://api.example.com' }));
 * app.get('/items', (req, res) => res.json({ subject: req.principal?.subject }));
 * ```
 */
import type { NextFunction, Request, Response } from 'express';
import { ConfigError } from '../core/errors.ts';
import type { Principal } from '../core/verify/principal.ts';
import type { Verifier } from '../core/verify/verifier.ts';
import { adapterOptions, formParams, type NodeAdapterOptions, toVerifyRequest } from './node.ts';
import { denyResponse } from './response.ts';

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
      "this Express app routes paths ignoring case (its default) but the rules compare case: set `case_insensitive_paths: true`, or `app.enable('case sensitive routing')`",
  },
]);

export function expressAuth(
  verifier: Verifier,
  options: Omit<NodeAdapterOptions, 'body'> = {},
): (req: Request, res: Response, next: NextFunction) => void {
  options = adapterOptions(options);
  return function tesseraExpressAuth(req, res, next) {
    // Express routes /ADMIN to app.get('/admin') unless told otherwise; rules that compare case
    // would then let /ADMIN past the rule written for /admin. Refuse rather than guess.
    if (verifier.rules?.caseInsensitivePaths === false && !req.app.enabled('case sensitive routing')) {
      next(caseMismatch);
      return;
    }
    const body = formParams(req.body);
    verifier.verify(toVerifyRequest(req, { ...options, body: () => body })).then((result) => {
      if (result.ok) {
        req.principal = result.principal;
        next();
        return;
      }
      const d = denyResponse(result.error, verifier.challenges);
      res.status(d.status).set(d.headers).send(d.body);
    }, next);
  };
}
