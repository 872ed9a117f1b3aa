'use strict';
// The client side of wxphone's central token endpoint, shared by the
// recipes of docs/token-endpoint.md. Node 18+ (global fetch).

class WxphoneTokenError extends Error {
  constructor(status, code, message, retryAfter) {
    super(`wxphone token endpoint: ${status} ${code}: ${message}`);
    this.name = 'WxphoneTokenError';
    this.status = status;
    this.code = code; // token_unavailable, unauthorized, …
    this.retryAfter = retryAfter; // seconds, 0 when not said
  }
}

class WxphoneTokens {
  // base: wxphone's URL; key: a key from WXPHONE_TOKEN_API_KEYS (from your secret store).
  constructor({ base, appid, key, fetch = globalThis.fetch }) {
    this.base = base.replace(/\/+$/, '');
    this.appid = appid;
    this.key = key;
    this.fetch = fetch;
    this.token = null;
    this.expiresAt = 0; // ms; expires_in already keeps wxphone's 5-minute handover margin
    this.queue = Promise.resolve();
  }

  // The cached token, or wxphone's current one.
  get() {
    if (this.token && Date.now() < this.expiresAt) return Promise.resolve(this.token);
    return this.serial(() => (this.token && Date.now() < this.expiresAt
      ? this.token
      : this.request('GET', '/v1/access-token?appid=' + encodeURIComponent(this.appid))));
  }

  // Report a token WeChat rejected (40001, 40014, 42001); resolves to the
  // token wxphone answers with, never the rejected one. wxphone drops the
  // rejected token only if it is still current: reporting a stale one is harmless.
  // When wxphone finds that WeChat still accepts the token (409
  // token_still_valid: a transient rejection, or a stale copy here), it
  // resolves to wxphone's current token, asked for again.
  invalidate(rejected) {
    return this.serial(() => this.request('POST', '/v1/access-token/invalidate',
      { appid: this.appid, access_token: rejected }).catch((e) => {
      if (e instanceof WxphoneTokenError && e.status === 409) {
        return this.request('GET', '/v1/access-token?appid=' + encodeURIComponent(this.appid));
      }
      throw e;
    }));
  }

  // One request to wxphone at a time: concurrent callers share the answer.
  serial(fn) {
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(() => {});
    return p;
  }

  async request(method, path, body) {
    const headers = { Authorization: 'Bearer ' + this.key };
    if (body) headers['Content-Type'] = 'application/json';
    const res = await this.fetch(this.base + path, { method, headers, body: body ? JSON.stringify(body) : undefined });
    const json = await res.json().catch(() => null);
    if (!res.ok) {
      const e = (json && json.error) || {};
      throw new WxphoneTokenError(res.status, e.code || 'unknown', e.message || '', Number(res.headers.get('retry-after')) || 0);
    }
    if (!json || typeof json.access_token !== 'string' || !(json.expires_in >= 1)) {
      throw new WxphoneTokenError(res.status, 'malformed', 'unexpected answer', 0);
    }
    this.token = json.access_token;
    this.expiresAt = Date.now() + json.expires_in * 1000;
    return this.token;
  }
}

// WeChat's answers for a token it refuses: invalid or not the latest, invalid, expired.
const TOKEN_REJECTED = new Set([40001, 40014, 42001]);

module.exports = { WxphoneTokens, WxphoneTokenError, TOKEN_REJECTED };
