'use strict';

// A scripted `wx` for the tests that need no server (unit.test.js, types.test.js):
// wx.login answers with a fixed code a few ms later, wx.request from a function.

/** A `wx` whose wx.request answers from `route(params)` (sync or async). */
function scriptedWx({ route, loginCode = 'c0de', loginFails = false } = {}) {
  const storage = new Map();
  const wx = {
    storage,
    loginCalls: 0,
    requests: [],
    login(params) {
      wx.loginCalls += 1;
      setTimeout(() => {
        if (loginFails) params.fail({ errMsg: 'login:fail timeout' });
        else params.success({ code: loginCode, errMsg: 'login:ok' });
      }, 5);
    },
    request(params) {
      wx.requests.push(params);
      Promise.resolve()
        .then(() => route(params))
        .then(
          (answer) => {
            if (answer && answer.fail) params.fail({ errMsg: answer.fail });
            else params.success({ header: {}, data: '', ...answer });
          },
          (error) => params.fail({ errMsg: `request:fail ${error.message}` })
        );
    },
    setStorageSync: (key, value) => storage.set(key, value),
    getStorageSync: (key) => (storage.has(key) ? storage.get(key) : ''),
    removeStorageSync: (key) => storage.delete(key),
  };
  return wx;
}

module.exports = { scriptedWx };
