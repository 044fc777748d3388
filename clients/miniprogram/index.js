'use strict';

// @wxlogin/miniprogram: the mini-program side of wxlogin.
//
// Plain ES2017 for WeChat's JavaScript engine: no Node API, no fetch, no
// dependency; it talks to the world through the `wx` object only
// (wx.login, wx.request, wx.setStorageSync / getStorageSync /
// removeStorageSync). See README.md and index.d.ts for the contract.

var DEFAULT_STORAGE_KEY = 'wxlogin.token';

/** The codes that mean "this token is no good": log in again and retry. */
var AUTH_FAILURES = { invalid_token: true, missing_token: true };

/**
 * Every failure this package reports.
 *
 * code:       wxlogin's error code (`invalid_code`, `invalid_token`,
 *             `session_key_stale`, ...), `http_<status>` for a non-2xx
 *             answer without a wxlogin error body, `network_error` when
 *             wx.request fails, `wx_login_failed` when wx.login fails,
 *             `invalid_response` for a 2xx answer that lacks what it must hold.
 * status:     the HTTP status, or 0 when no HTTP answer came.
 * retryAfter: seconds, from the Retry-After header, when present.
 * requestId:  the x-request-id response header, when present.
 * data:       the response body, when there was a response.
 * header:     the response headers, when there was a response.
 */
class WxLoginError extends Error {
  constructor(code, message, status, details) {
    super(message || code);
    this.name = 'WxLoginError';
    this.code = code;
    this.status = status || 0;
    this.retryAfter = undefined;
    this.requestId = undefined;
    if (details) {
      if (details.retryAfter !== undefined) this.retryAfter = details.retryAfter;
      if (details.requestId !== undefined) this.requestId = details.requestId;
      if (details.data !== undefined) this.data = details.data;
      if (details.header !== undefined) this.header = details.header;
    }
  }
}

/** The value of header `name` in `header`, whatever the case of its key. */
function headerValue(header, name) {
  if (!header || typeof header !== 'object') return undefined;
  var wanted = name.toLowerCase();
  var keys = Object.keys(header);
  for (var i = 0; i < keys.length; i++) {
    if (keys[i].toLowerCase() === wanted) {
      var value = header[keys[i]];
      if (Array.isArray(value)) value = value[0];
      return value === undefined || value === null ? undefined : String(value);
    }
  }
  return undefined;
}

/** Retry-After in seconds: delta-seconds, or an HTTP date. */
function parseRetryAfter(value, now) {
  if (value === undefined) return undefined;
  var text = String(value).trim();
  if (/^\d+$/.test(text)) return parseInt(text, 10);
  var date = Date.parse(text);
  if (isNaN(date)) return undefined;
  var seconds = Math.ceil((date - (now === undefined ? Date.now() : now)) / 1000);
  return seconds > 0 ? seconds : 0;
}

/** The response body as an object when it is (or holds) JSON. */
function bodyObject(data) {
  if (data && typeof data === 'object') return data;
  if (typeof data === 'string') {
    var text = data.trim();
    if (text.charAt(0) === '{') {
      try {
        return JSON.parse(text);
      } catch (e) {
        return null;
      }
    }
  }
  return null;
}

/** wxlogin's `{"error": {"code", "message"}}`, or null. */
function wxloginError(data) {
  var body = bodyObject(data);
  var error = body && body.error;
  if (error && typeof error === 'object' && typeof error.code === 'string' && error.code) {
    return { code: error.code, message: typeof error.message === 'string' ? error.message : '' };
  }
  return null;
}

function isSuccess(statusCode) {
  return statusCode >= 200 && statusCode < 300;
}

/** The WxLoginError a non-2xx response stands for. */
function errorFromResponse(response) {
  var header = response.header || {};
  var details = {
    retryAfter: parseRetryAfter(headerValue(header, 'retry-after')),
    requestId: headerValue(header, 'x-request-id'),
    data: response.data,
    header: header,
  };
  var known = wxloginError(response.data);
  if (known) return new WxLoginError(known.code, known.message, response.statusCode, details);
  return new WxLoginError(
    'http_' + response.statusCode,
    'the server answered HTTP ' + response.statusCode,
    response.statusCode,
    details
  );
}

function createClient(options) {
  if (!options || typeof options.baseUrl !== 'string' || !options.baseUrl) {
    throw new TypeError('createClient: baseUrl is required');
  }
  var wxApi = options.wx || (typeof wx !== 'undefined' ? wx : undefined); // eslint-disable-line no-undef
  if (!wxApi) throw new TypeError('createClient: no wx object (pass options.wx)');
  var baseUrl = options.baseUrl.replace(/\/+$/, '');
  var origin = originOf(baseUrl);
  var appid = options.appid;
  var storageKey = options.storageKey || DEFAULT_STORAGE_KEY;
  var timeout = options.timeout;
  /** The login under way, which every caller shares. */
  var inFlight = null;

  function getToken() {
    var token;
    try {
      token = wxApi.getStorageSync(storageKey);
    } catch (e) {
      return '';
    }
    return typeof token === 'string' ? token : '';
  }

  function setToken(token) {
    wxApi.setStorageSync(storageKey, token);
  }

  function clearToken() {
    try {
      wxApi.removeStorageSync(storageKey);
    } catch (e) {
      // Nothing stored, or storage failed: either way no token remains usable.
    }
  }

  function resolveUrl(url) {
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) return url;
    return baseUrl + (url.charAt(0) === '/' ? url : '/' + url);
  }

  /** wx.request as a promise; resolves for every HTTP answer. */
  function send(options, token) {
    return new Promise(function (resolve, reject) {
      var header = {};
      var given = options.header || {};
      Object.keys(given).forEach(function (name) {
        if (token && name.toLowerCase() === 'authorization') return;
        header[name] = given[name];
      });
      if (token) header.Authorization = 'Bearer ' + token;
      var params = {};
      Object.keys(options).forEach(function (name) {
        if (name === 'auth' || name === 'success' || name === 'fail' || name === 'complete') return;
        params[name] = options[name];
      });
      params.url = resolveUrl(options.url);
      params.method = (options.method || 'GET').toUpperCase();
      params.header = header;
      if (params.timeout === undefined && timeout !== undefined) params.timeout = timeout;
      params.success = function (res) {
        resolve({ statusCode: res.statusCode, data: res.data, header: res.header || {} });
      };
      params.fail = function (err) {
        var message = (err && err.errMsg) || 'request:fail';
        reject(new WxLoginError('network_error', message, 0));
      };
      wxApi.request(params);
    });
  }

  function wxLogin() {
    return new Promise(function (resolve, reject) {
      var params = {
        success: function (res) {
          if (res && typeof res.code === 'string' && res.code) resolve(res.code);
          else reject(new WxLoginError('wx_login_failed', 'wx.login gave no code', 0));
        },
        fail: function (err) {
          reject(new WxLoginError('wx_login_failed', (err && err.errMsg) || 'login:fail', 0));
        },
      };
      if (timeout !== undefined) params.timeout = timeout;
      wxApi.login(params);
    });
  }

  function doLogin() {
    return wxLogin()
      .then(function (code) {
        var body = { code: code };
        if (appid) body.appid = appid;
        return send({ url: '/v1/login', method: 'POST', data: body, header: { 'Content-Type': 'application/json' } }, '');
      })
      .then(function (response) {
        if (!isSuccess(response.statusCode)) throw errorFromResponse(response);
        var answer = bodyObject(response.data);
        if (!answer || typeof answer.token !== 'string' || !answer.token) {
          throw new WxLoginError('invalid_response', 'the login answer holds no token', response.statusCode, {
            requestId: headerValue(response.header, 'x-request-id'),
            data: response.data,
            header: response.header,
          });
        }
        setToken(answer.token);
        return { expires_in: answer.expires_in, created: answer.created, user: answer.user };
      });
  }

  /** Logs in, or joins the login under way. */
  function login() {
    if (!inFlight) {
      var current = doLogin();
      inFlight = current;
      var done = function () {
        if (inFlight === current) inFlight = null;
      };
      current.then(done, done);
    }
    return inFlight;
  }

  /** A token to send: the stored one, else one from a (shared) login. */
  function ensureToken() {
    if (inFlight) {
      // A login is replacing the token: wait for it (its failure is the
      // caller's only when no token is left to try).
      return inFlight.then(getToken, function (error) {
        var token = getToken();
        if (token) return token;
        throw error;
      });
    }
    var token = getToken();
    if (token) return Promise.resolve(token);
    return login().then(getToken);
  }

  /**
   * Drops `used` and logs in, unless another caller already replaced it:
   * then the stored token is the fresh one, and no second login is needed.
   */
  function renew(used) {
    var token = getToken();
    if (token && token !== used) return Promise.resolve(token);
    if (token) clearToken();
    // No token left: ensureToken joins the login under way, or starts one.
    return ensureToken();
  }

  function authenticated(options, mayRetry) {
    return ensureToken()
      .then(function (token) {
        return send(options, token).then(function (response) {
          return { token: token, response: response };
        });
      })
      .then(function (sent) {
        var response = sent.response;
        if (isSuccess(response.statusCode)) return response;
        var error = errorFromResponse(response);
        if (response.statusCode === 401 && AUTH_FAILURES[error.code] && mayRetry) {
          return renew(sent.token).then(function () {
            return authenticated(options, false);
          });
        }
        if (response.statusCode === 409 && error.code === 'session_key_stale') {
          // Log in now, so that the data WeChat seals next uses the
          // session_key the server holds; the caller must ask WeChat for
          // that fresh data, so the error is still theirs.
          return renew(sent.token).then(
            function () {
              throw error;
            },
            function () {
              throw error;
            }
          );
        }
        throw error;
      });
  }

  function request(options) {
    if (typeof options === 'string') options = { url: options };
    if (!options || typeof options.url !== 'string' || !options.url) {
      return Promise.reject(new TypeError('request: url is required'));
    }
    var url = resolveUrl(options.url);
    if (options.auth === false || originOf(url) !== origin) {
      // Not wxlogin's (or deliberately anonymous): no token, no login.
      return send(options, '').then(function (response) {
        if (isSuccess(response.statusCode)) return response;
        throw errorFromResponse(response);
      });
    }
    return authenticated(options, true);
  }

  function call(method, url, data) {
    var options = { url: url, method: method };
    if (data !== undefined) {
      options.data = data;
      options.header = { 'Content-Type': 'application/json' };
    }
    return request(options).then(function (response) {
      var body = bodyObject(response.data);
      if (!body) {
        throw new WxLoginError('invalid_response', 'the answer is not JSON', response.statusCode, {
          requestId: headerValue(response.header, 'x-request-id'),
          data: response.data,
          header: response.header,
        });
      }
      return body;
    });
  }

  function userOf(body) {
    return body.user;
  }

  function me() {
    return call('GET', '/v1/me').then(userOf);
  }

  function saveProfile(sealed) {
    if (!sealed || !sealed.encryptedData || !sealed.iv) {
      return Promise.reject(new TypeError('saveProfile: encryptedData and iv are required'));
    }
    var body = { encryptedData: sealed.encryptedData, iv: sealed.iv };
    if (sealed.rawData !== undefined) body.rawData = sealed.rawData;
    if (sealed.signature !== undefined) body.signature = sealed.signature;
    return call('POST', '/v1/me/profile', body).then(userOf);
  }

  function updateProfile(fields) {
    var body = {};
    if (fields && fields.nickname !== undefined) body.nickname = fields.nickname;
    if (fields && fields.avatarUrl !== undefined) body.avatar_url = fields.avatarUrl;
    return call('PUT', '/v1/me/profile', body).then(userOf);
  }

  function bindPhone(input) {
    var body;
    if (typeof input === 'string' && input) {
      body = { code: input };
    } else if (input && typeof input === 'object' && input.encryptedData && input.iv) {
      body = { encryptedData: input.encryptedData, iv: input.iv };
    } else if (input && typeof input === 'object' && typeof input.code === 'string' && input.code) {
      body = { code: input.code };
    } else {
      return Promise.reject(new TypeError('bindPhone: give the button code, or {encryptedData, iv}'));
    }
    return call('POST', '/v1/me/phone', body).then(function (answer) {
      return { phone: answer.phone, user: answer.user };
    });
  }

  function sessions() {
    return call('GET', '/v1/me/sessions').then(function (body) {
      return body.sessions || [];
    });
  }

  function endSession(id) {
    if (typeof id !== 'string' || !id) {
      return Promise.reject(new TypeError('endSession: a session id is required'));
    }
    return request({ url: '/v1/me/sessions/' + encodeURIComponent(id), method: 'DELETE' }).then(
      function () {
        return undefined;
      }
    );
  }

  function deleteAccount() {
    return request({ url: '/v1/me', method: 'DELETE' }).then(function () {
      // Every session of the user ended with the account.
      clearToken();
      return undefined;
    });
  }

  function logout(options) {
    var token = getToken();
    if (!token) return Promise.resolve();
    var params = { url: '/v1/logout', method: 'POST' };
    if (options && options.all) {
      params.data = { all: true };
      params.header = { 'Content-Type': 'application/json' };
    }
    return send(params, token).then(
      function (response) {
        // Only forget the token we ended: a login may have replaced it.
        if (getToken() === token) clearToken();
        if (isSuccess(response.statusCode)) return undefined;
        var error = errorFromResponse(response);
        if (response.statusCode === 401) return undefined; // already dead
        throw error;
      },
      function (error) {
        if (getToken() === token) clearToken();
        throw error;
      }
    );
  }

  return {
    login: login,
    request: request,
    me: me,
    saveProfile: saveProfile,
    updateProfile: updateProfile,
    bindPhone: bindPhone,
    sessions: sessions,
    endSession: endSession,
    deleteAccount: deleteAccount,
    logout: logout,
    getToken: function () {
      return getToken() || null;
    },
    isLoggedIn: function () {
      return !!getToken();
    },
  };
}

/** `scheme://host[:port]`, lower-cased, or '' when `url` has none. */
function originOf(url) {
  var match = /^([a-z][a-z0-9+.-]*:\/\/[^/?#]*)/i.exec(url);
  return match ? match[1].toLowerCase() : '';
}

module.exports = {
  createClient: createClient,
  WxLoginError: WxLoginError,
  DEFAULT_STORAGE_KEY: DEFAULT_STORAGE_KEY,
};
