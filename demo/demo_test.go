package demo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/wxphone/wxphone/demo"
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
	resp, err := http.DefaultClient.Do(req)
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
	s, b := call(t, "GET", info.ServiceURL+"/demo/config", "", "")
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
	req, _ := http.NewRequest("GET", info.ServiceURL+"/demo/config", nil)
	req.Host = "evil.example:80"
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
