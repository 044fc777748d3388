'use strict';

// The client held to the gateway's OpenAPI document (crates/gateway/openapi.json): the
// types in index.d.ts are what generate-types.js writes from it, its error codes are the
// reason table's, and what index.js reads out of each answer, and the error codes it acts
// on, are the document's. No server: the answers are built from the document's schemas.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const { createClient, DEFAULT_STORAGE_KEY } = require('..');
const { DTS, INTERFACES, errorCodes, readOpenapi, render, resolve } = require('../generate-types');
const { scriptedWx } = require('./scripted-wx');

const REASONS = path.resolve(__dirname, '../../../crates/proto/src/reason.rs');

const openapi = readOpenapi();

/** A value of `schema`: the first of its enum, or of its types that is not null. */
function example(schema) {
  const resolved = resolve(openapi, schema);
  if (resolved.type === 'object') {
    return Object.fromEntries(
      Object.entries(resolved.properties || {}).map(([name, property]) => [name, example(property)])
    );
  }
  const types = Array.isArray(resolved.type) ? resolved.type : [resolved.type];
  const type = types.find((candidate) => candidate !== 'null');
  if (resolved.enum) return resolved.enum[0];
  switch (type) {
    case 'string':
      return 'x';
    case 'integer':
    case 'number':
      return 1;
    case 'boolean':
      return true;
    case 'array':
      return [example(resolved.items)];
    default:
      throw new Error(`no example for ${JSON.stringify(resolved)}`);
  }
}

/** A value of the interface `name` of index.d.ts. */
function exampleOf(name) {
  const spec = INTERFACES.find((candidate) => candidate.name === name);
  const value = example({ $ref: `#/components/schemas/${spec.schema}` });
  for (const omitted of spec.omit || []) delete value[omitted];
  return value;
}

/** The operations of the document, with their path and method. */
function operations() {
  return Object.entries(openapi.paths).flatMap(([route, methods]) =>
    Object.entries(methods).map(([method, operation]) => ({ route, method, operation }))
  );
}

/** The `error.code`s the document lists for `status`, on the operations `keep` selects. */
function codesOf(status, keep = () => true) {
  const codes = new Set();
  for (const { operation } of operations().filter(keep)) {
    const response = operation.responses[String(status)];
    const json = response && response.content && response.content['application/json'];
    if (json) for (const code of resolve(openapi, json.schema).properties.error.properties.code.enum) codes.add(code);
  }
  return [...codes].sort();
}

const needsSession = ({ operation }) => (operation.security || []).some((scheme) => 'session' in scheme);

const errorAnswer = (status, code) => ({ statusCode: status, data: { error: { code, message: code } } });

describe('index.d.ts', () => {
  it('is what generate-types.js writes from the OpenAPI document (run `node generate-types.js`)', () => {
    const committed = fs.readFileSync(DTS, 'utf8');
    assert.equal(committed, render(committed, openapi));
  });

  it('lists every code of the reason table (crates/proto/src/reason.rs) with its status, and no other', () => {
    // A row: `Name = "WIRE_NAME", GrpcCode, 404, "public_code";`
    const row = /^\s*[A-Za-z]+ = "[A-Z_]+", [A-Za-z]+, (\d{3}), "([a-z_]+)";$/gm;
    const table = new Map();
    for (const [, status, code] of fs.readFileSync(REASONS, 'utf8').matchAll(row)) {
      if (!table.has(code)) table.set(code, new Set());
      table.get(code).add(Number(status));
    }
    assert.ok(table.size > 0, `no row of the reason table was read from ${REASONS}`);
    const listed = new Map([...errorCodes(openapi)].map(([code, statuses]) => [code, [...statuses].sort()]));
    const expected = new Map([...table].map(([code, statuses]) => [code, [...statuses].sort()]));
    assert.deepEqual(listed, expected);
  });
});

describe('index.js reads what the document answers', () => {
  const calls = [
    { type: 'LoginResult', route: '/v1/login', method: 'post', call: (client) => client.login() },
    { type: 'User', route: '/v1/me', method: 'get', call: (client) => client.me() },
    {
      type: 'User',
      route: '/v1/me/profile',
      method: 'post',
      call: (client) => client.saveProfile({ encryptedData: 'e', iv: 'i' }),
    },
    { type: 'User', route: '/v1/me/profile', method: 'put', call: (client) => client.updateProfile({ nickname: 'n' }) },
    { type: 'BindPhoneResult', route: '/v1/me/phone', method: 'post', call: (client) => client.bindPhone('c0de') },
    { type: 'Session', list: true, route: '/v1/me/sessions', method: 'get', call: (client) => client.sessions() },
  ];

  for (const { type, list, route, method, call } of calls) {
    it(`${method.toUpperCase()} ${route} resolves to ${type}${list ? '[]' : ''}`, async () => {
      const answer = openapi.paths[route][method].responses['200'].content['application/json'].schema;
      const wx = scriptedWx({
        route: (params) => {
          assert.equal(new URL(params.url).pathname, route);
          assert.equal(params.method, method.toUpperCase());
          return { statusCode: 200, data: example(answer) };
        },
      });
      wx.storage.set(DEFAULT_STORAGE_KEY, 'tok');
      const client = createClient({ baseUrl: 'https://x.test', wx });
      const expected = exampleOf(type);
      assert.deepEqual(await call(client), list ? [expected] : expected);
    });
  }
});

describe('index.js acts on the document\'s error codes', () => {
  it('every 401 code of a call that takes the session token makes it log in again and retry once', async () => {
    const codes = codesOf(401, needsSession);
    assert.ok(codes.length > 0);
    for (const code of codes) {
      const wx = scriptedWx({
        route: (params) => {
          if (params.url.endsWith('/v1/login')) return { statusCode: 200, data: example(openapi.components.schemas.LoginOutput) };
          if (params.header.Authorization === 'Bearer tok-old') return errorAnswer(401, code);
          return { statusCode: 200, data: { user: exampleOf('User') } };
        },
      });
      wx.storage.set(DEFAULT_STORAGE_KEY, 'tok-old');
      const client = createClient({ baseUrl: 'https://x.test', wx });
      assert.deepEqual(await client.me(), exampleOf('User'), code);
      assert.equal(wx.loginCalls, 1, code);
    }
  });

  it('every 409 code makes it log in again at once and reject with the 409', async () => {
    const codes = codesOf(409);
    assert.ok(codes.length > 0);
    for (const code of codes) {
      const wx = scriptedWx({
        route: (params) => {
          if (params.url.endsWith('/v1/login')) return { statusCode: 200, data: example(openapi.components.schemas.LoginOutput) };
          return errorAnswer(409, code);
        },
      });
      wx.storage.set(DEFAULT_STORAGE_KEY, 'tok-old');
      const client = createClient({ baseUrl: 'https://x.test', wx });
      await assert.rejects(client.saveProfile({ encryptedData: 'e', iv: 'i' }), { code, status: 409 });
      assert.equal(wx.loginCalls, 1, code);
      assert.equal(client.getToken(), 'x', code);
    }
  });
});
