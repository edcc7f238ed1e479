/**
 * A2A gateway fixtures shared by the task-binding tests: an upstream agent on loopback, a gateway
 * binding tasks in front of it, two principals (Alice and Bob), and their JSON-RPC calls.
 */
import { randomUUID } from 'node:crypto';
import { startA2aGateway, startUpstream, type TestGateway, token, type Upstream, type UpstreamHandler } from '../helpers.ts';

/** The token endpoint the A2A routes under test advertise. */
export const TOKEN_URL = 'https://tessera.example.com/oauth/token';

export interface A2aPrincipals {
  readonly upstream: Upstream;
  readonly gw: TestGateway;
  /** Bearer tokens (agent:invoke) of the principals `alice` and `bob`. */
  readonly alice: string;
  readonly bob: string;
  close(): Promise<void>;
}

/** An upstream answering with `handler`, a gateway binding A2A tasks on `/agent` in front of it, and tokens for Alice and Bob. */
export async function startA2aPrincipals(handler: UpstreamHandler): Promise<A2aPrincipals> {
  const upstream = await startUpstream(handler);
  const gw = await startA2aGateway(upstream.url, { token_url: TOKEN_URL });
  return {
    upstream,
    gw,
    alice: await token({ sub: 'alice', scope: 'agent:invoke' }),
    bob: await token({ sub: 'bob', scope: 'agent:invoke' }),
    close: async () => {
      await gw.close();
      await upstream.close();
    },
  };
}

/** A JSON POST to the gateway's A2A route as `bearer`: `body` JSON-encoded, or sent as it is when a string. */
export function postAgent(gw: TestGateway, bearer: string, body: unknown): Promise<Response> {
  return fetch(`${gw.url}/agent/`, {
    method: 'POST',
    headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

/** A user message's params (message/send, message/stream): one text part, `extra` members added to the message. */
export function userMessage(text: string, extra: Record<string, unknown> = {}) {
  return { message: { kind: 'message', role: 'user', messageId: randomUUID(), parts: [{ kind: 'text', text }], ...extra } };
}

// biome-ignore lint/suspicious/noExplicitAny: JSON-RPC answers under test
export const json = async (res: Response): Promise<any> => res.json();

export { assertRpcError, UPSTREAM_UNAVAILABLE } from '../helpers.ts';
