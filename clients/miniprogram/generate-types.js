'use strict';

// Writes the types of wxlogin's answers, and the error codes it answers with, into
// index.d.ts from the gateway's OpenAPI document (crates/gateway/openapi.json), so that
// they cannot drift from the server: `node generate-types.js` after the document changes.
// test/types.test.js fails while the committed index.d.ts differs from what this writes.
//
// It owns the mapping from the document to TypeScript and nothing else: the rest of
// index.d.ts (the client's own API) is written by hand, outside the generated region.
// It reads only the few JSON Schema forms the document uses, and throws on any other, so
// that a new form is noticed rather than typed wrongly.

const fs = require('node:fs');
const path = require('node:path');

const OPENAPI = path.resolve(__dirname, '../../crates/gateway/openapi.json');
const DTS = path.resolve(__dirname, 'index.d.ts');

const BEGIN = '// BEGIN GENERATED from crates/gateway/openapi.json by generate-types.js: do not edit.';
const END = '// END GENERATED';

/**
 * The interfaces to write, in this order: each from a schema of the document, under the
 * name the client has always exported it by. `omit` drops properties the client keeps to
 * itself; `doc` replaces the schema's description where the client's differs.
 */
const INTERFACES = [
  { name: 'Session', schema: 'Session', doc: 'One of the user\'s live sessions (`GET /v1/me/sessions`).' },
  { name: 'User', schema: 'User', doc: 'A user as wxlogin answers it (`GET /v1/me`, login, profile and phone calls).' },
  {
    name: 'LoginResult',
    schema: 'LoginOutput',
    omit: ['token'],
    doc:
      'What `login()` resolves to. The token itself is not part of it: the\n' +
      'client stores it (`wx.setStorageSync(storageKey, token)`) and sends it;\n' +
      'read it with `getToken()` when you need it.',
  },
  { name: 'Phone', schema: 'PhoneView' },
  { name: 'BindPhoneResult', schema: 'PhoneOutput', doc: 'What `bindPhone()` resolves to.' },
];

/**
 * Codes the gateway answers outside the operations the document describes, with their
 * HTTP status: for a path or a method it does not serve, and in proxy mode, for the
 * team's own routes behind it. test/types.test.js holds this list to the reason table
 * (crates/proto/src/reason.rs) together with the document's.
 */
const OUTSIDE_THE_DOCUMENT = [
  ['not_found', 404],
  ['method_not_allowed', 405],
  ['upstream_unavailable', 502],
  ['upstream_timeout', 504],
];

/** Keywords that only describe a value, and change nothing in its TypeScript type. */
const ANNOTATIONS = new Set(['description', 'example', 'format', 'minimum', 'maxLength', 'pattern']);

function schemaNamed(openapi, name) {
  const schema = openapi.components && openapi.components.schemas && openapi.components.schemas[name];
  if (!schema) throw new Error(`the document has no schema ${name}`);
  return schema;
}

/** The schema `schema` stands for, following a `$ref` within the document. */
function resolve(openapi, schema) {
  if (!schema.$ref) return schema;
  const prefix = '#/components/schemas/';
  if (!schema.$ref.startsWith(prefix)) throw new Error(`unsupported $ref ${schema.$ref}`);
  return schemaNamed(openapi, schema.$ref.slice(prefix.length));
}

function refuseUnknownKeywords(schema, known, where) {
  for (const key of Object.keys(schema)) {
    if (!known.has(key) && !ANNOTATIONS.has(key)) {
      throw new Error(`${where}: generate-types.js does not know the keyword ${key}`);
    }
  }
}

/** The TypeScript type of a property's schema. `names` maps schema names to interface names. */
function typeOf(schema, names, where) {
  if (schema.$ref) {
    refuseUnknownKeywords(schema, new Set(['$ref']), where);
    const name = names.get(schema.$ref.replace('#/components/schemas/', ''));
    if (!name) throw new Error(`${where}: ${schema.$ref} is not one of the interfaces written`);
    return name;
  }
  refuseUnknownKeywords(schema, new Set(['type', 'enum', 'items']), where);
  const types = Array.isArray(schema.type) ? schema.type : [schema.type];
  return types
    .map((type) => {
      if (schema.enum && type === 'string') return schema.enum.map((value) => `'${value}'`).join(' | ');
      switch (type) {
        case 'string':
          return 'string';
        case 'integer':
        case 'number':
          return 'number';
        case 'boolean':
          return 'boolean';
        case 'null':
          return 'null';
        case 'array':
          return `${typeOf(schema.items, names, `${where}[]`)}[]`;
        default:
          throw new Error(`${where}: generate-types.js does not know the type ${type}`);
      }
    })
    .join(' | ');
}

function isNullable(schema) {
  return Array.isArray(schema.type) && schema.type.includes('null');
}

/** A JSDoc comment of `text`, indented by `indent`; nothing without text. */
function jsdoc(text, indent) {
  if (!text) return [];
  const lines = text.replace(/\*\//g, '*\\/').split('\n');
  if (lines.length === 1) return [`${indent}/** ${lines[0]} */`];
  return [`${indent}/**`, ...lines.map((line) => `${indent} * ${line}`.trimEnd()), `${indent} */`];
}

function renderInterface(openapi, spec, names) {
  const schema = schemaNamed(openapi, spec.schema);
  refuseUnknownKeywords(schema, new Set(['type', 'properties', 'required']), spec.schema);
  if (schema.type !== 'object') throw new Error(`${spec.schema} is not an object`);
  const required = new Set(schema.required || []);
  const omit = new Set(spec.omit || []);
  const lines = [...jsdoc(spec.doc || schema.description, ''), `export interface ${spec.name} {`];
  for (const [property, propertySchema] of Object.entries(schema.properties || {})) {
    if (omit.has(property)) continue;
    const where = `${spec.schema}.${property}`;
    // utoipa leaves an `Option` out of `required`, but serde writes `None` as null: a
    // nullable property is always there.
    const optional = !required.has(property) && !isNullable(propertySchema);
    lines.push(...jsdoc(propertySchema.description, '  '));
    lines.push(`  ${property}${optional ? '?' : ''}: ${typeOf(propertySchema, names, where)};`);
  }
  lines.push('}');
  return lines;
}

/** Every `error.code` the document lists, with the HTTP statuses it answers it with. */
function documentedErrorCodes(openapi) {
  const codes = new Map();
  for (const operations of Object.values(openapi.paths || {})) {
    for (const operation of Object.values(operations)) {
      for (const [status, response] of Object.entries(operation.responses || {})) {
        const json = response.content && response.content['application/json'];
        if (Number(status) < 400 || !json) continue;
        const body = resolve(openapi, json.schema);
        const error = body.properties && body.properties.error && resolve(openapi, body.properties.error);
        const code = error && error.properties && error.properties.code;
        if (!code || !Array.isArray(code.enum)) {
          throw new Error(`an error answer (${status}) without an error.code enum`);
        }
        for (const value of code.enum) {
          if (!codes.has(value)) codes.set(value, new Set());
          codes.get(value).add(Number(status));
        }
      }
    }
  }
  return codes;
}

/** Every code wxlogin answers with, the document's and the others, with their statuses. */
function errorCodes(openapi) {
  const codes = documentedErrorCodes(openapi);
  for (const [code, status] of OUTSIDE_THE_DOCUMENT) {
    if (codes.has(code)) throw new Error(`${code} is in the document now: drop it from OUTSIDE_THE_DOCUMENT`);
    codes.set(code, new Set([status]));
  }
  return codes;
}

function renderErrorCodes(openapi) {
  const rows = [...errorCodes(openapi)].map(([code, statuses]) => ({
    code,
    statuses: [...statuses].sort((a, b) => a - b),
  }));
  rows.sort((a, b) => a.statuses[0] - b.statuses[0] || a.code.localeCompare(b.code));
  return [
    ...jsdoc(
      'The `error.code`s wxlogin answers with (HTTP status in the comment): every one its\n' +
        'OpenAPI document lists, and those it answers outside the documented operations (an\n' +
        'unknown path or method; proxy mode\'s `upstream_*`).',
      ''
    ),
    'export type ServerErrorCode =',
    ...rows.map(({ code, statuses }, index) => {
      const end = index === rows.length - 1 ? ';' : '';
      return `  | '${code}'${end} // ${statuses.join(', ')}`;
    }),
  ];
}

/** The generated region, markers included. */
function generate(openapi) {
  const names = new Map(INTERFACES.map((spec) => [spec.schema, spec.name]));
  const blocks = [
    ...INTERFACES.map((spec) => renderInterface(openapi, spec, names)),
    renderErrorCodes(openapi),
  ];
  return [BEGIN, '', ...blocks.flatMap((block) => [...block, '']), END].join('\n');
}

/** `dts` with its generated region replaced by what `openapi` gives. */
function render(dts, openapi) {
  const begin = dts.indexOf(BEGIN);
  const end = dts.indexOf(END);
  if (begin < 0 || end < begin) throw new Error(`index.d.ts has no region between "${BEGIN}" and "${END}"`);
  return dts.slice(0, begin) + generate(openapi) + dts.slice(end + END.length);
}

function readOpenapi(file = OPENAPI) {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

if (require.main === module) {
  const dts = fs.readFileSync(DTS, 'utf8');
  const next = render(dts, readOpenapi());
  if (next === dts) {
    console.log('index.d.ts is up to date');
  } else {
    fs.writeFileSync(DTS, next);
    console.log('index.d.ts rewritten from the OpenAPI document');
  }
}

module.exports = { DTS, INTERFACES, OUTSIDE_THE_DOCUMENT, errorCodes, readOpenapi, render, resolve };
