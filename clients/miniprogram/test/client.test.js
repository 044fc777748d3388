'use strict';

// Integration tests: the client against the real wxlogin binary (one process
// for this whole file, per-test openids). See harness.js.

const test = require('node:test');
const { describe, before, after } = test;

/** Every test gets a deadline: a retry loop fails the test instead of hanging the run. */
const it = (name, fn) => test.it(name, { timeout: 20_000 }, fn);
const assert = require('node:assert/strict');

const { createClient, WxLoginError, DEFAULT_STORAGE_KEY } = require('..');
const { gatewayFetch, makeWx, mintCode, simPost, startService, uniqueOpenid } = require('./harness');

let service;

before(async () => {
  service = await startService();
});

after(async () => {
  if (service) await service.stop();
});

/** A client with a fresh `wx` for a fresh openid (unless given). */
function setup(options = {}) {
  const openid = options.openid || uniqueOpenid();
  const wx = makeWx(service, { ...options, openid });
  const client = createClient({ baseUrl: service.gateway, wx, ...(options.client || {}) });
  return { openid, wx, client };
}

/** Sealed user data for `openid`, with the simulator's current session_key. */
function seal(openid, data) {
  return simPost(service.sim, '/sim/seal', { openid, data });
}

/** An `assert.rejects` predicate for a WxLoginError. */
function wxError(code, status, extra) {
  return (error) => {
    assert.ok(error instanceof WxLoginError, `expected a WxLoginError, got ${error && error.stack}`);
    assert.ok(error instanceof Error);
    assert.equal(error.name, 'WxLoginError');
    assert.equal(error.code, code, `code (message: ${error.message})`);
    assert.equal(error.status, status);
    assert.equal(typeof error.message, 'string');
    if (extra) extra(error);
    return true;
  };
}

const count = (wx, pathname) => wx.requests.filter((r) => new URL(r.url).pathname === pathname).length;

describe('first use and sessions', () => {
  it('1. request() with empty storage logs in once, stores the token and answers the user', async () => {
    const { openid, wx, client } = setup();
    assert.equal(client.isLoggedIn(), false);
    assert.equal(client.getToken(), null);

    const response = await client.request({ url: '/v1/me' });

    assert.equal(response.statusCode, 200);
    assert.equal(response.data.user.openid, openid);
    assert.equal(typeof response.data.user.id, 'number');
    assert.equal(wx.loginCalls, 1);
    const stored = wx.storage.get(DEFAULT_STORAGE_KEY);
    assert.equal(typeof stored, 'string');
    assert.ok(stored.length >= 32, 'a real token is stored');
    assert.equal(client.getToken(), stored);
    assert.equal(client.isLoggedIn(), true);
    // The token is real: the gateway knows it.
    const direct = await gatewayFetch(service, '/v1/me', { token: stored });
    assert.equal(direct.status, 200);
    assert.equal(direct.data.user.openid, openid);
    // It went out as a bearer token, and the login went first.
    assert.deepEqual(
      wx.requests.map((r) => `${r.method} ${new URL(r.url).pathname}`),
      ['POST /v1/login', 'GET /v1/me']
    );
    assert.equal(wx.requests[1].header.Authorization, `Bearer ${stored}`);
    // Later calls use the stored token: no more logins.
    const user = await client.me();
    assert.equal(user.openid, openid);
    assert.equal(wx.loginCalls, 1);
  });

  it('login() resolves to the answer without the token, and honours storageKey', async () => {
    const { openid, wx, client } = setup({ client: { storageKey: 'my.key' } });
    const answer = await client.login();
    assert.equal(answer.user.openid, openid);
    assert.equal(answer.created, true);
    assert.equal(typeof answer.expires_in, 'number');
    assert.ok(answer.expires_in > 0);
    assert.equal('token' in answer, false);
    assert.equal(wx.storage.has(DEFAULT_STORAGE_KEY), false);
    assert.equal(wx.storage.get('my.key'), client.getToken());
    // A returning user.
    const again = await client.login();
    assert.equal(again.created, false);
    assert.equal(again.user.id, answer.user.id);
    assert.equal(wx.loginCalls, 2);
  });

  it('2. a session ended behind the client\'s back: 401 invalid_token, one login, one retry', async () => {
    const { openid, wx, client } = setup();
    await client.login();
    const oldToken = client.getToken();
    const ended = await gatewayFetch(service, '/v1/logout', { method: 'POST', token: oldToken });
    assert.equal(ended.status, 204);

    const response = await client.request('/v1/me');

    assert.equal(response.statusCode, 200);
    assert.equal(response.data.user.openid, openid);
    assert.equal(wx.loginCalls, 2);
    const newToken = client.getToken();
    assert.ok(newToken);
    assert.notEqual(newToken, oldToken);
    assert.equal(count(wx, '/v1/me'), 2, 'the call, then its one retry');
    assert.equal(wx.requests.at(-1).header.Authorization, `Bearer ${newToken}`);
  });

  it('concurrent calls that all meet a dead token share one new login', async () => {
    const { wx, client } = setup();
    await client.login();
    const oldToken = client.getToken();
    assert.equal((await gatewayFetch(service, '/v1/logout', { method: 'POST', token: oldToken })).status, 204);

    const responses = await Promise.all(Array.from({ length: 5 }, () => client.request('/v1/me')));

    assert.equal(responses.length, 5);
    for (const response of responses) assert.equal(response.statusCode, 200);
    assert.equal(wx.loginCalls, 2, 'one initial login, one shared re-login');
    assert.notEqual(client.getToken(), oldToken);
  });

  it('a 401 that arrives after another caller already renewed the token just retries with the new one', async () => {
    let meCalls = 0;
    const { wx, client } = setup({
      // The second call's 401 comes back late: after the first call's re-login and retry.
      delay: (params) => (new URL(params.url).pathname === '/v1/me' && ++meCalls === 2 ? 500 : 0),
    });
    await client.login();
    const oldToken = client.getToken();
    assert.equal((await gatewayFetch(service, '/v1/logout', { method: 'POST', token: oldToken })).status, 204);

    const [first, second] = await Promise.all([client.request('/v1/me'), client.request('/v1/me')]);

    assert.equal(first.statusCode, 200);
    assert.equal(second.statusCode, 200);
    assert.equal(wx.loginCalls, 2, 'the late 401 did not log in again');
    const newToken = client.getToken();
    const mes = wx.requests.filter((r) => new URL(r.url).pathname === '/v1/me');
    assert.deepEqual(
      mes.map((r) => [r.header.Authorization, r.statusCode]),
      [
        [`Bearer ${oldToken}`, 401],
        [`Bearer ${oldToken}`, 401],
        [`Bearer ${newToken}`, 200],
        [`Bearer ${newToken}`, 200],
      ]
    );
  });

  it('3. ten concurrent requests with no token share exactly one wx.login', async () => {
    const { openid, wx, client } = setup();

    const responses = await Promise.all(Array.from({ length: 10 }, () => client.request({ url: '/v1/me' })));

    assert.equal(wx.loginCalls, 1);
    assert.equal(count(wx, '/v1/login'), 1);
    assert.equal(responses.length, 10);
    const ids = new Set();
    for (const response of responses) {
      assert.equal(response.statusCode, 200);
      assert.equal(response.data.user.openid, openid);
      ids.add(response.data.user.id);
    }
    assert.equal(ids.size, 1);
    // Explicit login() calls in parallel share one too.
    const [a, b, c] = await Promise.all([client.login(), client.login(), client.login()]);
    assert.equal(wx.loginCalls, 2);
    assert.equal(a, b);
    assert.equal(b, c);
  });
});

describe('session_key_stale (409)', () => {
  it('4. a newer login of the same user elsewhere: 409, re-login at once, fresh data succeeds', async () => {
    const { openid, wx, client } = setup();
    await client.login();
    const oldToken = client.getToken();

    // The same WeChat user logs in on another device.
    const code = await mintCode(service.sim, openid);
    const elsewhere = await gatewayFetch(service, '/v1/login', { method: 'POST', body: { code } });
    assert.equal(elsewhere.status, 200);
    const otherToken = elsewhere.data.token;
    // The client's session is still alive for everything but decryption.
    assert.equal((await gatewayFetch(service, '/v1/me', { token: oldToken })).status, 200);

    // Data WeChat seals now uses the newest session_key (the other device's).
    const sealed = await seal(openid, { nickName: 'Elsewhere' });
    // The other device's session takes it: the data itself is fine.
    const control = await gatewayFetch(service, '/v1/me/profile', { method: 'POST', token: otherToken, body: sealed });
    assert.equal(control.status, 200, JSON.stringify(control.data));
    assert.equal(control.data.user.nickname, 'Elsewhere');

    await assert.rejects(
      client.saveProfile(sealed),
      wxError('session_key_stale', 409, (error) => {
        assert.match(error.requestId, /\S/, 'x-request-id is surfaced');
        assert.equal(error.data.error.code, 'session_key_stale');
      })
    );
    // The client logged in again at once: WeChat's next sealed data uses the
    // key the server holds for this new session.
    assert.equal(wx.loginCalls, 2);
    const newToken = client.getToken();
    assert.ok(newToken);
    assert.notEqual(newToken, oldToken);

    const nickname = `Alice ${Math.random().toString(36).slice(2, 8)}`;
    const fresh = await seal(openid, { nickName: nickname, gender: 2, city: 'Hangzhou', language: 'zh_CN' });
    const user = await client.saveProfile(fresh);
    assert.equal(user.openid, openid);
    assert.equal(user.nickname, nickname);
    assert.equal(user.city, 'Hangzhou');
    assert.equal(user.gender, 2);
    assert.equal(wx.loginCalls, 2, 'no further login');
    assert.equal((await client.me()).nickname, nickname);

    // And now it is the other device whose key is stale.
    const otherStale = await gatewayFetch(service, '/v1/me/profile', {
      method: 'POST',
      token: otherToken,
      body: await seal(openid, { nickName: 'Late' }),
    });
    assert.equal(otherStale.status, 409);
    assert.equal(otherStale.data.error.code, 'session_key_stale');
  });

  it('a wx.login whose code never reached the server (WeChat replaced the key): 409 via checkSessionKey', async () => {
    const { openid, wx, client } = setup();
    await client.login();
    const oldToken = client.getToken();
    // WeChat rotates the session_key on every wx.login, even one whose code
    // is never redeemed with us.
    await mintCode(service.sim, openid);
    const sealed = await seal(openid, { nickName: 'Rotated' });

    await assert.rejects(client.saveProfile(sealed), wxError('session_key_stale', 409));
    assert.equal(wx.loginCalls, 2);
    assert.notEqual(client.getToken(), oldToken);

    const user = await client.saveProfile(await seal(openid, { nickName: 'Fresh' }));
    assert.equal(user.nickname, 'Fresh');
  });

  it('data that does not decrypt with a current key is 422, and no login happens', async () => {
    const { openid, wx, client } = setup();
    await client.login();
    const token = client.getToken();
    const sealed = await seal(openid, { nickName: 'Bob' });
    // Corrupt the ciphertext: the key is current, the data is not WeChat's.
    const bytes = Buffer.from(sealed.encryptedData, 'base64');
    bytes[0] ^= 0xff;
    await assert.rejects(
      client.saveProfile({ encryptedData: bytes.toString('base64'), iv: sealed.iv }),
      wxError('invalid_encrypted_data', 422)
    );
    assert.equal(wx.loginCalls, 1);
    assert.equal(client.getToken(), token);
  });
});

describe('logout', () => {
  it('5. logout(): 204, storage cleared, the old token is dead, a later request logs in again', async () => {
    const { openid, wx, client } = setup();
    await client.login();
    const token = client.getToken();

    const result = await client.logout();

    assert.equal(result, undefined);
    const logoutCall = wx.requests.find((r) => new URL(r.url).pathname === '/v1/logout');
    assert.ok(logoutCall, 'a logout request went out');
    assert.equal(logoutCall.header.Authorization, `Bearer ${token}`);
    assert.equal(logoutCall.statusCode, 204);
    assert.equal(wx.storage.has(DEFAULT_STORAGE_KEY), false);
    assert.equal(client.isLoggedIn(), false);
    const direct = await gatewayFetch(service, '/v1/me', { token });
    assert.equal(direct.status, 401);
    assert.equal(direct.data.error.code, 'invalid_token');
    assert.equal(direct.headers.get('www-authenticate'), 'Bearer');

    // Logging out again: nothing to end, nothing sent, no login.
    const requestsBefore = wx.requests.length;
    await client.logout();
    assert.equal(wx.requests.length, requestsBefore);
    assert.equal(wx.loginCalls, 1);

    const response = await client.request('/v1/me');
    assert.equal(response.data.user.openid, openid);
    assert.equal(wx.loginCalls, 2);
    assert.ok(client.getToken());
    assert.notEqual(client.getToken(), token);
  });

  it('logout() with a token the server already ended: 401 is fine, storage cleared, no login', async () => {
    const { wx, client } = setup();
    await client.login();
    const token = client.getToken();
    assert.equal((await gatewayFetch(service, '/v1/logout', { method: 'POST', token })).status, 204);

    await client.logout();

    const logoutCalls = wx.requests.filter((r) => new URL(r.url).pathname === '/v1/logout');
    assert.equal(logoutCalls.length, 1);
    assert.equal(logoutCalls[0].statusCode, 401);
    assert.equal(client.isLoggedIn(), false);
    assert.equal(wx.loginCalls, 1);
  });
});

describe('errors', () => {
  it('6a. a code WeChat does not know: WxLoginError invalid_code, 401, nothing stored', async () => {
    const { wx, client } = setup({ code: 'bogus' });
    await assert.rejects(
      client.login(),
      wxError('invalid_code', 401, (error) => {
        assert.equal(typeof error.requestId, 'string');
        assert.ok(error.requestId.length > 0);
        assert.equal(error.retryAfter, undefined);
      })
    );
    assert.equal(wx.loginCalls, 1);
    assert.equal(client.isLoggedIn(), false);
    // request() surfaces the login's failure, with no retry loop.
    await assert.rejects(client.request('/v1/me'), wxError('invalid_code', 401));
    assert.equal(wx.loginCalls, 2);
    assert.equal(count(wx, '/v1/me'), 0);
  });

  it('6b. a second 401 invalid_token after the retry is surfaced, not looped', async () => {
    const bogus = 'A'.repeat(43);
    const { wx, client } = setup({
      // A token that is always refused: whatever the client sends to /v1/me.
      intercept: (params) => {
        if (new URL(params.url).pathname === '/v1/me') params.header.Authorization = `Bearer ${bogus}`;
        return params;
      },
    });

    await assert.rejects(client.request('/v1/me'), wxError('invalid_token', 401));

    assert.equal(wx.loginCalls, 2, 'the first login, then one re-login');
    assert.equal(count(wx, '/v1/me'), 2, 'the call and its one retry');
    assert.equal(count(wx, '/v1/login'), 2);
  });

  it('6c. a second 401 missing_token after the retry is surfaced too', async () => {
    const { wx, client } = setup({
      intercept: (params) => {
        if (new URL(params.url).pathname === '/v1/me') {
          for (const name of Object.keys(params.header)) {
            if (name.toLowerCase() === 'authorization') delete params.header[name];
          }
        }
        return params;
      },
    });
    await assert.rejects(client.me(), wxError('missing_token', 401));
    assert.equal(wx.loginCalls, 2);
    assert.equal(count(wx, '/v1/me'), 2);
  });

  it('6d. WeChat rate-limits the login: 429 rate_limited with retryAfter from Retry-After', async () => {
    const { wx, client } = setup();
    await simPost(service.sim, '/sim/faults', { errcode: 45011, endpoint: 'jscode2session', times: 1 });
    await assert.rejects(
      client.login(),
      wxError('rate_limited', 429, (error) => {
        assert.equal(error.retryAfter, 60);
      })
    );
    assert.equal(client.isLoggedIn(), false);
    // Nothing sticks: the next attempt logs in.
    const answer = await client.login();
    assert.equal(answer.user.openid, wx.openid);
    assert.equal(wx.loginCalls, 2);
  });

  it('6e. WeChat busy: 503 wechat_busy with retryAfter', async () => {
    const { client } = setup();
    await simPost(service.sim, '/sim/faults', { errcode: -1, endpoint: 'jscode2session', times: 1 });
    await assert.rejects(
      client.login(),
      wxError('wechat_busy', 503, (error) => {
        assert.equal(typeof error.retryAfter, 'number');
        assert.ok(error.retryAfter >= 1);
      })
    );
  });

  it('6f. wx.login fails: wx_login_failed, status 0, nothing sent', async () => {
    const { wx, client } = setup({ loginFails: true });
    await assert.rejects(
      client.request('/v1/me'),
      wxError('wx_login_failed', 0, (error) => {
        assert.match(error.message, /login:fail/);
      })
    );
    assert.equal(wx.requests.length, 0);
  });

  it('6g. wx.request fails (nothing listens): network_error, status 0', async () => {
    const { freePort } = require('./harness');
    const port = await freePort();
    const { client } = setup({ client: { baseUrl: `http://127.0.0.1:${port}` } });
    await assert.rejects(
      client.login(),
      wxError('network_error', 0, (error) => {
        assert.match(error.message, /request:fail/);
      })
    );
  });

  it('a wxlogin error on a wxlogin path rejects typed, without a login retry', async () => {
    const { wx, client } = setup();
    await client.login();
    await assert.rejects(client.request('/v1/nope'), wxError('not_found', 404));
    await assert.rejects(
      client.request({ url: '/v1/me/profile', method: 'PUT', data: { avatar_url: 'ftp://x' } }),
      wxError('invalid_request', 400)
    );
    assert.equal(wx.loginCalls, 1);
  });
});

describe('profile and phone', () => {
  it('7a. updateProfile() round-trips nickname and avatar_url', async () => {
    const { openid, wx, client } = setup();
    const avatarUrl = `https://example.com/avatar/${openid}.png`;

    const user = await client.updateProfile({ nickname: 'Carol', avatarUrl });

    assert.equal(wx.loginCalls, 1);
    assert.equal(user.openid, openid);
    assert.equal(user.nickname, 'Carol');
    assert.equal(user.avatar_url, avatarUrl);
    const sent = wx.requests.find((r) => r.method === 'PUT');
    assert.deepEqual(sent.data, { nickname: 'Carol', avatar_url: avatarUrl });
    const again = await client.me();
    assert.equal(again.nickname, 'Carol');
    assert.equal(again.avatar_url, avatarUrl);
    // Only the nickname: the avatar stays.
    const renamed = await client.updateProfile({ nickname: 'Caroline' });
    assert.equal(renamed.nickname, 'Caroline');
    assert.equal(renamed.avatar_url, avatarUrl);
  });

  it('7b. bindPhone(code) round-trips the phone number', async () => {
    const { openid, client } = setup();
    const minted = await simPost(service.sim, '/sim/phone-codes', {});
    assert.equal(typeof minted.code, 'string');

    const answer = await client.bindPhone(minted.code);

    assert.deepEqual(answer.phone, {
      phone_number: minted.phone_number,
      pure_phone_number: minted.pure_phone_number,
      country_code: minted.country_code,
    });
    assert.equal(answer.user.openid, openid);
    assert.equal(answer.user.pure_phone_number, minted.pure_phone_number);
    const user = await client.me();
    assert.equal(user.phone_number, minted.phone_number);
    assert.equal(user.phone_country_code, minted.country_code);
    // A used phone code is refused, typed.
    await assert.rejects(client.bindPhone(minted.code), wxError('phone_code_used', 400));
  });

  it('bindPhone({encryptedData, iv}) (legacy) round-trips too', async () => {
    const { openid, client } = setup();
    await client.login();
    const sealed = await seal(openid, { phoneNumber: '+852 61234567', purePhoneNumber: '61234567', countryCode: '852' });

    const answer = await client.bindPhone(sealed);

    assert.equal(answer.phone.pure_phone_number, '61234567');
    assert.equal(answer.phone.country_code, '852');
    assert.equal(answer.user.phone_number, '+852 61234567');
  });
});

describe('the team\'s API behind the gateway (proxy mode)', () => {
  it('request() to a proxied path sends the token; the upstream sees the identity, not the token', async () => {
    const { openid, wx, client } = setup();
    const response = await client.request({ url: '/api/whoami', data: { page: 2 } });
    assert.equal(response.statusCode, 200);
    assert.equal(response.data.openid, openid);
    assert.equal(response.data.authorization, null);
    assert.equal(response.data.query, '?page=2');
    assert.equal(wx.loginCalls, 1);
    const empty = await client.request({ url: '/api/empty', method: 'POST', data: {} });
    assert.equal(empty.statusCode, 204);
    assert.equal(empty.data, '');
  });

  it('a non-2xx answer without a wxlogin body rejects as http_<status>, with the body, and no retry', async () => {
    const { wx, client } = setup();
    await assert.rejects(
      client.request('/api/teapot'),
      wxError('http_418', 418, (error) => {
        assert.equal(error.data, 'I am a teapot');
        assert.equal(error.header['Content-Type'], 'text/plain');
      })
    );
    await assert.rejects(
      client.request('/api/missing'),
      wxError('http_404', 404, (error) => {
        assert.deepEqual(error.data, { message: 'no such thing upstream' });
      })
    );
    assert.equal(wx.loginCalls, 1);
  });

  it('auth: false sends no token and never logs in', async () => {
    const { wx, client } = setup();
    const response = await client.request({ url: '/healthz', auth: false });
    assert.equal(response.statusCode, 200);
    assert.equal(wx.loginCalls, 0);
    await assert.rejects(client.request({ url: '/v1/me', auth: false }), wxError('missing_token', 401));
    assert.equal(wx.loginCalls, 0);
  });
});
