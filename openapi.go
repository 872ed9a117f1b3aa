package wxphone

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/wxphone/wxphone/internal/valid"
)

// APIQuota is one API's daily call quota for the app (WeChat's day,
// UTC+8).
type APIQuota struct {
	// DailyLimit is the calls allowed today.
	DailyLimit int64 `json:"daily_limit"`
	// Used is the calls made today.
	Used int64 `json:"used"`
	// Remain is the calls left today.
	Remain int64 `json:"remain"`
}

type quotaResp struct {
	envelope
	Quota *struct {
		DailyLimit flexInt `json:"daily_limit"`
		Used       flexInt `json:"used"`
		Remain     flexInt `json:"remain"`
	} `json:"quota"`
}

// APIQuota asks WeChat (POST /cgi-bin/openapi/quota/get) for the app's
// daily quota of the API at cgiPath, e.g. CGIPathPhoneNumber. The query
// itself counts against a daily quota of its own: call it every few
// minutes, not per request. A rejected access token is replaced once;
// nothing else is retried.
func (c *Client) APIQuota(ctx context.Context, cgiPath string) (APIQuota, error) {
	if len(cgiPath) < 2 || len(cgiPath) > 256 || cgiPath[0] != '/' || !valid.Printable(cgiPath) || strings.ContainsAny(cgiPath, "?#") {
		return APIQuota{}, &InputError{Field: "cgi_path", Reason: "want an API path such as /wxa/business/getuserphonenumber"}
	}
	body, err := json.Marshal(struct {
		CGIPath string `json:"cgi_path"`
	}{cgiPath})
	if err != nil {
		return APIQuota{}, err
	}
	var r quotaResp
	if _, err := c.callWithToken(ctx, epAPIQuota, body, &r); err != nil {
		return APIQuota{}, err
	}
	if r.Quota == nil {
		return APIQuota{}, &DecodeError{Op: OpAPIQuota, Reason: "errcode 0 without quota"}
	}
	return APIQuota{DailyLimit: int64(r.Quota.DailyLimit), Used: int64(r.Quota.Used), Remain: int64(r.Quota.Remain)}, nil
}

// RIDInfo is what WeChat recorded of a failed call, with every secret
// removed: see Client.RIDInfo.
type RIDInfo struct {
	// RID is the rid looked up.
	RID string `json:"rid"`
	// InvokeTime is when WeChat received the call.
	InvokeTime time.Time `json:"invoke_time"`
	// Cost is how long WeChat took to answer it.
	Cost time.Duration `json:"-"`
	// RequestURL is the call's query string (WeChat may prefix a path),
	// with the values of access_token, secret, code, js_code and the like
	// replaced by [REDACTED].
	RequestURL string `json:"request_url"`
	// RequestBody is the call's body, masked (see Client.RIDInfo).
	RequestBody string `json:"request_body"`
	// ResponseBody is WeChat's answer, masked.
	ResponseBody string `json:"response_body"`
	// ClientIP is the address the call came from.
	ClientIP string `json:"client_ip"`
}

type ridResp struct {
	envelope
	Request *struct {
		InvokeTime   flexInt `json:"invoke_time"`
		CostInMS     flexInt `json:"cost_in_ms"`
		RequestURL   string  `json:"request_url"`
		RequestBody  string  `json:"request_body"`
		ResponseBody string  `json:"response_body"`
		ClientIP     string  `json:"client_ip"`
	} `json:"request"`
}

// RIDInfo asks WeChat (POST /cgi-bin/openapi/rid/get) for the request and
// answer behind rid, the id WeChat puts at the end of every error message
// (APIError.RID). WeChat keeps rids for 7 days and answers only the app
// that made the call; /sns/ calls (jscode2session) cannot be looked up.
//
// The returned bodies never carry a secret: in JSON bodies the values of
// code, js_code, secret, access_token, session_key, encryptedData, iv and
// similar fields are replaced by [REDACTED], phone numbers are masked
// (138****5678), and so is any string that looks like one; this app's
// AppSecret and the access token used are replaced wherever they appear. A
// body that is not JSON is withheld. A rejected access token is replaced
// once; nothing else is retried.
func (c *Client) RIDInfo(ctx context.Context, rid string) (*RIDInfo, error) {
	rid = strings.TrimSpace(rid)
	if !valid.ID(rid, 64) {
		return nil, &InputError{Field: "rid", Reason: "want WeChat's rid, e.g. 632d16be-15ad5486-1e378de4"}
	}
	body, err := json.Marshal(struct {
		RID string `json:"rid"`
	}{rid})
	if err != nil {
		return nil, err
	}
	var r ridResp
	tok, err := c.callWithToken(ctx, epRIDInfo, body, &r)
	if err != nil {
		return nil, err
	}
	if r.Request == nil {
		return nil, &DecodeError{Op: OpRIDInfo, Reason: "errcode 0 without request"}
	}
	known := []string{tok, c.secret.Reveal()}
	q := r.Request
	return &RIDInfo{
		RID:          rid,
		InvokeTime:   time.Unix(int64(q.InvokeTime), 0),
		Cost:         time.Duration(q.CostInMS) * time.Millisecond,
		RequestURL:   maskQuery(scrub(q.RequestURL, known)),
		RequestBody:  maskBody(scrub(q.RequestBody, known)),
		ResponseBody: maskBody(scrub(q.ResponseBody, known)),
		ClientIP:     q.ClientIP,
	}, nil
}

// callWithToken POSTs body to ep with the current access token, replacing
// the token once if WeChat rejects it, and returns the token last used.
func (c *Client) callWithToken(ctx context.Context, ep endpoint, body []byte, out enveloped) (string, error) {
	tok, err := c.tokens.Token(ctx)
	if err != nil {
		return "", err
	}
	for retried := false; ; retried = true {
		err := c.up.call(ctx, ep, tokenQuery(tok.Value), body, out, tok.Value)
		var ae *APIError
		if err == nil || retried || !errors.As(err, &ae) || !ae.Is(ErrTokenInvalid) {
			return tok.Value, err
		}
		inv, ok := c.tokens.(TokenInvalidator)
		if !ok {
			return tok.Value, err
		}
		c.log.Info("access token rejected; invalidating and retrying once", "op", ep.op, "errcode", ae.ErrCode, "rid", ae.RID, "token", tok)
		if tok, err = inv.Invalidate(ctx, tok.Value); err != nil {
			return "", err
		}
	}
}

// scrub replaces every known secret value (of at least 8 bytes) in s.
func scrub(s string, known []string) string {
	for _, k := range known {
		if len(k) >= 8 && strings.Contains(s, k) {
			s = strings.ReplaceAll(s, k, redacted)
		}
	}
	return s
}

// secretFields are the field and parameter names whose values are
// replaced whole (compared in lower case).
var secretFields = map[string]bool{
	"code": true, "js_code": true, "secret": true, "appsecret": true, "access_token": true,
	"component_access_token": true, "authorizer_access_token": true, "refresh_token": true,
	"authorizer_refresh_token": true, "session_key": true, "encrypteddata": true, "iv": true,
	"cloudid": true, "ticket": true, "signature": true, "password": true, "key": true,
}

// phoneFields are the fields whose string values are masked as phone
// numbers whatever they look like.
var phoneFields = map[string]bool{"phonenumber": true, "purephonenumber": true, "phone": true, "mobile": true}

// maskQuery masks a request_url: an optional path, then a query string.
func maskQuery(s string) string {
	path, query, hasQuery := strings.Cut(s, "?")
	if !hasQuery {
		if !strings.Contains(s, "=") {
			return s // a bare path
		}
		path, query = "", s
	}
	parts := strings.Split(query, "&")
	for i, p := range parts {
		k, v, _ := strings.Cut(p, "=")
		name, err := url.QueryUnescape(k)
		if err != nil {
			parts[i] = redacted
			continue
		}
		val, err := url.QueryUnescape(v)
		switch {
		case err != nil || secretFields[strings.ToLower(name)]:
			parts[i] = k + "=" + redacted
		case looksLikePhone(val):
			parts[i] = k + "=" + url.QueryEscape(MaskPhone(val))
		}
	}
	out := strings.Join(parts, "&")
	if hasQuery {
		return path + "?" + out
	}
	return out
}

// maskBody masks a JSON body field by field, keeping its order and
// layout compact; anything else is withheld.
func maskBody(s string) string {
	t := strings.TrimSpace(s)
	if t == "" {
		return ""
	}
	out, ok := maskJSON([]byte(t))
	if !ok {
		return "[withheld: " + itoa(len(t)) + " bytes that are not JSON]"
	}
	return out
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// maskJSON rewrites one JSON value token by token.
func maskJSON(b []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out strings.Builder
	type frame struct {
		object  bool
		wantKey bool // in an object, the next string is a key
		n       int  // members or elements written
	}
	var stack []frame
	key := "" // the key of the value being written, in lower case
	sep := func() {
		if len(stack) == 0 {
			return
		}
		f := &stack[len(stack)-1]
		if f.n > 0 && (!f.object || f.wantKey) {
			out.WriteByte(',')
		}
	}
	value := func() { // a value was written: the next token is a key again
		if len(stack) > 0 {
			f := &stack[len(stack)-1]
			f.n++
			if f.object {
				f.wantKey = true
			}
		}
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", false
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				sep()
				if secretFields[key] { // a secret field holding a container: drop it whole
					if !skipValue(dec) {
						return "", false
					}
					out.WriteString(`"` + redacted + `"`)
					value()
					key = ""
					continue
				}
				out.WriteRune(rune(v))
				stack = append(stack, frame{object: v == '{', wantKey: v == '{'})
			default:
				out.WriteRune(rune(v))
				stack = stack[:len(stack)-1]
				value()
			}
			key = ""
		case string:
			if f := len(stack); f > 0 && stack[f-1].object && stack[f-1].wantKey {
				sep()
				kb, _ := json.Marshal(v)
				out.Write(kb)
				out.WriteByte(':')
				stack[f-1].wantKey = false
				key = strings.ToLower(v)
				continue
			}
			sep()
			switch {
			case secretFields[key]:
				v = redacted
			case phoneFields[key], looksLikePhone(v):
				v = MaskPhone(v)
			}
			vb, _ := json.Marshal(v)
			out.Write(vb)
			value()
		default: // number, bool, null
			sep()
			switch {
			case secretFields[key]:
				out.WriteString(`"` + redacted + `"`)
			case phoneFields[key] || len(tokenText(v)) >= 11 && looksLikePhone(tokenText(v)):
				vb, _ := json.Marshal(MaskPhone(tokenText(v)))
				out.Write(vb)
			default:
				vb, _ := json.Marshal(v)
				out.Write(vb)
			}
			value()
		}
		if len(stack) == 0 && out.Len() > 0 {
			if _, err := dec.Token(); err != io.EOF {
				return "", false // trailing data
			}
			break
		}
	}
	return out.String(), len(stack) == 0 && out.Len() > 0
}

// skipValue consumes the rest of a container whose opening delimiter was
// just read.
func skipValue(dec *json.Decoder) bool {
	for depth := 1; depth > 0; {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		if d, ok := tok.(json.Delim); ok {
			if d == '{' || d == '[' {
				depth++
			} else {
				depth--
			}
		}
	}
	return true
}

func tokenText(v json.Token) string {
	if n, ok := v.(json.Number); ok {
		return n.String()
	}
	return ""
}

// looksLikePhone reports a string of 7 to 15 digits, optionally with a
// leading + and single spaces or dashes between digit groups: a phone
// number in any of WeChat's formats.
func looksLikePhone(s string) bool {
	if len(s) < 7 || len(s) > 24 {
		return false
	}
	digits := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '+' && i == 0:
		case (c == ' ' || c == '-') && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return digits >= 7 && digits <= 15
}
