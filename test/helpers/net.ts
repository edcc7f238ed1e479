/** Loopback ports and real processes (nginx, Caddy) for tests. */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';

/**
 * A TCP port on 127.0.0.1 that was free a moment ago, for a process that cannot be told to listen
 * on 0. Drawn at random below the kernel's ephemeral range (ip_local_port_range, 32768+ on
 * Linux): a port the kernel handed out for `listen(0)` would be handed out again, to another test's
 * server or to any outgoing connection, before the process got to bind it.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const s = createServer();
    const ok = await new Promise<boolean>((resolve) => {
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (ok) {
      await new Promise((r) => s.close(r));
      return port;
    }
  }
  throw new Error('no free port found between 20000 and 32000');
}

/** Resolve once something accepts connections on 127.0.0.1:`port` (a proxy the test started). */
export async function waitForPort(port: number, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = connect(port, '127.0.0.1', () => {
        c.destroy();
        resolve(true);
      });
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not listen on ${port}`);
}

/** A process a test started, listening; its stdout and stderr are kept for failure messages. */
export interface Listening {
  readonly child: ChildProcess;
  output(): string;
  /** SIGTERM, then wait for the exit. */
  stop(): Promise<void>;
}

/** Start `command` and resolve once it accepts connections on `port` (else fail with its output). */
export async function spawnListening(command: string, args: readonly string[], port: number, env?: NodeJS.ProcessEnv): Promise<Listening> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(env ? { env } : {}) });
  let output = '';
  const collect = (d: Buffer) => {
    output += d.toString();
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  };
  try {
    await waitForPort(port, command);
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}: ${output}`);
  }
  return { child, output: () => output, stop };
}

/**
 * Send `text` as-is on a new connection and return everything read until the peer closes (or
 * `timeoutMs` passes): for requests fetch() would normalize or refuse to send. `next`, when given,
 * sees what has been read so far and may return text to send once more on the same connection.
 */
export function rawHttp(url: string, text: string, timeoutMs = 3000, next?: (received: string) => string | undefined): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect(Number(u.port), u.hostname, () => s.write(text));
    let out = '';
    let more = next;
    s.on('data', (d) => {
      out += d.toString();
      const send = more?.(out);
      if (send !== undefined && !s.destroyed) {
        more = undefined;
        s.write(send);
      }
    });
    s.on('end', () => resolve(out));
    s.on('error', reject);
    s.setTimeout(timeoutMs, () => {
      s.destroy();
      resolve(out);
    });
  });
}

/** Block this process's event loop (servers a test runs in it included) until `end` (performance.now()). */
export function blockUntil(end: number): void {
  while (performance.now() < end) {
    // Busy: nothing this process serves reads its sockets meanwhile.
  }
}

/**
 * Connect to 127.0.0.1:`port`, then send `text` and block this process's loop until `blockEnd`
 * from the check phase: the next loop turn runs the expired timers (an idle timeout) before it
 * reads what a proxy wrote meanwhile. Resolves with what was read until the connection closed.
 */
export async function sendThenBlock(port: number, text: string, blockEnd: number): Promise<string> {
  const sock = connect(port, '127.0.0.1');
  await once(sock, 'connect');
  let head = '';
  sock.on('data', (d: Buffer) => {
    head += d.toString('latin1');
  });
  const ended = once(sock, 'close');
  setImmediate(() => {
    sock.write(text);
    blockUntil(blockEnd);
  });
  await ended;
  return head;
}

/**
 * Slowloris: connect to 127.0.0.1:`port`, send `head` (a request head left open), then a header
 * line every `everyMs` (each keeps the socket busy, none ends the head) until the server closes
 * the connection or `giveUpMs` passes. Resolves with what was read and when (ms after the call).
 */
export function trickleHead(port: number, head: string, everyMs: number, giveUpMs: number): Promise<{ answer: string; ms: number }> {
  const started = performance.now();
  return new Promise((resolve) => {
    // Each interval starts once the head is written: a socket still connecting is writable, and a
    // line queued then (a slow connect under load) would go out before the head.
    let drip: NodeJS.Timeout | undefined;
    const s = connect(port, '127.0.0.1', () => {
      s.write(head);
      drip = setInterval(() => s.writable && s.write('X-Drip: 1\r\n'), everyMs);
    });
    let answer = '';
    const give = setTimeout(() => s.destroy(), giveUpMs);
    s.on('data', (d) => {
      answer += d.toString();
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      clearInterval(drip);
      clearTimeout(give);
      resolve({ answer, ms: performance.now() - started });
    });
  });
}

/** Poll `cond` (which may be async) every 10 ms until it holds; throws after `ms`. */
export async function until(cond: () => boolean | Promise<boolean>, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** What a server answered a request sent with `Expect: 100-continue`. */
export interface ContinueExchange {
  /** The status of the first response head read before any of the body was sent (100 or the final one); 0 when none came. */
  readonly first: number;
  /** Whether the body was sent (only after a 100). */
  readonly bodySent: boolean;
  /** Everything read until the server closed the connection. */
  readonly text: string;
}

/**
 * Send `head` (which must carry `Expect: 100-continue` and end with an empty line) as a careful
 * client does (RFC 9110 §10.1.1): the body goes only after `100 Continue`; a final answer first
 * means it is never sent. When nothing comes within `waitMs`, the body is not sent and `first` is 0.
 */
export function expectContinue(url: string, head: string, body: string | Buffer, waitMs = 2000): Promise<ContinueExchange> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect(Number(u.port), u.hostname, () => s.write(head));
    let text = '';
    let first = -1;
    let bodySent = false;
    const done = () => resolve({ first: Math.max(first, 0), bodySent, text });
    const wait = setTimeout(() => {
      if (first < 0) {
        first = 0;
        s.destroy();
        done();
      }
    }, waitMs);
    s.on('data', (d) => {
      text += d.toString('latin1');
      if (first < 0 && text.includes('\r\n\r\n')) {
        first = Number(text.split(' ')[1]);
        clearTimeout(wait);
        if (first === 100) {
          bodySent = true;
          s.write(body);
        }
      }
    });
    s.on('end', () => {
      clearTimeout(wait);
      done();
    });
    s.on('close', () => {
      clearTimeout(wait);
      done();
    });
    s.on('error', reject);
    s.setTimeout(5000, () => s.destroy());
  });
}

/**
 * Send `head` (announcing a body far over any limit), then body bytes every 20 ms until the server
 * closes the connection: what was read, when the server half-closed (its FIN, ms) and when the
 * connection ended, and whether it ended in a reset.
 */
export function sendLargeBody(
  url: string,
  head: string,
  giveUpMs = 8000,
): Promise<{ answer: string; finMs: number; ms: number; reset: boolean }> {
  const u = new URL(url);
  const started = performance.now();
  return new Promise((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    // The body starts once the head is written (see trickleHead).
    const s = connect({ port: Number(u.port), host: u.hostname, allowHalfOpen: true }, () => {
      s.write(head);
      timer = setInterval(() => {
        if (s.writable) s.write('x'.repeat(16_384));
      }, 20);
    });
    let answer = '';
    let reset = false;
    let finMs = Number.NaN;
    const done = () => {
      clearInterval(timer);
      clearTimeout(give);
      s.destroy();
      resolve({ answer, finMs, ms: performance.now() - started, reset });
    };
    const give = setTimeout(done, giveUpMs);
    s.on('data', (d) => {
      answer += d.toString();
    });
    s.on('end', () => {
      finMs = performance.now() - started;
    });
    s.on('close', done);
    s.on('error', (e: NodeJS.ErrnoException) => {
      reset = e.code === 'ECONNRESET' || e.code === 'EPIPE';
    });
  });
}
