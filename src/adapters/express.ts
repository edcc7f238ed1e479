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
 * app.use(expressAuth(createVerifier(options)));
 * app.get('/items', (req, res) => res.json({ subject: req.principal?.subject }));
 * ```
 */
import type { NextFunction, Request, Response } from 'express';
import type { Principal } from '../core/verify/principal.ts';
import type { Verifier } from '../core/verify/verifier.ts';
import { formParams, type NodeAdapterOptions, toVerifyRequest } from './node.ts';
import { denyResponse } from './response.ts';

declare global {
  namespace Express {
    interface Request {
      /** Set by Tessera's middleware for verified requests. */
      principal?: Principal;
    }
  }
}

export function expressAuth(
  verifier: Verifier,
  options: Omit<NodeAdapterOptions, 'body'> = {},
): (req: Request, res: Response, next: NextFunction) => void {
  return function tesseraExpressAuth(req, res, next) {
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
