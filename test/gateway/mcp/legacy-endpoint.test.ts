/**
 * The pieces binding MCP's legacy HTTP+SSE sessions (src/gateway/mcp/legacy.ts): the query's
 * session parameter as an upstream's parser could read it, and the `endpoint` event rewritten as
 * the stream passes, whatever its chunking and line endings.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ENDPOINT_LINE_MAX, EndpointSigner, legacySession, signEndpoint } from '../../../src/gateway/mcp/legacy.ts';

const sign = (id: string) => `${id}.MAC`;
const rewrite = (url: string) => signEndpoint(url, sign);

/** The stream `input` becomes, fed in chunks of `size` bytes; `failed` once it was cut. */
function run(input: string, size = input.length): { out: string; failed: boolean } {
  const signer = new EndpointSigner(rewrite);
  const bytes = Buffer.from(input, 'utf8');
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length && !signer.failed; i += size) out.push(signer.push(bytes.subarray(i, i + size)));
  out.push(signer.end());
  return { out: Buffer.concat(out).toString('utf8'), failed: signer.failed };
}

/** The same result in one chunk and byte by byte. */
function each(input: string): { out: string; failed: boolean } {
  const whole = run(input);
  assert.deepEqual(run(input, 1), whole, 'byte by byte');
  assert.deepEqual(run(input, 7), whole, 'in 7-byte chunks');
  return whole;
}

describe('gateway: MCP legacy sessions, the query', () => {
  it("finds the SDKs' parameters (sessionId, session_id) and replaces only their value", () => {
    const found = legacySession('?a=1&sessionId=abc;b=2');
    assert.equal(found.kind, 'one');
    if (found.kind !== 'one') return;
    assert.equal(found.value, 'abc');
    assert.equal(found.replace('x&y'), '?a=1&sessionId=x%26y;b=2');
    const python = legacySession('?session_id=0f%2B1');
    assert.equal(python.kind === 'one' && python.value, '0f+1');
    assert.deepEqual(legacySession(''), { kind: 'none' });
    assert.deepEqual(legacySession('?a=1&session=2&sessions=3'), { kind: 'none' });
  });

  it('session smuggling: a spelling an upstream parser may fold into a session, or a second one, is invalid', () => {
    for (const query of [
      '?sessionId=a&sessionId=b',
      '?sessionId=a&session_id=b',
      '?sessionId=a;sessionId=b',
      '?sessionid=a',
      '?SessionId=a',
      '?session-id=a',
      '?sessionId[]=a',
      '?sessionId%5B0%5D=a',
      '?%73essionId=a&sessionId=b',
      '?sessionId',
      '?sessionId=%E0%A4%A',
    ])
      assert.deepEqual(legacySession(query), { kind: 'invalid' }, query);
  });

  it('signs the endpoint URL in place: path, other parameters and fragment kept', () => {
    assert.equal(rewrite('/mcp/messages?sessionId=abc'), '/mcp/messages?sessionId=abc.MAC');
    assert.equal(rewrite('/messages/?session_id=ab12#x'), '/messages/?session_id=ab12.MAC#x');
    assert.equal(rewrite('/mcp/messages'), '/mcp/messages');
    assert.equal(rewrite('/mcp/messages#?sessionId=abc'), '/mcp/messages#?sessionId=abc');
    assert.equal(rewrite('/mcp/messages?sessionId=a&sessionId=b'), undefined);
    assert.equal(rewrite('/mcp/messages?sessionId=a%20b'), undefined, 'not visible ASCII');
    assert.equal(rewrite(`/mcp/messages?sessionId=${'a'.repeat(513)}`), undefined, 'longer than signed');
  });
});

describe('gateway: MCP legacy sessions, the endpoint event', () => {
  it("signs the SDK's endpoint event and passes everything else byte for byte, however chunked", () => {
    const rest = 'event: message\ndata: {"jsonrpc":"2.0","id":1}\n\n: comment\nid: 7\ndata: sessionId=x\n\n';
    assert.deepEqual(each(`event: endpoint\ndata: /mcp/messages?sessionId=abc\n\n${rest}`), {
      out: `event: endpoint\ndata: /mcp/messages?sessionId=abc.MAC\n\n${rest}`,
      failed: false,
    });
  });

  it('CRLF and CR line endings, a BOM, no space after the colon', () => {
    assert.deepEqual(each('\ufeffevent:endpoint\r\ndata:/m?sessionId=abc\r\n\r\n'), {
      out: '\ufeffevent:endpoint\r\ndata: /m?sessionId=abc.MAC\r\n\r\n',
      failed: false,
    });
    assert.deepEqual(each('event: endpoint\rdata: /m?sessionId=abc\r\r'), {
      out: 'event: endpoint\rdata: /m?sessionId=abc.MAC\r\r',
      failed: false,
    });
  });

  it('an event typed otherwise, or whose type line is long, is not read', () => {
    const input =
      'event: endpoints\ndata: /m?sessionId=a&sessionId=b\n\nevent: endpoint-ish-and-longer\ndata: /m?sessionId=a&sessionId=b\n\n';
    assert.deepEqual(each(input), { out: input, failed: false });
    // The blank line ends the endpoint event: the next one is untyped.
    const after = 'event: endpoint\ndata: /m?sessionId=abc\n\ndata: /m?sessionId=a&sessionId=b\n\n';
    assert.deepEqual(each(after), { out: after.replace('abc', 'abc.MAC'), failed: false });
  });

  it('unsigned endpoint smuggling: typed endpoint after its data went out, a second data line, an unbindable URL, a line too long', () => {
    for (const input of [
      'data: /m?sessionId=abc\nevent: endpoint\n\n',
      'event: message\ndata: /m?sessionId=abc\nevent: endpoint\n\n',
      'event: endpoint\ndata: /m?sessionId=abc\ndata: more\n\n',
      'event: endpoint\ndata: /m?sessionId=a&sessionid=b\n\n',
      `event: endpoint\ndata: /m?x=${'a'.repeat(ENDPOINT_LINE_MAX)}&sessionId=abc\n\n`,
    ]) {
      const { out, failed } = each(input);
      assert.equal(failed, true, input);
      // The event never reaches the caller whole: no blank line ends it.
      assert.ok(!out.includes('\n\n'), input);
    }
  });
});
