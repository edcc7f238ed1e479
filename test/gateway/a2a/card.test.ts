/** The extended-card reading of an A2A request body (src/gateway/a2a/card.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { readA2aBody } from '../../../src/gateway/a2a/card.ts';

const read = (text: string) => readA2aBody(Buffer.from(text));

describe('readA2aBody', () => {
  it('takes a call for the extended card under any spelling of `method` (case, NULs) and of its name', () => {
    for (const body of [
      '{"jsonrpc":"2.0","id":1,"method":"agent/getAuthenticatedExtendedCard"}',
      '{"jsonrpc":"2.0","id":1,"Method":"GetExtendedAgentCard"}',
      '{"jsonrpc":"2.0","id":1,"method\\u0000":" getextendedagentcard "}',
    ])
      assert.deepEqual(read(body), { ok: true, extendedCard: true, value: JSON.parse(body) }, body);
    const plain = '{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"id":"t"}}';
    assert.deepEqual(read(plain), { ok: true, extendedCard: false, value: JSON.parse(plain) });
  });

  it('extended-card look-alike: refuses a message spelling `method` twice, one naming the card (upstreams differ on which one they read)', () => {
    for (const body of [
      '{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"id":"t"},"Method":"agent/getAuthenticatedExtendedCard"}',
      '{"jsonrpc":"2.0","id":1,"Method":"GetExtendedAgentCard","method":"tasks/cancel","params":{"id":"t"}}',
      '{"jsonrpc":"2.0","id":1,"method":"message/send","method\\u0000":"GetExtendedAgentCard"}',
    ])
      assert.deepEqual(read(body), { ok: false, parse: false }, body);
  });
});
