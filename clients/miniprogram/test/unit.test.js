'use strict';

// Unit tests with a scripted `wx` (no server): what the real service cannot
// easily be made to do, such as header names in odd cases, HTTP-date
// Retry-After, or a wx.login that fails for concurrent callers.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');

const { createClient, WxLoginError, DEFAULT_STORAGE_KEY } = require('..');
const { scriptedWx } = require('./scripted-wx');

const loginAnswer = (token = 'tok-1') => ({
  statusCode: 200,
  data: { token, expires_in: 7200, created: false, user: { id: 7, openid: 'o' } },
});

describe('createClient', () => {
  it('needs a baseUrl and a wx', () => {
    assert.throws(() => createClient({}), TypeError);
    assert.throws(() => createClient({ baseUrl: 'https://x.test' }), TypeError);
  });

  it('falls back on the global wx', async () => {
    const wx = scriptedWx({ route: () => loginAnswer() });
    globalThis.wx = wx;
    try {
      const client = createClient({ baseUrl: 'https://x.test/' });
      await client.login();
      assert.equal(wx.loginCalls, 1);
      assert.equal(wx.requests[0].url, 'https://x.test/v1/login');
      assert.equal(wx.storage.get(DEFAULT_STORAGE_KEY), 'tok-1');
    } finally {
      delete globalThis.wx;
    }
  });

  it('sends appid and the default timeout', async () => {
    const wx = scriptedWx({ route: () => loginAnswer() });
    const client = createClient({ baseUrl: 'https://x.test', wx, appid: 'wxabc', timeout: 1234 });
    await client.login();
    assert.deepEqual(wx.requests[0].data, { code: 'c0de', appid: 'wxabc' });
    assert.equal(wx.requests[0].method, 'POST');
    assert.equal(wx.requests[0].timeout, 1234);
  });
});

describe('errors from responses', () => {
  it('reads Retry-After and x-request-id whatever the case of their names', async () => {
    const wx = scriptedWx({
      route: () => ({
        statusCode: 429,
        header: { 'RETRY-AFTER': '17', 'X-Request-ID': 'req-42' },
        data: { error: { code: 'rate_limited', message: 'slow down' } },
      }),
    });
    const client = createClient({ baseUrl: 'https://x.test', wx });
    await assert.rejects(client.login(), (error) => {
      assert.ok(error instanceof WxLoginError);
      assert.equal(error.code, 'rate_limited');
      assert.equal(error.status, 429);
      assert.equal(error.message, 'slow down');
      assert.equal(error.retryAfter, 17);
      assert.equal(error.requestId, 'req-42');
      return true;
    });
  });

  it('reads an HTTP-date Retry-After as seconds from now', async () => {
    const when = new Date(Date.now() + 30_000).toUTCString();
    const wx = scriptedWx({
      route: () => ({ statusCode: 503, header: { 'retry-after': when }, data: { error: { code: 'wechat_busy', message: 'm' } } }),
    });
    const client = createClient({ baseUrl: 'https://x.test', wx });
    await assert.rejects(client.login(), (error) => {
      assert.ok(error.retryAfter >= 28 && error.retryAfter <= 31, String(error.retryAfter));
      return true;
    });
  });

  it('parses a wxlogin error body that came as a string (dataType text)', async () => {
    const wx = scriptedWx({
      route: () => ({ statusCode: 401, data: '{"error":{"code":"invalid_code","message":"no"}}' }),
    });
    const client = createClient({ baseUrl: 'https://x.test', wx });
    await assert.rejects(client.login(), { name: 'WxLoginError', code: 'invalid_code', status: 401, message: 'no' });
  });

  it('a 2xx login answer without a token is invalid_response', async () => {
    const wx = scriptedWx({ route: () => ({ statusCode: 200, data: '<html>captive portal</html>' }) });
    const client = createClient({ baseUrl: 'https://x.test', wx });
    await assert.rejects(client.login(), { code: 'invalid_response', status: 200 });
    assert.equal(client.isLoggedIn(), false);
  });
});

describe('single-flight login', () => {
  it('concurrent callers share one failed login, and the next call tries again', async () => {
    const wx = scriptedWx({ route: () => loginAnswer(), loginFails: true });
    const client = createClient({ baseUrl: 'https://x.test', wx });
    const results = await Promise.allSettled([client.request('/a'), client.request('/b'), client.login()]);
    assert.equal(wx.loginCalls, 1);
    for (const result of results) {
      assert.equal(result.status, 'rejected');
      assert.equal(result.reason.code, 'wx_login_failed');
      assert.equal(result.reason.status, 0);
    }
    assert.equal(wx.requests.length, 0);
    await assert.rejects(client.login(), { code: 'wx_login_failed' });
    assert.equal(wx.loginCalls, 2);
  });

  it('a request made while a login is under way waits for its token', async () => {
    let n = 0;
    const wx = scriptedWx({
      route: (params) => {
        if (params.url.endsWith('/v1/login')) return loginAnswer(`tok-${++n}`);
        return { statusCode: 200, data: { auth: params.header.Authorization } };
      },
    });
    wx.storage.set(DEFAULT_STORAGE_KEY, 'tok-old');
    const client = createClient({ baseUrl: 'https://x.test', wx });
    const login = client.login();
    const response = await client.request('/x');
    await login;
    assert.equal(response.data.auth, 'Bearer tok-1');
  });
});

describe('request()', () => {
  it('replaces a caller\'s Authorization header (any case) and keeps the others', async () => {
    const wx = scriptedWx({ route: () => ({ statusCode: 200, data: {} }) });
    wx.storage.set(DEFAULT_STORAGE_KEY, 'tok');
    const client = createClient({ baseUrl: 'https://x.test/base', wx });
    await client.request({ url: 'items', method: 'post', header: { authorization: 'Basic x', 'X-Team': '1' }, data: { a: 1 } });
    const sent = wx.requests[0];
    assert.equal(sent.url, 'https://x.test/base/items');
    assert.equal(sent.method, 'POST');
    assert.deepEqual(sent.header, { 'X-Team': '1', Authorization: 'Bearer tok' });
    assert.deepEqual(sent.data, { a: 1 });
    assert.equal(sent.auth, undefined);
  });

  it('never sends the token to another origin, nor logs in for it', async () => {
    const wx = scriptedWx({ route: () => ({ statusCode: 200, data: 'ok' }) });
    const client = createClient({ baseUrl: 'https://api.x.test', wx });
    const response = await client.request({ url: 'https://cdn.other.test/file.json' });
    assert.equal(response.data, 'ok');
    assert.equal(wx.loginCalls, 0);
    assert.equal(wx.requests[0].header.Authorization, undefined);
    // The same origin, absolute: authenticated.
    wx.storage.set(DEFAULT_STORAGE_KEY, 'tok');
    await client.request({ url: 'HTTPS://API.X.TEST/v1/me' });
    assert.equal(wx.requests[1].header.Authorization, 'Bearer tok');
  });

  it('resolves with {statusCode, data, header} for any 2xx', async () => {
    const wx = scriptedWx({ route: () => ({ statusCode: 201, data: { id: 1 }, header: { Location: '/x/1' }, cookies: [] }) });
    wx.storage.set(DEFAULT_STORAGE_KEY, 'tok');
    const client = createClient({ baseUrl: 'https://x.test', wx });
    assert.deepEqual(await client.request('/x'), { statusCode: 201, data: { id: 1 }, header: { Location: '/x/1' } });
  });

  it('a network failure is network_error and keeps the token', async () => {
    const wx = scriptedWx({ route: () => ({ fail: 'request:fail timeout' }) });
    wx.storage.set(DEFAULT_STORAGE_KEY, 'tok');
    const client = createClient({ baseUrl: 'https://x.test', wx });
    await assert.rejects(client.me(), { code: 'network_error', status: 0, message: 'request:fail timeout' });
    assert.equal(client.getToken(), 'tok');
    assert.equal(wx.loginCalls, 0);
  });

  it('a 409 session_key_stale from any call logs in again even if that login fails, and rejects with the 409', async () => {
    const wx = scriptedWx({
      route: (params) => {
        if (params.url.endsWith('/v1/login')) return { statusCode: 503, data: { error: { code: 'wechat_busy', message: 'busy' } } };
        return { statusCode: 409, data: { error: { code: 'session_key_stale', message: 'stale' } } };
      },
    });
    wx.storage.set(DEFAULT_STORAGE_KEY, 'tok');
    const client = createClient({ baseUrl: 'https://x.test', wx });
    await assert.rejects(client.bindPhone({ encryptedData: 'e', iv: 'i' }), { code: 'session_key_stale', status: 409 });
    assert.equal(wx.loginCalls, 1);
    // The stale token is gone: the next call logs in first.
    assert.equal(client.isLoggedIn(), false);
  });
});

describe('logout()', () => {
  it('forgets the token even when the network fails, and says so', async () => {
    const wx = scriptedWx({ route: () => ({ fail: 'request:fail' }) });
    wx.storage.set(DEFAULT_STORAGE_KEY, 'tok');
    const client = createClient({ baseUrl: 'https://x.test', wx });
    await assert.rejects(client.logout(), { code: 'network_error' });
    assert.equal(client.isLoggedIn(), false);
    assert.equal(wx.loginCalls, 0);
  });

  it('a 5xx is reported, the token is forgotten', async () => {
    const wx = scriptedWx({
      route: () => ({ statusCode: 503, data: { error: { code: 'service_unavailable', message: 'x' } }, header: { 'Retry-After': '1' } }),
    });
    wx.storage.set(DEFAULT_STORAGE_KEY, 'tok');
    const client = createClient({ baseUrl: 'https://x.test', wx });
    await assert.rejects(client.logout(), { code: 'service_unavailable', status: 503, retryAfter: 1 });
    assert.equal(client.isLoggedIn(), false);
  });
});

describe('sessions', () => {
  it('lists, ends one by its id, and logs out everywhere', async () => {
    const wx = scriptedWx({
      route: (params) => {
        if (params.url.endsWith('/v1/me/sessions')) {
          return { statusCode: 200, data: { sessions: [{ id: 'a1', current: true }] } };
        }
        return { statusCode: 204, data: '' };
      },
    });
    wx.storage.set(DEFAULT_STORAGE_KEY, 'tok');
    const client = createClient({ baseUrl: 'https://x.test', wx });
    assert.deepEqual(await client.sessions(), [{ id: 'a1', current: true }]);
    await client.endSession('a/1');
    assert.equal(wx.requests[1].method, 'DELETE');
    assert.equal(wx.requests[1].url, 'https://x.test/v1/me/sessions/a%2F1');
    await client.logout({ all: true });
    assert.equal(wx.requests[2].url, 'https://x.test/v1/logout');
    assert.deepEqual(wx.requests[2].data, { all: true });
    assert.equal(client.isLoggedIn(), false);
    await assert.rejects(client.endSession(''), TypeError);
  });

  it('deletes the account and forgets the token', async () => {
    const wx = scriptedWx({ route: () => ({ statusCode: 204, data: '' }) });
    wx.storage.set(DEFAULT_STORAGE_KEY, 'tok');
    const client = createClient({ baseUrl: 'https://x.test', wx });
    await client.deleteAccount();
    assert.equal(wx.requests[0].method, 'DELETE');
    assert.equal(wx.requests[0].url, 'https://x.test/v1/me');
    assert.equal(client.isLoggedIn(), false);
  });
});

describe('argument checks', () => {
  it('saveProfile and bindPhone refuse what cannot be sent', async () => {
    const wx = scriptedWx({ route: () => ({ statusCode: 200, data: {} }) });
    const client = createClient({ baseUrl: 'https://x.test', wx });
    await assert.rejects(client.saveProfile({ iv: 'x' }), TypeError);
    await assert.rejects(client.bindPhone(''), TypeError);
    await assert.rejects(client.bindPhone({ iv: 'x' }), TypeError);
    await assert.rejects(client.request({}), TypeError);
    assert.equal(wx.requests.length, 0);
    assert.equal(wx.loginCalls, 0);
  });
});
