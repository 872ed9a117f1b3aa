package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/internal/contract"
	"github.com/wxphone/wxphone/internal/logtest"
	"github.com/wxphone/wxphone/server"
	"github.com/wxphone/wxphone/service"
	"github.com/wxphone/wxphone/wxmock"
)

// The fuzz targets drive the real handler (middleware, routes, the real
// service and clients) with httptest, against the emulator reached
// in-process, and assert for every input: no panic and no 500 (the
// middleware turns a panic into a 500), only documented statuses with a
// well-formed error body whose code matches the status, and no echo of the
// input (code, openid, appid, API key, access token) in the answer's body,
// headers or the DEBUG log, except the X-Request-Id that the API documents
// as echoed.
//
// Placeholders let the fuzzer reach the success paths: in the body and
// headers, {CODE} is replaced by a freshly minted phone code, {APPID} by the
// served appid, {PHONE_KEY} and {TOKEN_KEY} by the configured API keys and
// {TOKEN} by the current access token.

// inProcess sends a client's requests straight to a handler.
type inProcess struct{ h http.Handler }

func (t inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

type fuzzEnv struct {
	emu      *wxmock.Server
	handler  http.Handler
	contract *contract.Checker
	logs     *logtest.Buffer
	mu       sync.Mutex // one request at a time, so the log delta is its own
}

func newFuzzEnv(tb testing.TB) *fuzzEnv {
	emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: appA, Secret: secretA}, {AppID: appB, Secret: secretB}}})
	if err != nil {
		tb.Fatal(err)
	}
	e := &fuzzEnv{emu: emu, logs: &logtest.Buffer{}, contract: checker(tb)}
	logger := server.NewLogger(e.logs, slog.LevelDebug)
	hc := &http.Client{Transport: inProcess{emu}}
	c, err := wxphone.New(wxphone.Config{AppID: appA, Secret: secretA, BaseURL: "http://127.0.0.1", HTTPClient: hc, Logger: logger})
	if err != nil {
		tb.Fatal(err)
	}
	svc, err := service.New(service.Config{Clients: []*wxphone.Client{c}, Logger: logger, ExchangeTimeout: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = svc.Close(context.Background()) })
	srv, err := server.New(server.Config{Service: svc, APIKeys: []wxphone.Secret{keyPhone, keyBoth}, TokenAPIKeys: []wxphone.Secret{keyToken, keyBoth},
		Logger: logger, RequestTimeout: 5 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	if err := svc.Warm(context.Background()); err != nil {
		tb.Fatal(err)
	}
	e.handler = srv.Handler()
	return e
}

// fuzzAnswer is one answer and the log lines written while it was made.
type fuzzAnswer struct {
	status   int
	header   http.Header
	body     []byte
	logs     string
	contract error // the answer against docs/openapi.json
}

// serve runs one request through the handler.
func (e *fuzzEnv) serve(method, path, rawQuery string, header map[string]string, body []byte) fuzzAnswer {
	e.mu.Lock()
	defer e.mu.Unlock()
	before := len(e.logs.String())
	req := httptest.NewRequest(method, "http://wxphone.test/", bytes.NewReader(body))
	req.URL.Path, req.URL.RawQuery = path, rawQuery
	req.ContentLength = int64(len(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	cerr := e.contract.Check(req, rec.Code, rec.Header(), rec.Body.Bytes())
	return fuzzAnswer{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes(), logs: e.logs.String()[before:], contract: cerr}
}

// expand replaces the placeholders.
func (e *fuzzEnv) expand(tb testing.TB, s string) string {
	if !strings.Contains(s, "{") {
		return s
	}
	pairs := []string{"{APPID}", appA, "{PHONE_KEY}", keyPhone, "{TOKEN_KEY}", keyToken}
	if strings.Contains(s, "{CODE}") {
		code, err := e.emu.MintPhoneCode(wxmock.PhoneGrant{AppID: appA, PurePhoneNumber: "13912345678"})
		if err != nil {
			tb.Fatal(err)
		}
		pairs = append(pairs, "{CODE}", code)
	}
	if strings.Contains(s, "{TOKEN}") {
		if toks := e.emu.ValidTokens(appA); len(toks) > 0 {
			pairs = append(pairs, "{TOKEN}", toks[len(toks)-1])
		}
	}
	return strings.NewReplacer(pairs...).Replace(s)
}

// documented maps each error code to its documented statuses.
var documented = func() map[string][]int {
	m := map[string][]int{}
	for _, ei := range server.ErrorCodes() {
		m[string(ei.Code)] = ei.Statuses
	}
	return m
}()

// checkShape asserts the status is documented for route and that an error
// answer has the documented body.
func checkShape(t *testing.T, a fuzzAnswer, allowed ...int) {
	t.Helper()
	ok := false
	for _, s := range allowed {
		ok = ok || a.status == s
	}
	if !ok || a.status == http.StatusInternalServerError {
		t.Fatalf("status %d: %s\nlogs: %s", a.status, a.body, a.logs)
	}
	if a.contract != nil {
		t.Fatalf("the answer breaks docs/openapi.json: %v", a.contract)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Fatalf("Content-Type %q", ct)
	}
	if a.status == http.StatusOK {
		return
	}
	var eb struct {
		Error struct {
			Code      string `json:"code"`
			Message   string `json:"message"`
			Errcode   int    `json:"errcode"`
			RID       string `json:"rid"`
			RequestID string `json:"request_id"`
		} `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(a.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil || eb.Error.Message == "" || eb.Error.RequestID != a.header.Get("X-Request-Id") {
		t.Fatalf("malformed error body (%v): %s", err, a.body)
	}
	statuses, known := documented[eb.Error.Code]
	if !known {
		t.Fatalf("undocumented error code %q", eb.Error.Code)
	}
	match := false
	for _, s := range statuses {
		match = match || s == a.status
	}
	if !match {
		t.Fatalf("error %s with status %d; documented %v", eb.Error.Code, a.status, statuses)
	}
}

// visible is everything of an answer the caller or the log sees, minus the
// request id, which is documented to echo X-Request-Id.
func (a fuzzAnswer) visible(requestID string) string {
	var b strings.Builder
	b.Write(a.body)
	for k, vs := range a.header {
		if k == "X-Request-Id" {
			continue
		}
		b.WriteString("\n" + k + ": " + strings.Join(vs, ", "))
	}
	b.WriteString("\n" + a.logs)
	return strings.ReplaceAll(b.String(), `"request_id":"`+jsonEscaped(requestID)+`"`, "")
}

// checkNoEcho fails when an input value shows in the answer or the log. A
// value is searched for only if it is long enough to be told apart, and a
// hit counts only if the same request with that value replaced by another
// of the same length does not show it too (the value is then part of a
// fixed text, such as a field name).
func checkNoEcho(t *testing.T, a fuzzAnswer, values map[string]string, again func(what, replacement string) fuzzAnswer) {
	t.Helper()
	reqID := a.header.Get("X-Request-Id")
	text := a.visible(reqID)
	for what, v := range values {
		if len(v) < 8 || !strings.Contains(text, v) && !strings.Contains(text, jsonEscaped(v)) {
			continue
		}
		alt := strings.Repeat("Q", len(v))
		b := again(what, alt)
		if other := b.visible(b.header.Get("X-Request-Id")); strings.Contains(other, v) || strings.Contains(other, jsonEscaped(v)) {
			continue
		}
		t.Fatalf("the %s %q is echoed: %d %s %v\nlogs: %s", what, v, a.status, a.body, a.header, a.logs)
	}
}

func jsonEscaped(s string) string {
	b, _ := json.Marshal(s)
	return strings.Trim(string(b), `"`)
}

func FuzzPhoneNumberRequest(f *testing.F) {
	f.Add("application/json", "Bearer {PHONE_KEY}", "", []byte(`{"code":"{CODE}"}`))
	f.Add("application/json; charset=utf-8", "Bearer {PHONE_KEY}", "req-1", []byte(`{"code":"{CODE}","appid":"{APPID}","openid":"oGZUI0egBJY1zhBYw2KhdUfwVJJE"}`))
	f.Add("application/json", "bearer   {PHONE_KEY}  ", "", []byte(`{"code":"0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"}`))
	f.Add("application/json", "Bearer {TOKEN_KEY}", "", []byte(`{"code":"{CODE}"}`))
	f.Add("application/json", "Bearer not-a-configured-key-0000", "", []byte(`{"code":"{CODE}"}`))
	f.Add("application/json", "Basic cGhvbmU6a2V5", "", []byte(`{"code":"{CODE}"}`))
	f.Add("text/plain", "Bearer {PHONE_KEY}", "", []byte(`{"code":"{CODE}"}`))
	f.Add("application/json", "Bearer {PHONE_KEY}", "", []byte(`{"code":"{CODE}","open_id":"oUser"}`))
	f.Add("application/json", "Bearer {PHONE_KEY}", "", []byte(`{"code":"{CODE}"} {"code":"{CODE}"}`))
	f.Add("application/json", "Bearer {PHONE_KEY}", "", []byte(`{"code":12345}`))
	f.Add("application/json", "Bearer {PHONE_KEY}", "", []byte(`{"code":"secret code with spaces 0123"}`))
	f.Add("application/json", "Bearer {PHONE_KEY}", "", []byte(`{"code":"{CODE}","appid":"wxunknownappid0001"}`))
	f.Add("application/json", "Bearer {PHONE_KEY}", "\x00\xff", []byte(`{"code":"{CODE}","openid":"o p q r s t u v"}`))
	f.Add("application/json", "Bearer {PHONE_KEY}", "", []byte(`{"code":"`+strings.Repeat("a", 5000)+`"}`))
	f.Add("application/json", "Bearer {PHONE_KEY}", "", []byte(`{"code":"\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9"}`))
	f.Add("application/json", "", "", []byte(`null`))
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, contentType, auth, requestID string, body []byte) {
		auth = e.expand(t, auth)
		requestID = e.expand(t, requestID) // echoed as documented, so never searched
		b := e.expand(t, string(body))
		build := func(auth, b string) fuzzAnswer {
			h := map[string]string{"Content-Type": contentType, "X-Request-Id": requestID}
			if auth != "" {
				h["Authorization"] = auth
			}
			return e.serve(http.MethodPost, server.PathPhoneNumber, "", h, []byte(b))
		}
		a := build(auth, b)
		checkShape(t, a, 200, 400, 401, 403, 409, 413, 415, 422, 429, 502, 503, 504)
		if a.status >= 500 {
			// The emulator is healthy and in-process: an upstream
			// status here is a bug in the service.
			t.Fatalf("status %d with a healthy upstream: %s\nlogs: %s", a.status, a.body, a.logs)
		}
		values := map[string]string{}
		var req map[string]any
		if json.Unmarshal([]byte(b), &req) == nil {
			for _, k := range []string{"code", "openid", "appid"} {
				if s, ok := req[k].(string); ok && s != appA {
					values[k] = s
				}
			}
		}
		if _, key, ok := strings.Cut(auth, " "); ok {
			values["API key"] = strings.TrimSpace(key)
		}
		values["Authorization header"] = auth
		checkNoEcho(t, a, values, func(what, alt string) fuzzAnswer {
			switch what {
			case "API key", "Authorization header":
				return build(strings.ReplaceAll(auth, values[what], alt), b)
			}
			return build(auth, strings.ReplaceAll(b, values[what], alt))
		})
		if a.status == http.StatusOK {
			if !strings.Contains(string(a.body), `"phoneNumber":"13912345678"`) || strings.Contains(a.logs, "13912345678") {
				t.Fatalf("success answer %s; logs %s", a.body, a.logs)
			}
		}
	})
}

func FuzzTokenEndpoints(f *testing.F) {
	f.Add(false, "Bearer {TOKEN_KEY}", "appid={APPID}", "application/json", []byte(nil))
	f.Add(false, "Bearer {TOKEN_KEY}", "", "", []byte(nil))
	f.Add(false, "Bearer {TOKEN_KEY}", "appid=wxunknownappid0001", "", []byte(nil))
	f.Add(false, "Bearer {TOKEN_KEY}", "appid={APPID}&access_token=86_leaked_token_value", "", []byte(nil))
	f.Add(false, "Bearer {TOKEN_KEY}", "%zz=%zz;&&", "", []byte(nil))
	f.Add(false, "Bearer {PHONE_KEY}", "appid={APPID}", "", []byte(nil))
	f.Add(true, "Bearer {TOKEN_KEY}", "", "application/json", []byte(`{"appid":"{APPID}","access_token":"{TOKEN}"}`))
	f.Add(true, "Bearer {TOKEN_KEY}", "", "application/json", []byte(`{"appid":"{APPID}","access_token":"86_not_the_current_token_0123456789"}`))
	f.Add(true, "Bearer {TOKEN_KEY}", "", "application/json", []byte(`{"access_token":""}`))
	f.Add(true, "Bearer {TOKEN_KEY}", "", "application/json", []byte(`{"access_token":"`+strings.Repeat("t", 513)+`"}`))
	f.Add(true, "Bearer {TOKEN_KEY}", "", "application/json", []byte(`{"access_token":"tok with space 0123456789"}`))
	f.Add(true, "Bearer {TOKEN_KEY}", "", "application/json", []byte(`{"appid":"{APPID}","access_token":"{TOKEN}","extra":"86_extra_value_0123"}`))
	f.Add(true, "Bearer {TOKEN_KEY}", "", "text/plain", []byte(`{"access_token":"x"}`))
	f.Add(true, "Bearer {PHONE_KEY}", "", "application/json", []byte(`{"access_token":"x"}`))
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, invalidate bool, auth, query, contentType string, body []byte) {
		auth = e.expand(t, auth)
		query = e.expand(t, query)
		b := e.expand(t, string(body))
		build := func(auth, query, b string) fuzzAnswer {
			h := map[string]string{"Authorization": auth}
			if invalidate {
				h["Content-Type"] = contentType
				return e.serve(http.MethodPost, server.PathTokenInvalidate, query, h, []byte(b))
			}
			return e.serve(http.MethodGet, server.PathAccessToken, query, h, nil)
		}
		a := build(auth, query, b)
		checkShape(t, a, 200, 400, 401, 403, 409, 413, 415, 429, 503, 504)
		values := map[string]string{}
		if _, key, ok := strings.Cut(auth, " "); ok {
			values["API key"] = strings.TrimSpace(key)
		}
		if invalidate {
			var req map[string]any
			if json.Unmarshal([]byte(b), &req) == nil {
				for k, v := range req {
					if s, ok := v.(string); ok && s != appA {
						values["body field "+k] = s
					}
				}
			}
		} else {
			for _, part := range strings.FieldsFunc(query, func(r rune) bool { return r == '&' || r == '=' || r == ';' }) {
				if part != appA && part != "appid" {
					values["query part "+part] = part
				}
			}
			q, _ := url.ParseQuery(query)
			for k, vs := range q {
				for _, v := range append(vs, k) {
					if v != appA && v != "appid" {
						values["query value "+v] = v
					}
				}
			}
		}
		if a.status == http.StatusOK {
			var tr struct {
				AccessToken string `json:"access_token"`
				ExpiresIn   int64  `json:"expires_in"`
			}
			if err := json.Unmarshal(a.body, &tr); err != nil || tr.AccessToken == "" || tr.ExpiresIn < 1 {
				t.Fatalf("token answer %s", a.body)
			}
			if strings.Contains(a.logs, tr.AccessToken) {
				t.Fatalf("the token is logged: %s", a.logs)
			}
			// The answer's token is the service's own, not an echo.
			for k, v := range values {
				if v == tr.AccessToken {
					delete(values, k)
				}
			}
		}
		checkNoEcho(t, a, values, func(what, alt string) fuzzAnswer {
			v := values[what]
			if what == "API key" {
				return build(strings.ReplaceAll(auth, v, alt), query, b)
			}
			return build(auth, strings.ReplaceAll(query, v, alt), strings.ReplaceAll(b, v, alt))
		})
	})
}
