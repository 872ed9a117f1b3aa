package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/wxphone/wxphone/internal/contract"
	"github.com/wxphone/wxphone/server"
)

// apiContract is docs/openapi.json, loaded and validated once per test
// binary. newEnv wraps every test server's handler with it, so that every
// answer of the server tests is checked against the document.
var apiContract = sync.OnceValues(func() (*contract.Checker, error) {
	p, err := contract.FindDoc()
	if err != nil {
		return nil, err
	}
	return contract.Load(p)
})

func checker(tb testing.TB) *contract.Checker {
	tb.Helper()
	c, err := apiContract()
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// TestOpenAPIValidates: the document passes an independent OpenAPI 3.1
// validator (kin-openapi), which does refuse a broken document.
func TestOpenAPIValidates(t *testing.T) {
	b, err := os.ReadFile("../docs/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := contract.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !doc.IsOpenAPI31OrLater() {
		t.Errorf("openapi %s: the document is written for 3.1", doc.OpenAPI)
	}
	// The validator is not a no-op: a dangling reference, a response
	// without a description, a wrongly typed schema keyword are refused.
	for name, edit := range map[string][2]string{
		"dangling $ref":           {`"$ref": "#/components/schemas/PhoneNumber"`, `"$ref": "#/components/schemas/NoSuchSchema"`},
		"response description":    {`"description": "Up."`, `"x-description": "Up."`},
		"schema keyword type":     {`"maxLength": 128`, `"maxLength": "long"`},
		"unknown schema type":     {`"type": "boolean"`, `"type": "bool"`},
		"operation without reply": {`"responses": {`, `"responses": {}, "x": {`},
	} {
		broken := strings.Replace(string(b), edit[0], edit[1], 1)
		if broken == string(b) {
			t.Fatalf("%s: the edit does not apply", name)
		}
		if _, err := contract.Parse([]byte(broken)); err == nil {
			t.Errorf("%s: a broken document passes the validator", name)
		}
	}
}

// recordingT collects the contract failures of a wrapped handler.
type recordingT struct {
	mu   sync.Mutex
	errs []string
}

func (r *recordingT) Helper() {}
func (r *recordingT) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// TestContractCatchesDrift: the wrapper the server tests use fails on an
// answer the document does not describe, and passes the real server's.
func TestContractCatchesDrift(t *testing.T) {
	c := checker(t)
	jsonAnswer := func(status int, body string, hdr ...string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.Header().Set("X-Request-Id", "req-1")
			for i := 0; i+1 < len(hdr); i += 2 {
				w.Header().Set(hdr[i], hdr[i+1])
			}
			w.WriteHeader(status)
			_, _ = w.Write([]byte(body))
		})
	}
	notFound := `{"error":{"code":"not_found","message":"No such route.","request_id":"req-1"}}`
	tests := []struct {
		name, method, path string
		h                  http.Handler
		want               string // "" passes
	}{
		{"documented", "GET", "/healthz", jsonAnswer(200, `{"status":"ok"}`), ""},
		{"undocumented status", "GET", "/healthz", jsonAnswer(http.StatusTeapot, `{"error":{"code":"internal_error","message":"x","request_id":"req-1"}}`), "status not documented"},
		{"undocumented field", "GET", "/healthz", jsonAnswer(200, `{"status":"ok","uptime":3}`), "uptime"},
		{"wrong value", "GET", "/healthz", jsonAnswer(200, `{"status":"up"}`), "doesn't match"},
		{"undocumented error code", "POST", "/v1/phone-number", jsonAnswer(400, `{"error":{"code":"teapot","message":"x","request_id":"req-1"}}`), "doesn't match"},
		{"missing required field", "GET", "/readyz", jsonAnswer(200, `{"status":"ready","apps":[{"appid":"wx1","ready":true}]}`), "expires_in"},
		{"undocumented header", "GET", "/healthz", jsonAnswer(200, `{"status":"ok"}`, "Retry-After", "3"), "Retry-After"},
		{"405 without Allow", "DELETE", "/healthz", jsonAnswer(405, `{"error":{"code":"method_not_allowed","message":"x","request_id":"req-1"}}`), "Allow"},
		{"bad request id", "GET", "/healthz", jsonAnswer(200, `{"status":"ok"}`, "X-Request-Id", "a b"), "X-Request-Id"},
		{"unknown path not 404", "GET", "/nope", jsonAnswer(200, `{}`), "unknown path"},
		{"unknown path 404 shape", "GET", "/nope", jsonAnswer(404, `{"error":"not found"}`), "doesn't match"},
		{"unknown path documented 404", "GET", "/nope", jsonAnswer(404, notFound), ""},
		{"encoded path is unknown", "GET", "/%6Detrics", jsonAnswer(200, "x"), "unknown path"},
		{"HEAD with the GET statuses", "HEAD", "/healthz", jsonAnswer(200, ""), ""},
		{"HEAD undocumented status", "HEAD", "/healthz", jsonAnswer(http.StatusTeapot, ""), "status not documented"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &recordingT{}
			rec := httptest.NewRecorder()
			c.Handler(rt, tt.h).ServeHTTP(rec, httptest.NewRequest(tt.method, "http://wxphone.test"+tt.path, nil))
			got := strings.Join(rt.errs, "; ")
			switch {
			case tt.want == "" && got != "":
				t.Errorf("refused a documented answer: %s", got)
			case tt.want != "" && !strings.Contains(got, tt.want):
				t.Errorf("contract errors %q; want one mentioning %q", got, tt.want)
			}
		})
	}
}

// TestContractWrapsServerTests: newEnv's test server is the wrapped
// handler, so the contract sees the answers of the server tests.
func TestContractWrapsServerTests(t *testing.T) {
	rt := &recordingT{}
	e := newEnv(t, envOpts{contract: rt})
	// An answer the document allows, then one it does not: the server's
	// own 404 checked as if it answered a documented route.
	e.do(request{method: "GET", path: server.PathHealthz})
	if len(rt.errs) != 0 {
		t.Fatalf("a documented answer was refused: %v", rt.errs)
	}
	e.do(request{method: "GET", path: "/no-such-route"})
	if len(rt.errs) != 0 {
		t.Fatalf("the 404 was refused: %v", rt.errs)
	}
	// The wrapper sees what the tests see: drop a field from a real answer
	// on its way out and the check fails.
	e2 := newEnv(t, envOpts{contract: rt, wrapServer: func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			var m map[string]any
			_ = json.Unmarshal(rec.Body.Bytes(), &m)
			delete(m, "apps")
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			_ = json.NewEncoder(w).Encode(m)
		})
	}})
	e2.do(request{method: "GET", path: server.PathReadyz})
	if len(rt.errs) != 1 || !strings.Contains(rt.errs[0], "apps") {
		t.Fatalf("contract errors %v; want one about the missing apps", rt.errs)
	}
}
