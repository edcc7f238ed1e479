/**
 * Assertion and environment helpers for verifier tests: exact refusal checks (status, code,
 * `WWW-Authenticate`), a steppable clock and loopback HTTP servers on port 0.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ERROR_CODES, type ErrorCode, type TesseraError } from '../../src/core/errors.ts';
import type { VerifyResult } from '../../src/core/verify/verifier.ts';

/** A clock tests move by hand. */
export interface FakeClock {
  (): number;
  /** Move forward by `seconds`. */
  advance(seconds: number): void;
  /** Current time in epoch seconds. */
  seconds(): number;
}

export function fakeClock(startSeconds = 1_900_000_000): FakeClock {
  let ms = startSeconds * 1000;
  const clock = (() => ms) as FakeClock;
  clock.advance = (s) => {
    ms += s * 1000;
  };
  clock.seconds = () => Math.floor(ms / 1000);
  return clock;
}

/**
 * The `WWW-Authenticate` value a resource accepting only Bearer sends for `code`, written out
 * here rather than produced by the code under test: `error` is given literally by the caller, the
 * description is the catalogue's fixed text.
 */
export function bearerChallenge(error: string, code: ErrorCode, extra = ''): string {
  return `Bearer error="${error}", error_description="${ERROR_CODES[code].description}"${extra}`;
}

export interface Expected {
  readonly status: number;
  readonly code: ErrorCode;
  /** The RFC error value (`invalid_token`, `invalid_request`, ...). */
  readonly error: string | null;
  /** Exact challenges; default: the single Bearer challenge for `error` and `code`. */
  readonly challenges?: readonly string[];
}

/** Assert that `result` is a refusal with exactly this status, code and challenge. */
export function assertDenied(
  result: VerifyResult,
  verifier: { challenges(error?: TesseraError): string[] },
  expected: Expected,
): TesseraError {
  assert.equal(result.ok, false, `expected ${expected.code}, got a success`);
  assert.ok(!result.ok);
  const { error } = result;
  assert.equal(error.code, expected.code);
  assert.equal(error.status, expected.status);
  assert.equal(error.error, expected.error);
  const want = expected.challenges ?? (expected.error === null ? ['Bearer'] : [bearerChallenge(expected.error, expected.code)]);
  assert.deepEqual(verifier.challenges(error.code === 'credentials_missing' ? undefined : error), want);
  return error;
}

/** Shorthand for the 401 `invalid_token` refusals. */
export function assertInvalidToken(
  result: VerifyResult,
  verifier: { challenges(error?: TesseraError): string[] },
  code: ErrorCode,
): TesseraError {
  return assertDenied(result, verifier, { status: 401, code, error: 'invalid_token' });
}

/** Shorthand for the 400 `invalid_request` refusals. */
export function assertInvalidRequest(
  result: VerifyResult,
  verifier: { challenges(error?: TesseraError): string[] },
  code: ErrorCode,
): TesseraError {
  return assertDenied(result, verifier, { status: 400, code, error: 'invalid_request' });
}

/** A loopback HTTP server on port 0. */
export interface TestServer {
  readonly server: Server;
  /** `http://127.0.0.1:PORT` */
  readonly origin: string;
  close(): Promise<void>;
}

export async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void | Promise<void>): Promise<TestServer> {
  const server = createServer((req, res) => {
    Promise.resolve(handler(req, res)).catch(() => {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    server,
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Read a request body as text. */
export async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
