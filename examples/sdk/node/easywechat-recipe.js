'use strict';
// Recipe: node-easywechat 3.x with wxphone's central token endpoint.
//
// node-easywechat takes any object with getToken() and toQuery() through
// app.setAccessToken(); it has no reaction of its own to 40001. withTokenRetry
// makes one WeChat call, and when WeChat refuses the token it reports that
// token to wxphone and makes the call once more (never more: wxphone's
// force-refresh budget is shared by the fleet).
const { WxphoneTokens, TOKEN_REJECTED } = require('./wxphone-token');

class WxphoneAccessToken {
  constructor(tokens) { this.tokens = tokens; }
  getToken() { return this.tokens.get(); }
  async toQuery() { return { access_token: await this.getToken() }; }
}

// call() makes the WeChat call and resolves to node-easywechat's response.
async function withTokenRetry(tokens, call) {
  const used = await tokens.get(); // the token call() will send (cached)
  const res = await call();
  if (!TOKEN_REJECTED.has(res.toObject().errcode)) return res;
  await tokens.invalidate(used);
  return call();
}

module.exports = { WxphoneAccessToken, withTokenRetry, WxphoneTokens };
