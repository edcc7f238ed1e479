/**
 * A2A tasks bound to their creator: every answer the caller can read is read for the tasks and
 * contexts it names, or refused. An id the gateway does not record is "new" to it: a context not
 * recorded would go to the first principal naming it. Attacks against a real JSON-RPC upstream on
 * loopback: a batch answer, a compressed answer, answers larger than the gateway reads, answers
 * labelled other than JSON or not 2xx (still parsed as JSON by clients), a request with positional
 * params.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { assertRpcError, json, postAgent, startA2aPrincipals, UPSTREAM_UNAVAILABLE, userMessage } from './a2a/helpers.ts';
import { requestEvents, startA2aGateway, type TestGateway, token, type Upstream } from './helpers.ts';

type Answer = (rpc: { id: unknown; method: string }, res: ServerResponse, req: IncomingMessage) => void;

const MiB = 1024 * 1024;

/** A Task as an A2A 0.3 agent answers it, its (large) artifact before its ids. */
function taskOf(id: string, contextId: string, artifactBytes = 10): Record<string, unknown> {
  return {
    kind: 'task',
    artifacts: [{ artifactId: 'a1', parts: [{ kind: 'text', text: 'x'.repeat(artifactBytes) }] }],
    status: { state: 'completed' },
    id,
    contextId,
  };
}

/** A JSON-RPC answer to `call` whose result is `result`. */
const resultOf = (call: { id: unknown }, result: unknown) => JSON.stringify({ jsonrpc: '2.0', id: call.id, result });

describe('gateway: A2A answers the gateway must read for their tasks (bind_tasks)', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let alice: string;
  let bob: string;
  /** How the upstream answers the next message/send or message/stream (the default: a small task). */
  let answer: Answer | undefined;
  let close: () => Promise<void>;
  before(async () => {
    ({ upstream, gw, alice, bob, close } = await startA2aPrincipals((req, res, body) => {
      const rpc = JSON.parse(body);
      const first = Array.isArray(rpc) ? rpc[0] : rpc;
      const a = answer;
      if (a !== undefined) return a(rpc, res, req);
      const p = first.params ?? {};
      const m = p.message ?? {};
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(
          JSON.stringify({ jsonrpc: '2.0', id: first.id, result: taskOf(m.taskId ?? p.id ?? randomUUID(), m.contextId ?? randomUUID()) }),
        );
    }));
  });
  after(() => close());

  const post = (bearer: string, body: unknown) => postAgent(gw, bearer, body);
  let n = 0;
  const rpc = (method: string, params: unknown) => ({ jsonrpc: '2.0', id: ++n, method, params });
  const message = (extra: Record<string, unknown> = {}) => userMessage('hi', extra);
  /** Bob continues `contextId` (message/send with message.contextId): the answer and whether the upstream was asked. */
  const bobContinues = async (contextId: string) => {
    answer = undefined;
    const from = upstream.seen.length;
    const res = await post(bob, rpc('message/send', message({ contextId })));
    return { res, asked: upstream.seen.slice(from).some((s) => s.body.includes(contextId)) };
  };
  const lastReason = async () => (await requestEvents(gw)).at(-1)?.reason;

  it("batch answer: a context created in a JSON-RPC batch answer is the caller's; another principal naming it is refused", async () => {
    const task = `t-${randomUUID()}`;
    const context = `c-${randomUUID()}`;
    answer = (batch, res) => {
      const id = (batch as unknown as { id: unknown }[])[0]?.id;
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify([{ jsonrpc: '2.0', id, result: taskOf(task, context) }]));
    };
    const res = await post(alice, [rpc('message/send', message())]);
    assert.equal(res.status, 200);
    assert.equal((await json(res))[0].result.contextId, context);
    const bobs = await bobContinues(context);
    assert.equal(bobs.res.status, 404);
    assert.equal((await json(bobs.res)).error.code, -32001);
    assert.equal(bobs.asked, false);
    assert.equal(await lastReason(), 'a2a_task_foreign');
    // And the task is Alice's: she may get it.
    assert.equal((await post(alice, rpc('tasks/get', { id: task }))).status, 200);
  });

  for (const sent of [700, 999]) {
    it(`an answer with status ${sent} (outside 100–599), a task in its JSON body: not relayed, 502 upstream_status_invalid as a JSON-RPC -32603 echoing the id, audited with upstream_status ${sent}`, async () => {
      const context = `c-${randomUUID()}`;
      answer = (call, res) =>
        res.writeHead(sent, { 'content-type': 'application/json' }).end(resultOf(call, taskOf(`t-${randomUUID()}`, context)));
      const res = await post(alice, rpc('message/send', message()));
      await assertRpcError(res, {
        status: 502,
        id: n,
        code: -32603,
        message: 'The upstream service answered with an invalid status code.',
      });
      const e = (await requestEvents(gw)).at(-1)!;
      assert.equal(e.reason, 'upstream_status_invalid');
      assert.equal(e.upstream_status, sent);
      // Its context was never recorded as Alice's: Bob naming it is asked upstream, not refused as foreign.
      assert.equal((await bobContinues(context)).asked, true);
    });
  }

  it('compressed answer (the upstream compresses though asked for identity): refused 502 a2a_upstream_answer_compressed with a JSON-RPC -32006 echoing the id, nothing relayed', async () => {
    const context = `c-${randomUUID()}`;
    answer = (call, res) =>
      res
        .writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' })
        .end(gzipSync(resultOf(call, taskOf(`t-${randomUUID()}`, context))));
    const from = upstream.seen.length;
    const res = await post(alice, rpc('message/send', message()));
    assert.equal(upstream.seen[from]?.headers['accept-encoding'], 'identity');
    assert.equal(res.headers.get('content-encoding'), null);
    await assertRpcError(res, { status: 502, id: n, code: -32006, message: UPSTREAM_UNAVAILABLE });
    assert.equal(await lastReason(), 'a2a_upstream_answer_compressed');
  });

  it('compressed event stream (message/stream refused before its head): a plain JSON-RPC -32006 answer echoing the id, 502 a2a_upstream_answer_compressed, nothing relayed', async () => {
    const context = `c-${randomUUID()}`;
    answer = (call, res) =>
      res
        .writeHead(200, { 'content-type': 'text/event-stream', 'content-encoding': 'gzip' })
        .end(gzipSync(`data: ${resultOf(call, taskOf(`t-${randomUUID()}`, context))}\n\n`));
    const res = await post(alice, rpc('message/stream', message()));
    assert.equal(res.headers.get('content-encoding'), null);
    await assertRpcError(res, { status: 502, id: n, code: -32006, message: UPSTREAM_UNAVAILABLE });
    assert.equal(await lastReason(), 'a2a_upstream_answer_compressed');
  });

  it("large JSON answer (2 MiB artifact, past the old 1 MiB read limit): relayed whole and its context is the caller's", async () => {
    const context = `c-${randomUUID()}`;
    answer = (call, res) =>
      res.writeHead(200, { 'content-type': 'application/json' }).end(resultOf(call, taskOf(`t-${randomUUID()}`, context, 2 * MiB)));
    const res = await post(alice, rpc('message/send', message()));
    assert.equal(res.status, 200);
    assert.equal((await json(res)).result.contextId, context);
    const bobs = await bobContinues(context);
    assert.equal(bobs.res.status, 404);
    assert.equal(bobs.asked, false);
  });

  /** Answers past a2a.max_answer_size, whatever their label: refused 502, nothing of them relayed. */
  const oversized = [
    { name: 'oversized JSON answer (past a2a.max_answer_size)', contentType: 'application/json' },
    { name: 'oversized text/plain answer (past a2a.max_answer_size)', contentType: 'text/plain' },
  ];
  for (const { name, contentType } of oversized) {
    it(`${name}: refused 502 a2a_upstream_answer_too_large with a JSON-RPC -32006 echoing the id, nothing relayed`, async () => {
      const context = `c-${randomUUID()}`;
      answer = (call, res) =>
        res.writeHead(200, { 'content-type': contentType }).end(resultOf(call, taskOf(`t-${randomUUID()}`, context, 5 * MiB)));
      const res = await post(alice, rpc('message/send', message()));
      await assertRpcError(res, { status: 502, id: n, code: -32006, message: UPSTREAM_UNAVAILABLE });
      assert.equal(await lastReason(), 'a2a_upstream_answer_too_large');
    });
  }

  it("oversized SSE event (past a2a.max_answer_size): the stream is cut before the event's end, its context never reaches the caller", async () => {
    const context = `c-${randomUUID()}`;
    const first = `t-${randomUUID()}`;
    answer = (call, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`data: ${resultOf(call, taskOf(first, `c-${randomUUID()}`))}\n\n`);
      res.end(`data: ${resultOf(call, taskOf(`t-${randomUUID()}`, context, 5 * MiB))}\n\n`);
    };
    const res = await post(alice, rpc('message/stream', message()));
    assert.equal(res.status, 200);
    let text = '';
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        text += Buffer.from(value).toString();
      }
    } catch {
      // Cut: the caller sees an incomplete stream.
    }
    assert.match(text, new RegExp(first));
    assert.doesNotMatch(text, new RegExp(context));
    // Cut after its head went out: audited as an upstream error of that kind.
    assert.equal((await requestEvents(gw)).at(-1)?.detail?.upstream_error, 'answer_too_large');
  });

  /** Alice's message/send is answered by `reply`: the status she gets, and whether Bob may then continue `context`. */
  const aliceThenBob = async (context: string, reply: Answer) => {
    answer = reply;
    const res = await post(alice, rpc('message/send', message()));
    const text = await res.text();
    const bobs = await bobContinues(context);
    return { status: res.status, type: res.headers.get('content-type'), text, bobs };
  };

  /**
   * Answers naming a new context in a way some client reads: Alice's answer is a 200, with the
   * context in its text when `relayed`; Bob naming that context is refused (404, the
   * JSON-RPC error `code` when given) without the upstream being asked, audited a2a_task_foreign.
   */
  const callersContexts: { name: string; relayed?: true; code?: number; reply: (context: string) => Answer }[] = [
    {
      name: "text/plain-labelled JSON answer: a context it creates is the caller's (clients parse it as JSON whatever its label); another principal naming it is refused",
      relayed: true,
      code: -32001,
      reply: (context) => (call, res) =>
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end(resultOf(call, taskOf(`t-${randomUUID()}`, context))),
    },
    {
      name: "answer without Content-Type: a context it creates is the caller's; another principal naming it is refused",
      relayed: true,
      reply: (context) => (call, res) => {
        res.removeHeader('content-type');
        res.writeHead(200).end(resultOf(call, taskOf(`t-${randomUUID()}`, context)));
      },
    },
    {
      name: "JSON answer opening with a UTF-8 BOM (fetch's json() and Python's json.loads skip it): a context it creates is the caller's; another principal naming it is refused",
      reply: (context) => (call, res) =>
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(resultOf(call, taskOf(`t-${randomUUID()}`, context)))])),
    },
    {
      name: "UTF-16 JSON answer (Python's json.loads reads UTF-16 and UTF-32 bytes): a context it creates is the caller's; another principal naming it is refused",
      reply: (context) => (call, res) =>
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(Buffer.from(resultOf(call, taskOf(`t-${randomUUID()}`, context)), 'utf16le')),
    },
    {
      name: "Go-cased answer key (`ContextID`, which Go's encoding/json reads as contextId): the context is the caller's; another principal naming it is refused",
      relayed: true,
      code: -32001,
      reply: (context) => (call, res) =>
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(resultOf(call, { kind: 'task', id: `t-${randomUUID()}`, ContextID: context, status: { state: 'completed' } })),
    },
    {
      name: "snake_case answer key (`context_id`, which a Python client's pydantic model and protobuf JSON parsers read as contextId): the context is the caller's; another principal naming it is refused",
      relayed: true,
      code: -32001,
      reply: (context) => (call, res) =>
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(resultOf(call, { kind: 'task', id: `t-${randomUUID()}`, context_id: context, status: { state: 'completed' } })),
    },
    {
      name: "`Result` envelope key (read as result by a case-blind client): the context in it is the caller's; another principal naming it is refused",
      reply: (context) => (call, res) =>
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify({ jsonrpc: '2.0', id: call.id, Result: taskOf(`t-${randomUUID()}`, context) })),
    },
    {
      name: "JSON-RPC error whose data is a Task (a client may show it): its context is the caller's; another principal naming it is refused",
      relayed: true,
      reply: (context) => (call, res) =>
        res.writeHead(200, { 'content-type': 'application/json' }).end(
          JSON.stringify({
            jsonrpc: '2.0',
            id: call.id,
            error: { code: -32603, message: 'Task failed', data: taskOf(`t-${randomUUID()}`, context) },
          }),
        ),
    },
  ];
  for (const t of callersContexts) {
    it(t.name, async () => {
      const context = `c-${randomUUID()}`;
      const { status, text, bobs } = await aliceThenBob(context, t.reply(context));
      assert.equal(status, 200);
      if (t.relayed) assert.match(text, new RegExp(context));
      assert.equal(bobs.res.status, 404);
      if (t.code !== undefined) assert.equal((await json(bobs.res)).error.code, t.code);
      assert.equal(bobs.asked, false);
      assert.equal(await lastReason(), 'a2a_task_foreign');
    });
  }

  /** Answers spelling contextId twice, as `key` beside `contextId` (clients disagree on which one they read): refused 502, nothing relayed. */
  const ambiguous = [
    { name: 'JSON answer spelling contextId and context_id (a Python client reads one, protobuf JSON refuses both)', key: 'context_id' },
    { name: 'JSON answer spelling contextId twice (`contextId` and `ContextId`: clients disagree on which wins)', key: 'ContextId' },
  ];
  for (const { name, key } of ambiguous) {
    it(`${name}: refused 502 a2a_upstream_answer_ambiguous with a JSON-RPC -32006 echoing the id, nothing relayed`, async () => {
      const context = `c-${randomUUID()}`;
      const decoy = `c-${randomUUID()}`;
      const { status, type, text, bobs } = await aliceThenBob(context, (call, res) =>
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(resultOf(call, { ...taskOf(`t-${randomUUID()}`, decoy), [key]: context })),
      );
      assert.equal(status, 502);
      assert.equal(type, 'application/json');
      // Alice's call was the one before Bob's.
      assert.deepEqual(JSON.parse(text), { jsonrpc: '2.0', id: n - 1, error: { code: -32006, message: UPSTREAM_UNAVAILABLE } });
      assert.equal((await requestEvents(gw)).at(-2)?.reason, 'a2a_upstream_answer_ambiguous');
      // Bob's own new context: nothing of it was Alice's.
      assert.equal(bobs.res.status, 200);
    });
  }

  it("500 answer with a JSON-RPC body naming a new task: the task and its context are the caller's; another principal naming the context is refused", async () => {
    const task = `t-${randomUUID()}`;
    const context = `c-${randomUUID()}`;
    const { status, text, bobs } = await aliceThenBob(context, (call, res) =>
      res.writeHead(500, { 'content-type': 'application/json' }).end(resultOf(call, taskOf(task, context))),
    );
    assert.equal(status, 500);
    assert.match(text, new RegExp(context));
    assert.equal(bobs.res.status, 404);
    assert.equal(bobs.asked, false);
    assert.equal(await lastReason(), 'a2a_task_foreign');
    answer = undefined;
    assert.equal((await post(alice, rpc('tasks/get', { id: task }))).status, 200);
  });

  it('an answer that is not JSON (text/plain, 2xx and 502) names nothing: relayed as is', async () => {
    for (const status of [200, 502]) {
      answer = (_call, res) => res.writeHead(status, { 'content-type': 'text/plain' }).end('agent busy {not json');
      const res = await post(alice, rpc('message/send', message()));
      assert.equal(res.status, status);
      assert.equal(await res.text(), 'agent busy {not json');
    }
  });

  /** A stream answering Alice's message/stream with `events` (each an SSE event's data): her stream's text, whether it was cut, Bob's try at `context`. */
  const aliceStreamThenBob = async (context: string, events: (call: { id: unknown }) => unknown[]) => {
    answer = (call, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(
        events(call)
          .map((e) => `data: ${JSON.stringify(e)}\n\n`)
          .join(''),
      );
    };
    const res = await post(alice, rpc('message/stream', message()));
    let text = '';
    let cut = false;
    try {
      text = await res.text();
    } catch {
      cut = true;
    }
    const bobs = await bobContinues(context);
    return { status: res.status, text, cut, bobs };
  };

  it("SSE event with a long-s key (`\u017fessionId`, read as sessionId by Go's encoding/json) in a `StatusUpdate` wrapper: the context is the caller's; another principal naming it is refused", async () => {
    const context = `c-${randomUUID()}`;
    const { status, bobs } = await aliceStreamThenBob(context, (call) => [
      {
        jsonrpc: '2.0',
        id: call.id,
        result: { StatusUpdate: { taskId: `t-${randomUUID()}`, '\u017fessionId': context, status: { state: 'working' } } },
      },
    ]);
    assert.equal(status, 200);
    assert.equal(bobs.res.status, 404);
    assert.equal(bobs.asked, false);
    assert.equal(await lastReason(), 'a2a_task_foreign');
  });

  it("SSE event split by a line of only a BOM (U+FEFF) mid-stream: one event to a WHATWG client (a field line named U+FEFF, not an empty line), so the context its joined data names is the caller's; another principal naming it is refused", async () => {
    const context = `c-${randomUUID()}`;
    answer = (call, res) => {
      const text = resultOf(call, taskOf(`t-${randomUUID()}`, context));
      // Neither half parses alone: only the data of the one event a client dispatches names the context.
      const half = text.indexOf('"contextId"');
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(`data: ${text.slice(0, half)}\n\uFEFF\ndata: ${text.slice(half)}\n\n`);
    };
    const res = await post(alice, rpc('message/stream', message()));
    assert.equal(res.status, 200);
    const text = await res.text();
    // What the caller got is one event (as a WHATWG parser reads it) naming the context.
    const data = text
      .split('\n')
      .filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(6))
      .join('\n');
    assert.equal(JSON.parse(data).result.contextId, context);
    const bobs = await bobContinues(context);
    assert.equal(bobs.res.status, 404);
    assert.equal((await json(bobs.res)).error.code, -32001);
    assert.equal(bobs.asked, false);
    assert.equal(await lastReason(), 'a2a_task_foreign');
  });

  it('attack: an event stream opening with part of a BOM (clients read its first line differently): ended before that line with a JSON-RPC -32006 error event, audited answer_ambiguous', async () => {
    const context = `c-${randomUUID()}`;
    answer = (call, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end(Buffer.concat([Buffer.from([0xef, 0xbb]), Buffer.from(`data: ${resultOf(call, taskOf(`t-${randomUUID()}`, context))}\n\n`)]));
    };
    const res = await post(alice, rpc('message/stream', message()));
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.doesNotMatch(text, new RegExp(context));
    assert.deepEqual(JSON.parse(text.replace(/^data: /, '')), {
      jsonrpc: '2.0',
      id: n,
      error: { code: -32006, message: UPSTREAM_UNAVAILABLE },
    });
    assert.equal((await requestEvents(gw)).at(-1)?.detail?.upstream_error, 'answer_ambiguous');
  });

  it('attack: an event stream whose first chunk is part of a BOM (relayed as it came): the connection is cut, no error event written after those bytes (a WHATWG client would read it as an unknown field), audited answer_ambiguous', async () => {
    const context = `c-${randomUUID()}`;
    for (const partial of [[0xef], [0xef, 0xbb]]) {
      answer = (call, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        // Nothing to decide yet: relayed as it comes.
        res.write(Buffer.from(partial));
        setTimeout(() => res.end(`data: ${resultOf(call, taskOf(`t-${randomUUID()}`, context))}\n\n`), 50);
      };
      const res = await post(alice, rpc('message/stream', message()));
      assert.equal(res.status, 200);
      const received: Buffer[] = [];
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      let cut = false;
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          received.push(Buffer.from(value));
        }
      } catch {
        cut = true;
      }
      // What an A2A client's pipeline (TextDecoderStream, then eventsource-parser) reads of it.
      const { EventSourceParserStream } = await import('eventsource-parser/stream');
      const parsed = new Blob([Buffer.concat(received)])
        .stream()
        .pipeThrough(new TextDecoderStream())
        .pipeThrough(new EventSourceParserStream());
      const events: string[] = [];
      for await (const e of parsed) events.push(e.data);
      const label = Buffer.from(partial).toString('hex');
      assert.equal(cut, true, label);
      assert.deepEqual(events, [], label);
      assert.doesNotMatch(Buffer.concat(received).toString('latin1'), new RegExp(`${context}|error`), label);
      assert.equal((await requestEvents(gw)).at(-1)?.detail?.upstream_error, 'answer_ambiguous', label);
    }
  });

  it('SSE event spelling result twice (`result` and `Result`): the stream ends before that event with a JSON-RPC -32006 error event echoing the id, audited answer_ambiguous', async () => {
    const context = `c-${randomUUID()}`;
    const first = `t-${randomUUID()}`;
    const { status, text, cut } = await aliceStreamThenBob(context, (call) => [
      { jsonrpc: '2.0', id: call.id, result: taskOf(first, `c-${randomUUID()}`) },
      { jsonrpc: '2.0', id: call.id, result: { kind: 'message', messageId: 'm', parts: [] }, Result: taskOf(`t-${randomUUID()}`, context) },
    ]);
    assert.equal(status, 200);
    assert.equal(cut, false);
    assert.doesNotMatch(text, new RegExp(context));
    // Its last event is the call's failure, as an A2A client reads one in a stream (Alice's call was before Bob's).
    const last = text.trimEnd().split('\n\n').at(-1) as string;
    assert.ok(text.endsWith('\n\n'));
    assert.deepEqual(JSON.parse(last.replace(/^data: /, '')), {
      jsonrpc: '2.0',
      id: n - 1,
      error: { code: -32006, message: UPSTREAM_UNAVAILABLE },
    });
    const events = await requestEvents(gw);
    assert.equal(events.at(-2)?.detail?.upstream_error, 'answer_ambiguous');
    assert.equal(events.at(-2)?.decision, 'allow');
  });

  it('SSE event spelling result twice, its first bytes relayed already: the connection is cut (an error event would join the event the client is reading), audited answer_ambiguous', async () => {
    const context = `c-${randomUUID()}`;
    answer = (call, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      // Names nothing yet: relayed as it comes.
      res.write(`data: {"jsonrpc":"2.0","id":${JSON.stringify(call.id)},`);
      setTimeout(
        () => res.end(`"result":{"kind":"message","messageId":"m","parts":[]},"Result":${JSON.stringify(taskOf('t', context))}}\n\n`),
        50,
      );
    };
    const res = await post(alice, rpc('message/stream', message()));
    assert.equal(res.status, 200);
    let text = '';
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    let cut = false;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        text += Buffer.from(value).toString();
      }
    } catch {
      cut = true;
    }
    assert.equal(cut, true);
    assert.doesNotMatch(text, new RegExp(`${context}|error`));
    assert.equal((await requestEvents(gw)).at(-1)?.detail?.upstream_error, 'answer_ambiguous');
  });

  it('positional params: a tasks/get with params as an array is refused (400, -32600, a2a_message_invalid), the upstream never asked', async () => {
    const task = `t-${randomUUID()}`;
    const from = upstream.seen.length;
    const res = await post(bob, rpc('tasks/get', [{ id: task }]));
    await assertRpcError(res, {
      status: 400,
      id: n,
      code: -32600,
      message: 'The request body is not a JSON-RPC message the gateway can read.',
    });
    assert.equal(upstream.seen.length, from);
    assert.equal(await lastReason(), 'a2a_message_invalid');
  });

  it('a body that is not JSON is refused as JSON-RPC says (400, -32700 parse error, id null: none can be read), a2a_message_invalid, the upstream never asked', async () => {
    const from = upstream.seen.length;
    for (const body of [
      '{"jsonrpc":"2.0","id":7,"method":"message/send",',
      '{"jsonrpc":"2.0","id":7,"method":"tasks/get","params":{"id":NaN}}',
    ]) {
      const res = await post(bob, body);
      await assertRpcError(res, {
        status: 400,
        id: null,
        code: -32700,
        message: 'The request body is not a JSON-RPC message the gateway can read.',
      });
      assert.equal(await lastReason(), 'a2a_message_invalid');
    }
    assert.equal(upstream.seen.length, from);
  });

  it('a JSON body repeating a key is an invalid request (400, -32600, id null: which id counts is the ambiguity), a2a_message_invalid', async () => {
    const res = await post(bob, '{"jsonrpc":"2.0","id":7,"method":"tasks/get","id":8,"params":{"id":"t"}}');
    await assertRpcError(res, {
      status: 400,
      id: null,
      code: -32600,
      message: 'The request body is not a JSON-RPC message the gateway can read.',
    });
    assert.equal(await lastReason(), 'a2a_message_invalid');
  });

  it("a batch naming another principal's task is refused whole (404, -32001, id null: one error for the batch)", async () => {
    answer = undefined;
    const task = (await json(await post(alice, rpc('message/send', message())))).result.id;
    const from = upstream.seen.length;
    const res = await post(bob, [rpc('message/send', message()), rpc('tasks/get', { id: task })]);
    assert.equal(upstream.seen.length, from);
    await assertRpcError(res, { status: 404, id: null, code: -32001, message: 'Task not found' });
  });
});

describe('gateway: A2A calls whose upstream gives no answer (bind_tasks)', () => {
  let gw: TestGateway;
  before(async () => {
    // Nothing listens on port 1: every call fails to connect.
    gw = await startA2aGateway('http://127.0.0.1:1', { token_url: 'https://tessera.example.com/oauth/token' });
  });
  after(() => gw.close());

  it("upstream unreachable: 502 upstream_unavailable as a JSON-RPC -32603 echoing the call's id, the message/stream call too", async () => {
    const bearer = await token({ sub: 'alice', scope: 'agent:invoke' });
    for (const [id, method] of [
      [41, 'message/send'],
      ['s-42', 'message/stream'],
    ] as const) {
      const res = await postAgent(gw, bearer, { jsonrpc: '2.0', id, method, params: userMessage('hi') });
      await assertRpcError(res, { status: 502, id, code: -32603, message: UPSTREAM_UNAVAILABLE });
      assert.equal((await requestEvents(gw)).at(-1)?.reason, 'upstream_unavailable');
    }
  });

  it("a request without a body (GET) keeps the gateway's plain error body: no call to answer", async () => {
    const bearer = await token({ sub: 'alice', scope: 'agent:invoke' });
    const res = await fetch(`${gw.url}/agent/`, { headers: { authorization: `Bearer ${bearer}` } });
    assert.equal(res.status, 502);
    assert.equal(((await res.json()) as { error: string }).error, 'bad_gateway');
  });
});
