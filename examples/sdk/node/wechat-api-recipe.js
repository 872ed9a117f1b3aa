'use strict';
// Recipe: wechat-api (node-webot) with wxphone's central token endpoint.
//
// wechat-api asks getToken() before every call and, when the token is not
// valid, getAccessToken() (which would fetch from WeChat). On errcode 40001
// it retries the call once through preRequest(…, retried = true), which
// calls getToken() again: with a token store that is not told about the
// rejection, the retry re-reads the same token and fails the same way. So
// the retry path first reports the rejected token to wxphone.
const { WxphoneTokens } = require('./wxphone-token');

function useWxphone(api, tokens) {
  const asToken = (t) => ({ accessToken: t, expireTime: tokens.expiresAt });
  api.getToken = (cb) => { tokens.get().then((t) => cb(null, asToken(t)), cb); };
  api.saveToken = (token, cb) => cb(null); // wxphone keeps the token
  api.getAccessToken = (cb) => { tokens.get().then((t) => cb(null, asToken(t)), cb); }; // never WeChat
  const preRequest = api.preRequest;
  api.preRequest = function (method, args, retried) {
    if (!retried) return preRequest.call(this, method, args, retried);
    // wechat-api's 40001 retry: this.token is the token WeChat just refused.
    const callback = args[args.length - 1];
    const rejected = this.token && this.token.accessToken;
    tokens.invalidate(rejected).then(() => preRequest.call(this, method, args, true), callback);
  };
  return api;
}

module.exports = { useWxphone, WxphoneTokens };
