import assert from 'node:assert/strict';
import { it } from 'node:test';
import { isPublicWebhook, refusedPushUrl } from '../../../src/gateway/a2a/push.ts';

it('isPublicWebhook: public http(s) addresses pass, internal ones and other parsers’ readings are refused', () => {
  for (const u of ['https://a.example/hook', 'http://8.8.8.8/', 'https://[2606:4700::1]/x', 'https://a.example:8443/h?x=1'])
    assert.ok(isPublicWebhook(u), u);
  for (const u of [
    'http://127.1/',
    'http://[::ffff:8.8.8.8]/',
    'http://[fe80::1]/',
    'http://100.64.0.1/',
    'http://LOCALHOST./',
    'http://metadata/',
    'http://svc.internal/',
    'http://a.example/\u0000',
    'https://a.example /',
    'ftp://a.example/',
    'https://user:pw@a.example/',
    42,
    '',
  ])
    assert.ok(!isPublicWebhook(u), String(u));
});

it('refusedPushUrl: reads url in push notification configs only (not a file part’s url elsewhere)', () => {
  const part = { method: 'message/send', params: { message: { parts: [{ url: 'http://127.0.0.1/x' }] } } };
  assert.equal(refusedPushUrl(part, '/agent'), false);
  assert.equal(
    refusedPushUrl(
      { ...part, params: { ...part.params, configuration: { push_notification_config: { URL: 'http://10.0.0.1/' } } } },
      '/agent',
    ),
    true,
  );
  assert.equal(refusedPushUrl({ config: { url: 'http://10.0.0.1/' } }, '/v1/tasks/t/pushNotificationConfigs'), true);
  assert.equal(
    refusedPushUrl([{ method: 'CreateTaskPushNotificationConfig', params: { config: { url: 'http://[::1]/' } } }], '/agent'),
    true,
  );
});
