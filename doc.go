// Package wxphone exchanges WeChat Mini Program phone-number codes for phone
// numbers, safely.
//
// A Mini Program's getPhoneNumber button hands the front end a one-time code
// (single use, valid five minutes). The backend exchanges it with
// POST /wxa/business/getuserphonenumber. This package does that exchange with
// the care production needs:
//
//   - access tokens come from POST /cgi-bin/stable_token (normal mode), are
//     refreshed ahead of expiry in the background, one refresh per app at a
//     time, and are invalidated only if they are still the token WeChat
//     rejected (see TokenManager);
//   - a code is resent only when it provably cannot have been used (nothing
//     was written, a token error, or a single jittered retry of errcode -1);
//     when WeChat may have used the code and the answer was lost the error is
//     ErrOutcomeUnknown, never a misleading "invalid code";
//   - every failure is a typed error usable with errors.Is and errors.As;
//   - secrets, tokens, codes and session keys never appear in an error string
//     or a log line, and a PhoneNumber prints masked (138****5678).
//
// A Client serves one Mini Program (one appid). Create it with New, call
// Client.PhoneNumber for each code and Client.Close when done.
package wxphone
