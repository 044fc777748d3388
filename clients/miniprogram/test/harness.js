'use strict';

// Test harness: starts the real single-process wxlogin binary (gateway,
// auth, user and the WeChat simulator) as a child process, a tiny upstream
// HTTP server for proxy mode, and builds fake `wx` objects that do real HTTP.

const { execFile, spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const PACKAGE_DIR = path.resolve(__dirname, '..');
const WORKSPACE_DIR = path.resolve(PACKAGE_DIR, '../..');
const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 10_000;

/**
 * Where cargo puts the workspace's builds: CARGO_TARGET_DIR when set
 * (relative to the workspace root when relative), else target; the rule of
 * wxlogin_testkit::target_dir and tests/common.sh.
 */
function targetDir() {
  return path.resolve(WORKSPACE_DIR, process.env.CARGO_TARGET_DIR || 'target');
}

/** Whether `port` on loopback can be bound right now. */
function canBind(port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * A loopback port nothing is bound to now, for a server the binary will
 * bind. Below Linux's ephemeral range (32768 and up), as
 * wxlogin_testkit::free_port and tests/common.sh pick theirs: there the
 * kernel hands ports to `:0` binds and outgoing connections, which could
 * take it before the binary binds it.
 */
async function freePort() {
  for (;;) {
    const port = 10_000 + crypto.randomInt(22_000);
    if (await canBind(port)) return port;
  }
}

function randomId(bytes = 6) {
  return crypto.randomBytes(bytes).toString('hex');
}

/** A fresh openid for one test. */
function uniqueOpenid(label = 'test') {
  return `o_${label}_${randomId()}`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Keeps the last `limit` characters written to a stream. */
function tail(limit = 64 * 1024) {
  let text = '';
  return {
    push(chunk) {
      text += chunk.toString();
      if (text.length > limit) text = text.slice(text.length - limit);
    },
    get text() {
      return text;
    },
  };
}

/**
 * The team's own backend behind the gateway's proxy mode: answers what the
 * gateway forwards under /api/.
 *  - /api/whoami  → 200 JSON with the X-Wx-* identity and whether a token leaked
 *  - /api/teapot  → 418 text/plain (not a wxlogin error body)
 *  - /api/empty   → 204
 */
async function startUpstream() {
  const seen = [];
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method, url: req.url, headers: req.headers });
    const url = new URL(req.url, 'http://upstream');
    if (url.pathname === '/api/whoami') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          openid: req.headers['x-wx-openid'] || null,
          user_id: req.headers['x-wx-user-id'] || null,
          authorization: req.headers.authorization || null,
          query: url.search,
        })
      );
    } else if (url.pathname === '/api/teapot') {
      res.writeHead(418, { 'content-type': 'text/plain' });
      res.end('I am a teapot');
    } else if (url.pathname === '/api/empty') {
      res.writeHead(204);
      res.end();
    } else {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ message: 'no such thing upstream' }));
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    seen,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

/**
 * Deletes every key under `prefix` in the Redis at `url` with `redis-cli`
 * (installed with redis-server): the tests leave nothing in a shared Redis.
 * Resolves to the number of keys deleted.
 */
async function deleteRedisPrefix(url, prefix) {
  const run = (args) =>
    new Promise((resolve, reject) => {
      execFile('redis-cli', ['-u', url, ...args], { maxBuffer: 64 * 1024 * 1024 }, (error, stdout) =>
        error ? reject(error) : resolve(stdout)
      );
    });
  const keys = (await run(['--scan', '--pattern', `${prefix}*`])).split('\n').filter(Boolean);
  let deleted = 0;
  for (let at = 0; at < keys.length; at += 500) {
    deleted += Number((await run(['del', ...keys.slice(at, at + 500)])).trim()) || 0;
  }
  return deleted;
}

/**
 * Starts wxlogin. Resolves to
 * `{ gateway, sim, upstream, stop(), output(), database, redis }` once
 * `GET /healthz` answers 200.
 */
async function startService() {
  const bin = process.env.WXLOGIN_BIN || path.join(targetDir(), 'debug', 'wxlogin');
  if (!fs.existsSync(bin)) {
    throw new Error(`wxlogin binary not found at ${bin} (build it, or set WXLOGIN_BIN)`);
  }
  const tempDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wxlogin-client-'));
  let upstream = null;
  let child = null;
  const stdout = tail();
  const stderr = tail();
  let exited = null;
  // Set when the tests use a shared Redis: every key the service writes starts with it.
  const redisPrefix = process.env.WXLOGIN_TEST_REDIS_URL ? `wxlogin-client-${randomId()}:` : null;

  let exitPromise = Promise.resolve();
  const cleanup = async () => {
    if (child && exited === null) {
      child.kill('SIGTERM');
      let timer;
      const stopped = await Promise.race([
        exitPromise.then(() => true),
        new Promise((resolve) => {
          timer = setTimeout(() => resolve(false), STOP_TIMEOUT_MS);
        }),
      ]);
      clearTimeout(timer);
      if (!stopped && exited === null) {
        child.kill('SIGKILL');
        await exitPromise;
      }
    }
    process.removeListener('exit', killOnExit);
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    if (upstream) await upstream.close();
    fs.rmSync(tempDir, { recursive: true, force: true });
    if (redisPrefix) {
      try {
        await deleteRedisPrefix(process.env.WXLOGIN_TEST_REDIS_URL, redisPrefix);
      } catch (error) {
        console.error(`could not delete the test's Redis keys (${redisPrefix}*): ${error.message}`);
      }
    }
  };
  // Whatever happens to the test process, the service dies with it.
  const killOnExit = () => {
    if (child && exited === null) child.kill('SIGKILL');
    try {
      fs.rmSync(tempDir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      // The dying service may still be writing; the OS's tmp cleaning has the rest.
    }
  };
  process.on('exit', killOnExit);
  // Interrupted (Ctrl-C, a cancelled run): kill the service, then die as asked.
  const onSignal = (signal) => {
    killOnExit();
    process.kill(process.pid, signal);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    upstream = await startUpstream();
    const gatewayPort = await freePort();
    let simPort = await freePort();
    while (simPort === gatewayPort) simPort = await freePort();
    const database = process.env.WXLOGIN_TEST_DATABASE_URL || `sqlite://${path.join(tempDir, 'wxlogin.sqlite3')}`;
    const redis = process.env.WXLOGIN_TEST_REDIS_URL || 'memory://';
    // A minimal environment: nothing from the caller's shell (a stray
    // WECHAT_SECRET would turn the simulator off) beyond what a process needs.
    const env = {
      PATH: process.env.PATH || '/usr/bin:/bin',
      HOME: process.env.HOME || tempDir,
      GATEWAY_ADDR: `127.0.0.1:${gatewayPort}`,
      SIM_ADDR: `127.0.0.1:${simPort}`,
      DATABASE_URL: database,
      REDIS_URL: redis,
      RUST_LOG: 'warn',
      PROXY_ROUTES: `/api/=${upstream.url}`,
      // Test keys (on SQLite the binary would make its own; on MySQL it
      // needs them).
      DATA_ENCRYPTION_KEYS: 'client:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=',
      DATA_INDEX_KEY: 'ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=',
    };
    if (redisPrefix) env.REDIS_KEY_PREFIX = redisPrefix;
    child = spawn(bin, [], { cwd: tempDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (chunk) => stdout.push(chunk));
    child.stderr.on('data', (chunk) => stderr.push(chunk));
    exitPromise = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        exited = { code, signal };
        resolve();
      });
      // A binary that cannot be started never exits: count that as exited.
      child.on('error', (error) => {
        if (exited === null) exited = { error: error.message };
        resolve();
      });
    });

    const gateway = `http://127.0.0.1:${gatewayPort}`;
    const sim = `http://127.0.0.1:${simPort}`;
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (exited !== null) {
        throw new Error(`wxlogin exited early (${JSON.stringify(exited)}):\n${stderr.text}\n${stdout.text}`);
      }
      try {
        const response = await fetch(`${gateway}/healthz`, { signal: AbortSignal.timeout(2000) });
        await response.arrayBuffer();
        if (response.status === 200) break;
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) {
        throw new Error(`wxlogin did not answer /healthz within ${READY_TIMEOUT_MS} ms:\n${stderr.text}\n${stdout.text}`);
      }
      await sleep(200);
    }
    return {
      gateway,
      sim,
      upstream,
      database,
      redis,
      output: () => `${stderr.text}\n${stdout.text}`,
      stop: cleanup,
    };
  } catch (error) {
    await cleanup();
    throw error;
  }
}

/** POSTs JSON to the simulator's control API and returns its JSON answer. */
async function simPost(sim, pathname, body) {
  const response = await fetch(sim + pathname, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body ?? {}),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`simulator ${pathname}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Mints a wx.login code for `openid`. */
async function mintCode(sim, openid, extra = {}) {
  const minted = await simPost(sim, '/sim/codes', { openid, ...extra });
  return minted.code;
}

/** `Content-Type` for `content-type`: wx.request keeps the server's case; we vary it. */
function titleCase(name) {
  return name.replace(/(^|-)([a-z])/g, (_, dash, letter) => dash + letter.toUpperCase());
}

/**
 * A `wx` good enough for the client: wx.login mints a simulator code for
 * `openid` (or answers `code` / fails, when told to), wx.request does real
 * HTTP with fetch, storage is a Map. It counts wx.login calls and records
 * requests; `intercept(params)` may rewrite a request before it is sent, and
 * `delay(params, index)` may hold its answer back for that many ms.
 */
function makeWx(service, { openid, unionid, code, loginFails, intercept, delay } = {}) {
  const storage = new Map();
  const fake = {
    openid,
    loginCalls: 0,
    requests: [],
    storage,
    intercept,
    delay,
    code,
    loginFails,
    login(params = {}) {
      fake.loginCalls += 1;
      const done = (fn, value) => {
        if (typeof fn === 'function') fn(value);
        if (typeof params.complete === 'function') params.complete(value);
      };
      (async () => {
        if (fake.loginFails) return done(params.fail, { errMsg: 'login:fail auth deny' });
        if (fake.code !== undefined) return done(params.success, { code: fake.code, errMsg: 'login:ok' });
        const minted = await mintCode(service.sim, fake.openid, unionid ? { unionid } : {});
        done(params.success, { code: minted, errMsg: 'login:ok' });
      })().catch((error) => done(params.fail, { errMsg: `login:fail ${error.message}` }));
    },
    request(original) {
      const params = fake.intercept ? fake.intercept({ ...original, header: { ...(original.header || {}) } }) : original;
      const method = (params.method || 'GET').toUpperCase();
      const headers = { ...(params.header || {}) };
      let url = params.url;
      let body;
      const data = params.data;
      if (data !== undefined && data !== null) {
        if (method === 'GET') {
          if (typeof data === 'object') {
            const query = new URLSearchParams(data).toString();
            if (query) url += (url.includes('?') ? '&' : '?') + query;
          }
        } else if (typeof data === 'string') {
          body = data;
        } else {
          body = JSON.stringify(data);
          if (!Object.keys(headers).some((name) => name.toLowerCase() === 'content-type')) {
            headers['content-type'] = 'application/json';
          }
        }
      }
      const entry = { url, method, header: headers, data, statusCode: undefined };
      const index = fake.requests.push(entry) - 1;
      const finish = (fn, value) => {
        if (typeof fn === 'function') fn(value);
        if (typeof params.complete === 'function') params.complete(value);
      };
      (async () => {
        const response = await fetch(url, {
          method,
          headers,
          body,
          signal: AbortSignal.timeout(params.timeout || 60_000),
        });
        const text = await response.text();
        let parsed = text;
        if (text && (params.dataType || 'json') === 'json') {
          try {
            parsed = JSON.parse(text);
          } catch {
            parsed = text;
          }
        }
        const header = {};
        response.headers.forEach((value, name) => {
          header[titleCase(name)] = value;
        });
        const wait = fake.delay ? fake.delay(params, index) : 0;
        if (wait > 0) await sleep(wait);
        return { statusCode: response.status, data: parsed, header, errMsg: 'request:ok' };
      })().then(
        (res) => {
          entry.statusCode = res.statusCode;
          finish(params.success, res);
        },
        (error) => finish(params.fail, { errMsg: `request:fail ${error.cause?.code || error.message}` })
      );
      return { abort() {} };
    },
    setStorageSync(key, value) {
      storage.set(key, value);
    },
    getStorageSync(key) {
      return storage.has(key) ? storage.get(key) : '';
    },
    removeStorageSync(key) {
      storage.delete(key);
    },
  };
  return fake;
}

/** A direct call to the gateway, outside the client. */
async function gatewayFetch(service, pathname, { method = 'GET', token, body } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(service.gateway + pathname, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = text;
  try {
    data = text ? JSON.parse(text) : '';
  } catch {
    data = text;
  }
  return { status: response.status, data, headers: response.headers };
}

module.exports = {
  deleteRedisPrefix,
  freePort,
  gatewayFetch,
  makeWx,
  mintCode,
  simPost,
  sleep,
  startService,
  uniqueOpenid,
};
