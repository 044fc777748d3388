// Type definitions for @wxlogin/miniprogram 0.1.0

// BEGIN GENERATED from crates/gateway/openapi.json by generate-types.js: do not edit.

/** One of the user's live sessions (`GET /v1/me/sessions`). */
export interface Session {
  /**
   * The session's public id (32 hex digits of a SHA-256 of its token,
   * as `X-Wx-Session-Id`): never the token, and no way to it.
   */
  id: string;
  /** Whether this is the session of the token that asks. */
  current: boolean;
  /** RFC 3339, UTC. */
  created_at: string | null;
  /** RFC 3339, UTC; recorded to the minute. */
  last_used_at: string | null;
  /** The client's `User-Agent` at login: its first 256 characters, control characters replaced by spaces. */
  user_agent: string | null;
  /** The client's network at login: IPv4 /24 or IPv6 /48. */
  address_prefix: string | null;
}

/** A user as wxlogin answers it (`GET /v1/me`, login, profile and phone calls). */
export interface User {
  /** wxlogin's id of the user, stable across logins. */
  id: number;
  appid: string;
  openid: string;
  unionid: string | null;
  nickname: string | null;
  avatar_url: string | null;
  /** WeChat's gender: 0 unknown, 1 male, 2 female. */
  gender: number;
  country: string | null;
  province: string | null;
  city: string | null;
  language: string | null;
  phone_number: string | null;
  pure_phone_number: string | null;
  phone_country_code: string | null;
  /** RFC 3339, UTC. */
  created_at: string | null;
  /** RFC 3339, UTC. */
  updated_at: string | null;
}

/**
 * What `login()` resolves to. The token itself is not part of it: the
 * client stores it (`wx.setStorageSync(storageKey, token)`) and sends it;
 * read it with `getToken()` when you need it.
 */
export interface LoginResult {
  /** Seconds the session lives without use; each use restarts it. */
  expires_in: number;
  /** Whether this login registered the user. */
  created: boolean;
  user: User;
}

/** The stored phone number. */
export interface Phone {
  phone_number: string | null;
  pure_phone_number: string | null;
  country_code: string | null;
}

/** What `bindPhone()` resolves to. */
export interface BindPhoneResult {
  phone: Phone;
  user: User;
}

/**
 * The `error.code`s wxlogin answers with (HTTP status in the comment): every one its
 * OpenAPI document lists, and those it answers outside the documented operations (an
 * unknown path or method; proxy mode's `upstream_*`).
 */
export type ServerErrorCode =
  | 'invalid_phone_code' // 400
  | 'invalid_request' // 400
  | 'phone_code_used' // 400
  | 'unknown_app' // 400
  | 'code_used' // 401
  | 'invalid_code' // 401
  | 'invalid_token' // 401
  | 'missing_token' // 401
  | 'user_blocked' // 403
  | 'not_found' // 404
  | 'session_not_found' // 404
  | 'user_not_found' // 404
  | 'method_not_allowed' // 405
  | 'session_key_stale' // 409
  | 'payload_too_large' // 413
  | 'unsupported_media_type' // 415
  | 'invalid_encrypted_data' // 422
  | 'invalid_signature' // 422
  | 'rate_limited' // 429
  | 'internal_error' // 500
  | 'server_misconfigured' // 500
  | 'upstream_unavailable' // 502
  | 'wechat_unavailable' // 502
  | 'not_ready' // 503
  | 'service_unavailable' // 503
  | 'wechat_busy' // 503
  | 'upstream_timeout'; // 504

// END GENERATED

/** What `wx.getUserProfile` / `wx.getUserInfo` hand the mini-program. */
export interface SealedProfile {
  encryptedData: string;
  iv: string;
  rawData?: string;
  signature?: string;
}

/** The legacy `getPhoneNumber` button's sealed data. */
export interface SealedPhone {
  encryptedData: string;
  iv: string;
}

export interface ProfileFields {
  nickname?: string;
  /** Sent as `avatar_url`; an http(s) URL. */
  avatarUrl?: string;
}

export type HttpMethod = 'OPTIONS' | 'GET' | 'HEAD' | 'POST' | 'PUT' | 'DELETE' | 'TRACE' | 'CONNECT' | 'PATCH';

/** Header names as the server or wx.request gave them: in any case. */
export type Headers = Record<string, string>;

/** `wx.request`'s options, minus its callbacks. Anything not listed is passed through to `wx.request`. */
export interface RequestOptions {
  /** Relative to `baseUrl` (`/v1/me`, `api/orders`), or absolute. The token is only sent to
   * URLs of `baseUrl`'s origin; other absolute URLs go out without it, and never cause a login. */
  url: string;
  /** `GET` by default. Lower case is accepted. */
  method?: HttpMethod | Lowercase<HttpMethod>;
  data?: string | Record<string, unknown> | unknown[] | ArrayBuffer;
  /** Any `Authorization` header given here is replaced by the session's bearer token. */
  header?: Headers;
  /** Milliseconds; the client's `timeout` when absent. */
  timeout?: number;
  dataType?: 'json' | string;
  responseType?: 'text' | 'arraybuffer';
  /** `false`: send no token and never log in for this call (public endpoints). Default `true`. */
  auth?: boolean;
  [option: string]: unknown;
}

export interface Response<T = any> {
  statusCode: number;
  /** Parsed JSON when the body is JSON (wx.request's `dataType: 'json'`), else the text; `''` when empty. */
  data: T;
  header: Headers;
}

/** The codes wxlogin answers with, plus this package's own. Any other string may come too
 * (`http_<status>`, codes of a newer server). */
export type WxLoginErrorCode =
  | ServerErrorCode
  // this package's
  | 'network_error'
  | 'wx_login_failed'
  | 'invalid_response'
  | `http_${number}`
  | (string & {});

/**
 * Every failure the client reports (argument mistakes aside, which are `TypeError`s).
 *
 * - wxlogin's error answers (`{"error": {"code", "message"}}`): `code` is wxlogin's code.
 * - Any other non-2xx answer (e.g. the team's own API behind the gateway): `code` is
 *   `http_<status>`; `data` and `header` hold the response.
 * - `wx.request`'s `fail`: `network_error`, `status` 0, `message` is wx's `errMsg`.
 * - `wx.login`'s `fail` (or no code): `wx_login_failed`, `status` 0.
 * - A 2xx answer that lacks what it must hold (a login without a token, a non-JSON answer
 *   where JSON is due): `invalid_response`.
 */
export declare class WxLoginError extends Error {
  constructor(code: string, message?: string, status?: number, details?: {
    retryAfter?: number;
    requestId?: string;
    data?: unknown;
    header?: Headers;
  });
  readonly name: 'WxLoginError';
  code: WxLoginErrorCode;
  /** The HTTP status, or 0 when no HTTP answer came. */
  status: number;
  /** Seconds to wait, from the `Retry-After` header (429, 503), when present. */
  retryAfter: number | undefined;
  /** The `x-request-id` response header, when present: quote it when reporting a problem. */
  requestId: string | undefined;
  /** The response body, when there was a response. */
  data?: unknown;
  /** The response headers, when there was a response. */
  header?: Headers;
}

/** The subset of the mini-program's `wx` object the client uses. */
export interface WxLike {
  login(options: {
    timeout?: number;
    success?: (result: { code: string; errMsg?: string }) => void;
    fail?: (error: { errMsg: string }) => void;
    complete?: (result: unknown) => void;
  }): void;
  request(options: {
    url: string;
    method?: string;
    data?: unknown;
    header?: Headers;
    timeout?: number;
    [option: string]: unknown;
    success?: (result: { statusCode: number; data: any; header: Headers; [key: string]: unknown }) => void;
    fail?: (error: { errMsg: string; [key: string]: unknown }) => void;
  }): unknown;
  setStorageSync(key: string, value: any): void;
  getStorageSync(key: string): any;
  removeStorageSync(key: string): void;
}

export interface ClientOptions {
  /** The gateway, e.g. `https://login.example.com`. A trailing slash is ignored. */
  baseUrl: string;
  /** Sent with each login; the gateway's default app when absent. */
  appid?: string;
  /** The `wx` object; the global `wx` when absent. */
  wx?: WxLike;
  /** Where the token is kept with `wx.setStorageSync`. Default `"wxlogin.token"`. */
  storageKey?: string;
  /** Default `timeout` (ms) of every `wx.request` and `wx.login`. */
  timeout?: number;
}

export interface Client {
  /**
   * `wx.login` → `POST /v1/login` → stores the token. One login at a time: concurrent
   * callers (and requests that need a token meanwhile) share the same promise. Each call
   * made when none is under way logs in anew (a new session; the old token is replaced).
   */
  login(): Promise<LoginResult>;
  /**
   * `wx.request` with the session's bearer token, as a promise.
   *
   * - No token stored: logs in first (joining a login under way).
   * - `401` `invalid_token` / `missing_token`: forgets the token, logs in once (shared with
   *   concurrent callers; no login when another caller already replaced the token) and
   *   retries once. A second 401 rejects; there is never a loop.
   * - `409` `session_key_stale`: logs in again at once, then rejects with that error; ask
   *   WeChat for freshly sealed data and call again.
   * - Resolves for 2xx only. Every other status rejects with a `WxLoginError`: wxlogin's
   *   code for wxlogin's error bodies, `http_<status>` for any other body (the team's API),
   *   with the response in `error.data` / `error.header`.
   *
   * A string is short for `{url}`.
   */
  request<T = any>(options: RequestOptions | string): Promise<Response<T>>;
  /** `GET /v1/me`. */
  me(): Promise<User>;
  /**
   * `POST /v1/me/profile` with `wx.getUserProfile`'s sealed data. Rejects with
   * `session_key_stale` (409) after logging in again when the session's session_key was
   * replaced: get fresh data from WeChat and call again.
   */
  saveProfile(sealed: SealedProfile): Promise<User>;
  /** `PUT /v1/me/profile` with `{nickname, avatar_url}` (fields left out are not sent). */
  updateProfile(fields: ProfileFields): Promise<User>;
  /**
   * `POST /v1/me/phone`: the `getPhoneNumber` button's `code` (a string, or `{code}`), or
   * its legacy sealed `{encryptedData, iv}` (which may be rejected with `session_key_stale`,
   * as `saveProfile`).
   */
  bindPhone(code: string | { code: string } | SealedPhone): Promise<BindPhoneResult>;
  /**
   * `POST /v1/logout`, then forgets the token. Never logs in. Resolves when the server
   * ended the session or says it was already dead (401); with no token stored it sends
   * nothing. Any other failure (network, 5xx) still forgets the token locally but rejects,
   * since the session may live on at the server until it expires. `{all: true}` ends every
   * session of the user (`{"all": true}`), on every device.
   */
  logout(options?: { all?: boolean }): Promise<void>;
  /** `GET /v1/me/sessions`: the user's live sessions, newest first. */
  sessions(): Promise<Session[]>;
  /**
   * `DELETE /v1/me/sessions/{id}`: ends one of the user's sessions (its token is dead at
   * once). Rejects with `session_not_found` (404) for an id that is not one of the user's
   * live sessions. Ending the current session (`current: true`) logs this client out: its
   * next call logs in again.
   */
  endSession(id: string): Promise<void>;
  /**
   * `DELETE /v1/me`: deletes the user's account (every session, the stored data, the row)
   * and forgets the token. The next `login()` registers a new user (`created: true`). When
   * it rejects, calling it again completes the deletion.
   */
  deleteAccount(): Promise<void>;
  /** The stored token, or `null`. */
  getToken(): string | null;
  /** Whether a token is stored (it may have expired at the server: the next call finds out). */
  isLoggedIn(): boolean;
}

export declare function createClient(options: ClientOptions): Client;

/** `"wxlogin.token"`. */
export declare const DEFAULT_STORAGE_KEY: string;
