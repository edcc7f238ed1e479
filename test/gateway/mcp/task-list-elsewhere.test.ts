/**
 * A task list (`result.tasks`) in an answer other than the one to a tasks/list (`mcp.list_tasks`):
 * refused, as before, and now audited, counted and told to the operator under its own reason
 * (`mcp_upstream_task_list_refused`, metric kind `task_list_refused`), not as a tools list that could
 * not be filtered. An upstream relaying its whole task list elsewhere is a leak attempt an operator
 * must be able to tell apart. A raw upstream answers what each test sets.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { AuditEvent } from '../../../src/audit/event.ts';
import { capturedLog, mcpRoute, requestEvents, startUpstream, type TestGateway, token, type Upstream } from '../helpers.ts';
import { ACCEPT, dataLines, RULES, startToolsGateway } from './helpers.ts';

describe('gateway: a task list outside a tasks/list answer is refused under its own reason (mcp.list_tasks)', () => {
  let upstream: Upstream;
  let gw: TestGateway;
  let type = 'application/json';
  let answer = '';
  const { lines: log, logger } = capturedLog();
  const leaked = 'task-of-another-principal';
  const taskList = (id: number | null) =>
    JSON.stringify({ jsonrpc: '2.0', id, result: { tasks: [{ taskId: leaked, status: 'working' }] } });

  before(async () => {
    upstream = await startUpstream((_req, res) => {
      res.writeHead(200, { 'content-type': type }).end(answer);
    });
    gw = await startToolsGateway([mcpRoute(upstream.url, RULES, { mcp: { list_tasks: true } })], { logger });
  });
  after(async () => {
    await gw?.close();
    await upstream?.close();
  });

  const auth = async (sub: string) => `Bearer ${await token({ sub, scope: 'mcp:use echo:use' })}`;
  const post = async (sub: string, id: number) =>
    fetch(`${gw.url}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: ACCEPT, authorization: await auth(sub) },
      body: JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'echo', arguments: {} } }),
    });
  const lastAudit = async (sub: string) => ((await requestEvents(gw)) as AuditEvent[]).filter((e) => e.subject === sub).at(-1);
  const told = (requestId: string | undefined) => log.filter((l) => l.request_id === requestId && l.level === 40);

  it('attack: a tools/call answered (JSON) with every principal’s task list: 502, audited mcp_upstream_task_list_refused, counted and logged as such', async () => {
    type = 'application/json';
    answer = taskList(7);
    const res = await post('leak-json', 7);
    assert.equal(res.status, 502);
    const text = await res.text();
    assert.ok(!text.includes(leaked));
    assert.equal((JSON.parse(text) as { id: unknown; error: { code: number } }).error.code, -32000);
    const e = await lastAudit('leak-json');
    assert.equal(e?.reason, 'mcp_upstream_task_list_refused');
    const lines = told(e?.request_id);
    assert.equal(lines.length, 1, JSON.stringify(log));
    assert.equal(lines[0]?.reason_id, 'mcp_upstream_task_list_refused');
    assert.equal(lines[0]?.kind, 'task_list_refused');
    assert.doesNotMatch(String(lines[0]?.msg), /tools list/);
    assert.ok(!JSON.stringify(lines).includes(leaked));
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    assert.match(metrics, /tessera_gateway_upstream_errors_total\{route="[^"]+",kind="task_list_refused"\} 1\b/);
  });

  it('attack: a task list in a response event of a POST’s stream (and a GET’s) is replaced by an error, recorded as detail.task_list', async () => {
    type = 'text/event-stream';
    answer = `data: ${taskList(8)}\n\n`;
    const res = await post('leak-sse', 8);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.ok(!text.includes(leaked));
    const data = JSON.parse(dataLines(text.split('\n\n')[0] as string).join('\n')) as { id: unknown; error: { code: number } };
    assert.deepEqual([data.id, data.error.code], [8, -32000]);
    const e = await lastAudit('leak-sse');
    assert.equal(e?.detail?.task_list, 'mcp_upstream_task_list_refused');
    assert.equal(e?.detail?.tools_list, undefined);
    assert.equal(told(e?.request_id)[0]?.reason_id, 'mcp_upstream_task_list_refused');

    const get = await fetch(`${gw.url}/mcp`, { headers: { authorization: await auth('leak-get'), accept: 'text/event-stream' } });
    assert.ok(!(await get.text()).includes(leaked));
    const g = await lastAudit('leak-get');
    assert.equal(g?.detail?.task_list, 'mcp_upstream_task_list_refused');
    assert.equal(told(g?.request_id)[0]?.kind, 'task_list_refused');
  });

  it('a tools list that cannot be filtered is still refused as mcp_tools_list_invalid', async () => {
    type = 'application/json';
    answer = JSON.stringify({ jsonrpc: '2.0', id: 9, result: { tools: 'not a list' } });
    const res = await post('bad-tools', 9);
    assert.equal(res.status, 502);
    await res.text();
    assert.equal((await lastAudit('bad-tools'))?.reason, 'mcp_tools_list_invalid');
  });
});
