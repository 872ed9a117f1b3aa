package demo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/wxphone/wxphone/demo"
	"github.com/wxphone/wxphone/internal/contract"
)

// startDemo runs the demo on random loopback ports until the test ends.
func startDemo(t *testing.T) (demo.Info, *bytes.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan demo.Info, 1)
	done := make(chan error, 1)
	out := &bytes.Buffer{}
	go func() {
		done <- demo.Run(ctx, demo.Options{Addr: "127.0.0.1:0", EmulatorAddr: "127.0.0.1:0", OnReady: func(i demo.Info) { ready <- i }}, out)
	}()
	var info demo.Info
	select {
	case info = <-ready:
	case err := <-done:
		t.Fatalf("demo.Run: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo.Run: %v", err)
		}
	})
	return info, out
}

// apiContract is docs/openapi.json; every answer of the demo's service
// that call receives is checked against it, except the page's own paths.
var apiContract = sync.OnceValues(func() (*contract.Checker, error) {
	p, err := contract.FindDoc()
	if err != nil {
		return nil, err
	}
	c, err := contract.Load(p)
	if err != nil {
		return nil, err
	}
	return c.Ignoring(func(path string) bool {
		switch path {
		case "/", "/index.html", "/assets/app.js", "/assets/style.css":
			return true
		}
		return strings.HasPrefix(path, "/demo/")
	}), nil
})

// client returns an HTTP client whose answers are checked against the
// API contract.
func client(t *testing.T) *http.Client {
	t.Helper()
	c, err := apiContract()
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: c.Transport(t, nil)}
}

// call sends a request as the demo page would: JSON bodies, and the page's
// own Origin on the demo endpoints.
func call(t *testing.T, method, url, auth, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	if strings.Contains(url, "/demo/") {
		req.Header.Set("Origin", "http://"+req.URL.Host)
	}
	resp, err := client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestDemoRun(t *testing.T) {
	info, out := startDemo(t)
	banner := out.String()
	for _, want := range []string{info.ServiceURL, info.EmulatorURL + "/admin/phone-codes", "Authorization: Bearer " + info.APIKey, info.TokenAPIKey, "/v1/phone-number"} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	if len(info.APIKey) < 32 {
		t.Errorf("short key %q", info.APIKey)
	}

	// The page and its assets, with a strict CSP and no external URL.
	s, page := call(t, "GET", info.ServiceURL+"/", "", "")
	if s != 200 || !strings.Contains(string(page), `id="tap"`) {
		t.Fatalf("page: %d", s)
	}
	for _, asset := range []string{"/assets/app.js", "/assets/style.css"} {
		if s, b := call(t, "GET", info.ServiceURL+asset, "", ""); s != 200 || len(b) == 0 {
			t.Errorf("%s: %d", asset, s)
		} else if strings.Contains(string(b), "https://") {
			t.Errorf("%s references an external URL", asset)
		}
	}
	if strings.Contains(string(page), "https://") {
		t.Errorf("the page references an external URL")
	}

	// The page's flow, over HTTP: config, mint, exchange, replay, fault.
	s, b := call(t, "POST", info.ServiceURL+"/demo/config", "", "{}")
	var cfg struct{ APIKey, AppID string }
	if err := json.Unmarshal(b, &cfg); s != 200 || err != nil || cfg.APIKey != info.APIKey || cfg.AppID != demo.DemoAppID {
		t.Fatalf("config: %d %s", s, b)
	}
	mint := func() string {
		s, b := call(t, "POST", info.ServiceURL+"/demo/mint", "", `{"purePhoneNumber":"13955556666"}`)
		var m struct{ Code string }
		if err := json.Unmarshal(b, &m); s != 200 || err != nil || len(m.Code) != 64 {
			t.Fatalf("mint: %d %s", s, b)
		}
		return m.Code
	}
	code := mint()
	for i, wantReplay := range []bool{false, true} {
		s, b := call(t, "POST", info.ServiceURL+"/v1/phone-number", info.APIKey, `{"code":"`+code+`"}`)
		var ok struct {
			PhoneNumber string
			Replayed    bool
		}
		if err := json.Unmarshal(b, &ok); s != 200 || err != nil || ok.PhoneNumber != "13955556666" || ok.Replayed != wantReplay {
			t.Fatalf("exchange %d: %d %s", i, s, b)
		}
	}
	if s, b := call(t, "POST", info.ServiceURL+"/demo/code-stats", "", `{"code":"`+code+`"}`); s != 200 || !strings.Contains(string(b), `"calls":1`) {
		t.Errorf("code stats: %d %s", s, b)
	}
	if s, b := call(t, "POST", info.ServiceURL+"/demo/fault", "", `{"fault":"drop_after_consume"}`); s != 200 || !strings.Contains(string(b), "outcome_unknown") {
		t.Fatalf("fault: %d %s", s, b)
	}
	if s, b := call(t, "POST", info.ServiceURL+"/v1/phone-number", info.APIKey, `{"code":"`+mint()+`"}`); s != 502 || !strings.Contains(string(b), `"outcome_unknown"`) {
		t.Errorf("after drop_after_consume: %d %s", s, b)
	}
	if s, _ := call(t, "POST", info.ServiceURL+"/demo/fault", "", `{"fault":"nope"}`); s != 400 {
		t.Errorf("unknown fault: %d", s)
	}
	// The central token endpoint with the token key.
	if s, b := call(t, "GET", info.ServiceURL+"/v1/access-token", info.TokenAPIKey, ""); s != 200 || !strings.Contains(string(b), "access_token") {
		t.Errorf("token: %d %s", s, b)
	}

	// DNS rebinding: a non-loopback Host is refused on the demo routes.
	req, _ := http.NewRequest("POST", info.ServiceURL+"/demo/config", strings.NewReader("{}"))
	req.Host = "evil.example:80"
	req.Header.Set("Origin", "http://evil.example")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest || strings.Contains(string(b), info.APIKey) {
		t.Errorf("rebinding: %d %s", resp.StatusCode, b)
	}
}

// TestDemoEndpointsRefuseOtherSites: the demo endpoints answer only a
// same-origin JSON POST (the page's fetch). A form another site posts
// (text/plain or form-encoded, its own Origin), a request without Origin,
// or a GET cannot inject a fault, mint a code or read the demo key.
func TestDemoEndpointsRefuseOtherSites(t *testing.T) {
	info, _ := startDemo(t)
	own := info.ServiceURL
	for _, tc := range []struct {
		name, method, path, origin, contentType, body string
		status                                        int
	}{
		{"cross-site form post injects no fault", "POST", "/demo/fault", "http://evil.example", "application/x-www-form-urlencoded", `{"fault":"drop_after_consume"}`, 403},
		{"cross-site text/plain post", "POST", "/demo/fault", "http://evil.example", "text/plain", `{"fault":"drop_after_consume"}`, 403},
		{"cross-site JSON", "POST", "/demo/mint", "http://evil.example", "application/json", `{}`, 403},
		{"another port of this host", "POST", "/demo/fault", "http://127.0.0.1:1", "application/json", `{"fault":"drop_after_consume"}`, 403},
		{"opaque origin", "POST", "/demo/config", "null", "application/json", `{}`, 403},
		{"no Origin", "POST", "/demo/config", "", "application/json", `{}`, 403},
		{"same origin, form body", "POST", "/demo/fault", own, "application/x-www-form-urlencoded", `{"fault":"drop_after_consume"}`, 415},
		{"same origin, no content type", "POST", "/demo/mint", own, "", `{}`, 415},
		{"GET config", "GET", "/demo/config", own, "", "", 405},
		{"same origin JSON", "POST", "/demo/config", own, "application/json", `{}`, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, own+tc.path, strings.NewReader(tc.body))
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("%d %s; want %d", resp.StatusCode, b, tc.status)
			}
			if tc.status != 200 && strings.Contains(string(b), info.APIKey) {
				t.Errorf("a refused request read the demo key")
			}
		})
	}
	// No refused request injected the fault: an exchange succeeds.
	s, b := call(t, "POST", own+"/demo/mint", "", `{}`)
	var m struct{ Code string }
	if err := json.Unmarshal(b, &m); s != 200 || err != nil {
		t.Fatalf("mint: %d %s", s, b)
	}
	if s, b := call(t, "POST", own+"/v1/phone-number", info.APIKey, `{"code":"`+m.Code+`"}`); s != 200 {
		t.Errorf("exchange after the refused fault posts: %d %s", s, b)
	}
}

// TestDemoUnknownPaths: the demo answers unknown paths, and encoded ones,
// with the API's documented 404 (the contract transport checks the shape).
func TestDemoUnknownPaths(t *testing.T) {
	info, _ := startDemo(t)
	for _, p := range []string{"/nope", "/demo/nope", "/assets/nope.js", "/%64emo/config", "/v1%2Fphone-number", "/%6Detrics"} {
		s, b := call(t, "GET", info.ServiceURL+p, "", "")
		var eb struct {
			Error struct{ Code, RequestID string } `json:"error"`
		}
		if err := json.Unmarshal(b, &eb); s != 404 || err != nil || eb.Error.Code != "not_found" {
			t.Errorf("%s: %d %s", p, s, b)
		}
	}
}
