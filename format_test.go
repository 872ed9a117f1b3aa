package wxphone

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// inContainers prints v, and a pointer to a copy of it, inside a slice, a
// struct and a map with every verb, including those that do not apply to
// pointers (%s, %q): fmt's error path for those calls no method of the
// value's fields.
func inContainers(v any) map[string]string {
	p := reflect.New(reflect.TypeOf(v))
	p.Elem().Set(reflect.ValueOf(v))
	ptr := p.Interface()
	out := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d", "%t"} {
		out["slice "+verb] = fmt.Sprintf(verb, []any{v, ptr})
		out["struct "+verb] = fmt.Sprintf(verb, struct {
			V any
			P any
		}{v, ptr})
		out["map "+verb] = fmt.Sprintf(verb, map[string]any{"v": v, "p": ptr})
		out["ptr "+verb] = fmt.Sprintf(verb, ptr)
	}
	return out
}

// TestMaskingTypesInContainers: the exported values that hold a secret, a
// session key, a token or a phone number print masked whatever they are
// nested in and whatever the verb.
func TestMaskingTypesInContainers(t *testing.T) {
	t.Parallel()
	const (
		phone  = "13800138000"
		secret = "s3cr3t-AppSecret-in-containers"
		skey   = "tiihtNczf5v6AKRyjwEUhQ=="
		token  = "ACCESS_TOKEN_in_containers_0123456789"
	)
	tok := Token{Value: token, ExpiresAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	apiErr := &APIError{Op: OpPhoneNumber, ErrCode: 40029, ErrMsg: "invalid code"}
	for name, v := range map[string]any{
		"PhoneNumber":                     PhoneNumber(phone),
		"PhoneInfo":                       PhoneInfo{PhoneNumber: phone, PurePhoneNumber: phone, CountryCode: "86", Watermark: Watermark{AppID: testAppID, Timestamp: 1}},
		"Secret":                          Secret(secret),
		"SessionKey":                      SessionKey(skey),
		"Session":                         Session{OpenID: "oUser", SessionKey: skey, UnionID: "uUser"},
		"Token":                           tok,
		"TokenSource":                     StaticTokenSource(tok),
		"TokenStatus":                     TokenStatus{Usable: true, Fingerprint: Fingerprint(token), ExpiresAt: tok.ExpiresAt, LastError: &TokenUnavailableError{AppID: testAppID, Reason: "cool-down", Err: apiErr}},
		"Config":                          Config{AppID: testAppID, Secret: secret, TokenSource: StaticTokenSource(tok)},
		"Config with a manager's options": Config{AppID: testAppID, Secret: secret, Token: TokenOptions{Store: NewMemoryTokenStore()}},
		"UpstreamEvent":                   UpstreamEvent{AppID: testAppID, Op: OpPhoneNumber, Err: &OutcomeUnknownError{Op: OpPhoneNumber, Err: apiErr}},
		"TokenFetchEvent":                 TokenFetchEvent{AppID: testAppID, Kind: "stable", Err: &TransportError{Op: OpStableToken, Err: errors.New("reset")}},
	} {
		for how, out := range inContainers(v) {
			for _, h := range []string{phone, secret, skey, token, "38001380"} {
				if strings.Contains(out, h) {
					t.Errorf("%s in a %s shows %q: %s", name, how, h, out)
				}
			}
		}
	}
}
