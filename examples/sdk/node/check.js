'use strict';
// Runs the wechat-api and node-easywechat recipes against `wxphone serve`
// and its emulator (`wxphone mock`), both started by run.sh, which passes:
// WXPHONE_BASE, WXPHONE_TOKEN_KEY, WXMOCK_BASE, WX_APPID.
//
// For each SDK: an exchange with wxphone's token; an exchange after every
// token was revoked (WeChat answers 40001: one invalidate, one retry,
// success); a token WeChat keeps refusing (one invalidate and one retry at
// most, then the error: no loop). The SDKs never fetch from WeChat.
const assert = require('node:assert/strict');
const API = require('wechat-api');
const MiniApp = require('node-easywechat').MiniApp;
const { WxphoneTokens, WxphoneTokenError } = require('./wxphone-token');
const { useWxphone } = require('./wechat-api-recipe');
const { WxphoneAccessToken, withTokenRetry } = require('./easywechat-recipe');

const env = (k) => { const v = process.env[k]; if (!v) throw new Error(k + ' is not set (run run.sh)'); return v; };
const wxphone = env('WXPHONE_BASE');
const tokenKey = env('WXPHONE_TOKEN_KEY');
const mock = env('WXMOCK_BASE');
const appid = env('WX_APPID');

async function admin(path, body) {
  const res = await fetch(mock + '/admin/' + path, body === undefined ? {} : {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  const json = await res.json();
  assert.equal(res.status, 200, `admin ${path}: ${JSON.stringify(json)}`);
  return json;
}
const mint = async (pure) => (await admin('phone-codes', { appid, purePhoneNumber: pure })).code;
const stats = async () => (await admin('stats')).endpoints;

// tokensFor returns a token client whose requests to wxphone are counted.
function tokensFor() {
  const counts = { get: 0, invalidate: 0 };
  const counted = (url, init) => {
    if (url.includes('/v1/access-token/invalidate')) counts.invalidate++;
    else counts.get++;
    return fetch(url, init);
  };
  return { tokens: new WxphoneTokens({ base: wxphone, appid, key: tokenKey, fetch: counted }), counts };
}

const sdks = {
  'wechat-api@1.35.1': () => {
    const { tokens, counts } = tokensFor();
    // wechat-api is the official-account library: API.patch adds a call it
    // lacks. In production the URL is https://api.weixin.qq.com/wxa/…
    if (!API.prototype.getUserPhoneNumber) API.patch('getUserPhoneNumber', mock + '/wxa/business/getuserphonenumber');
    const api = useWxphone(new API(appid, ''), tokens);
    const phone = (code) => new Promise((resolve, reject) => {
      api.getUserPhoneNumber({ code }, (err, data) => (err ? reject(err) : resolve(data.phone_info)));
    });
    return { phone, counts };
  },
  'node-easywechat@3.6.2': () => {
    const { tokens, counts } = tokensFor();
    // No secret: the SDK cannot fetch a token itself. baseURL points at the
    // emulator (production: the default, https://api.weixin.qq.com/).
    const app = new MiniApp({ app_id: appid, secret: '', http: { baseURL: mock + '/' } });
    app.setAccessToken(new WxphoneAccessToken(tokens));
    const client = app.getClient();
    const phone = async (code) => {
      const res = await withTokenRetry(tokens, () => client.postJson('wxa/business/getuserphonenumber', { code }));
      const obj = res.toObject();
      if (obj.errcode) { const e = new Error(obj.errmsg); e.code = obj.errcode; throw e; }
      return obj.phone_info;
    };
    return { phone, counts };
  },
};

async function check(name, make) {
  const { phone, counts } = make();
  const phoneCalls = async () => (await stats()).phone.calls;

  // 1. An exchange with wxphone's token.
  let info = await phone(await mint('13900000101'));
  assert.equal(info.purePhoneNumber, '13900000101');
  assert.equal(counts.invalidate, 0);

  // 2. Every token revoked: 40001, one invalidate, one retry, success.
  await admin('revoke-tokens', { appid });
  let before = await phoneCalls();
  info = await phone(await mint('13900000102'));
  assert.equal(info.purePhoneNumber, '13900000102');
  assert.equal(counts.invalidate, 1, 'one invalidate after the revoke');
  assert.equal(await phoneCalls() - before, 2, '40001, then the retry');

  // 3. WeChat keeps refusing the token: at most one invalidate and one
  // retry, then an error. Within 30 s of another force refresh, wxphone
  // may refuse the invalidate itself (503 token_unavailable with
  // Retry-After: the force-refresh spacing) and the call is not retried.
  await admin('faults', { endpoint: 'phone', kind: 'errcode', errcode: 40001, count: 2 });
  const code = await mint('13900000103');
  before = await phoneCalls();
  let outcome;
  try {
    await phone(code);
    assert.fail('a token refused twice succeeded');
  } catch (e) {
    if (e instanceof WxphoneTokenError) {
      assert.equal(e.code, 'token_unavailable');
      assert.ok(e.retryAfter > 0, 'Retry-After on the 503');
      assert.equal(await phoneCalls() - before, 1);
      outcome = `invalidate refused (503 token_unavailable, Retry-After ${e.retryAfter}s), not retried`;
    } else {
      assert.equal(e.code, 40001, String(e));
      assert.equal(await phoneCalls() - before, 2);
      outcome = 'retried once, then the 40001';
    }
  }
  assert.equal(counts.invalidate, 2, 'one more invalidate, no loop');
  await fetch(mock + '/admin/faults', { method: 'DELETE' });
  info = await phone(code); // the code was not used
  assert.equal(info.purePhoneNumber, '13900000103');
  console.log(`ok  ${name}: exchange; revoke → 1 invalidate + 1 retry; refused twice → ${outcome}`);
}

(async () => {
  for (const [name, make] of Object.entries(sdks)) await check(name, make);
  const st = await stats();
  assert.equal(st.token.calls, 0, 'no SDK fetched /cgi-bin/token');
  console.log(`ok  no SDK fetched a token from WeChat (/cgi-bin/token calls: ${st.token.calls}; wxphone's stable_token calls: ${st.stable_token.calls})`);
})().catch((e) => { console.error('FAIL', e); process.exit(1); });
