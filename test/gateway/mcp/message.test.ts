/**
 * Reading MCP JSON-RPC bodies: which tool a tools/call names, and the messages refused before
 * any decision (parser differentials, batches, malformed tool names).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hasDuplicateKeys, isIdentityEncoding, isJsonContentType, readMessage } from '../../../src/gateway/mcp/message.ts';

const read = (text: string) => readMessage(Buffer.from(text));

describe('MCP message reading', () => {
  it('names the method of every request and notification, the tool of a tools/call, and null where there is none', () => {
    assert.deepEqual(read('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"files.read"}}'), {
      ok: true,
      tool: 'files.read',
      method: 'tools/call',
      id: 1,
    });
    assert.deepEqual(read('{"jsonrpc":"2.0","id":1,"method":"tools/list"}'), { ok: true, tool: null, method: 'tools/list', id: 1 });
    assert.deepEqual(read('{"jsonrpc":"2.0","id":"l-1","method":"tools/list"}'), { ok: true, tool: null, method: 'tools/list', id: 'l-1' });
    assert.deepEqual(read('{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///a"}}'), {
      ok: true,
      tool: null,
      method: 'resources/read',
      id: 2,
    });
    assert.deepEqual(read('{"jsonrpc":"2.0","method":"notifications/initialized"}'), {
      ok: true,
      tool: null,
      method: 'notifications/initialized',
      id: null,
    });
    assert.deepEqual(read('{"jsonrpc":"2.0","id":3,"result":{}}'), { ok: true, tool: null, method: null, id: 3 });
    // Escapes are read as every JSON parser reads them.
    assert.deepEqual(read('{"jsonrpc":"2.0","id":1,"method":"tools\\/call","params":{"\\u006eame":"a\\u002eb"}}'), {
      ok: true,
      tool: 'a.b',
      method: 'tools/call',
      id: 1,
    });
  });

  it('rpc-rule bypass: refuses a method an upstream could read as another (NUL, whitespace, non-ASCII, empty, over 128)', () => {
    for (const method of [
      'resources/read\u0000',
      'resources/read ',
      ' resources/read',
      'resources/read\n',
      'resources/r\u0435ad',
      '',
      'a'.repeat(129),
    ]) {
      const m = read(JSON.stringify({ jsonrpc: '2.0', id: 7, method }));
      assert.deepEqual(m, { ok: false, code: 'mcp_message_invalid', rpc: -32600, id: 7 }, JSON.stringify(method));
    }
    assert.equal(read(JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'a'.repeat(128) })).ok, true);
  });

  it('parser differential: refuses a repeated key (one parser keeps the first, another the last)', () => {
    for (const text of [
      '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"safe","name":"danger"}}',
      '{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"danger"}}',
      '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"safe","\\u006eame":"danger"}}',
      '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":{"name":"b"}}',
    ]) {
      const m = read(text);
      assert.equal(m.ok, false, text);
      assert.equal(m.ok === false && m.code, 'mcp_message_invalid');
    }
    assert.equal(hasDuplicateKeys('{"a":[{"b":1},{"b":2}],"c":{"a":1}}'), false);
    assert.equal(hasDuplicateKeys('{"a":"{\\"a\\":1,\\"a\\":2}","b":["a","a"]}'), false);
    assert.equal(hasDuplicateKeys('{"a":{"x":1,"y":{"z":1},"x":2}}'), true);
  });

  it('case-folded member smuggling: refuses a key a Go parser reads as a JSON-RPC member or params.name (case, \u017f, \u212a, NUL)', () => {
    for (const text of [
      '{"jsonrpc":"2.0","id":1,"Method":"tools/call","params":{"name":"danger"}}',
      '{"jsonrpc":"2.0","id":1,"method":"ping","METHOD":"tools/call","params":{"name":"danger"}}',
      '{"jsonrpc":"2.0","id":1,"method":"tools/call","Params":{"name":"danger"},"params":{"name":"safe"}}',
      '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"safe"},"param\u017f":{"name":"danger"}}',
      '{"JSONRPC":"2.0","jsonrpc":"2.0","id":1,"method":"ping"}',
      '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"safe","NAME":"danger"}}',
      '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"safe","name\\u0000":"danger"}}',
      '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"safe","\\u0000name":"danger"}}',
    ]) {
      assert.deepEqual(read(text), { ok: false, code: 'mcp_message_invalid', rpc: -32600, id: 1 }, text);
    }
    // Other keys, in any case, are not members: they pass.
    assert.deepEqual(read('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"K":1,"k":2}},"Extra":1}'), {
      ok: true,
      tool: 'a',
      method: 'tools/call',
      id: 1,
    });
  });

  it('refuses batches, non-objects, a missing jsonrpc 2.0 and a non-string method', () => {
    const batch = read('[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]');
    assert.deepEqual(batch, { ok: false, code: 'mcp_batch_refused', rpc: -32600, id: null });
    for (const text of [
      '1',
      '"x"',
      'null',
      '{"id":1,"method":"tools/list"}',
      '{"jsonrpc":"1.0","id":1}',
      '{"jsonrpc":"2.0","id":1,"method":{}}',
    ]) {
      const m = read(text);
      assert.equal(m.ok === false && m.code, 'mcp_message_invalid', text);
    }
    assert.deepEqual(read('{"jsonrpc":"2.0",'), { ok: false, code: 'mcp_message_invalid', rpc: -32700, id: null });
    assert.equal(readMessage(Buffer.from([0x7b, 0xff, 0x7d])).ok, false);
  });

  it('refuses a tools/call without a string params.name, echoing the request id', () => {
    for (const params of [
      '{"name":1}',
      '{"name":null}',
      '{"name":""}',
      '[]',
      '"x"',
      '{}',
      '{"name":"a b"}',
      '{"name":"echo\\u0000"}',
      '{"name":"é"}',
    ]) {
      const m = read(`{"jsonrpc":"2.0","id":"r-1","method":"tools/call","params":${params}}`);
      assert.deepEqual(m, { ok: false, code: 'mcp_tool_name_invalid', rpc: -32602, id: 'r-1' }, params);
    }
  });

  it('accepts application/json with parameters, nothing else', () => {
    assert.equal(isJsonContentType('application/json'), true);
    assert.equal(isJsonContentType('Application/JSON; charset=utf-8'), true);
    for (const v of [undefined, '', 'text/plain', 'application/json-seq', 'application/x-www-form-urlencoded'])
      assert.equal(isJsonContentType(v), false);
  });

  it('charset smuggling: refuses any charset but UTF-8, however it is written', () => {
    for (const v of ['application/json; charset="UTF-8"', 'application/json;charset=utf8', 'application/json; foo=bar'])
      assert.equal(isJsonContentType(v), true, v);
    for (const v of [
      'application/json; charset=utf-7',
      'application/json; charset=UTF-16LE',
      'application/json; charset = "utf-32"',
      'application/json; charset=utf-8; charset=utf-7',
      'application/json; charset=latin1',
      'application/json; charset="utf\\-7"',
      'application/json; charset=',
    ])
      assert.equal(isJsonContentType(v), false, v);
  });

  it('content-encoding smuggling: only identity (or none) passes', () => {
    for (const v of [undefined, '', 'identity', ' Identity ']) assert.equal(isIdentityEncoding(v), true, String(v));
    for (const v of ['gzip', 'br', 'deflate', 'x-gzip', 'identity, gzip', 'gzip, identity', 'zstd'])
      assert.equal(isIdentityEncoding(v), false, v);
  });
});
