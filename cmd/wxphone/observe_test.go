package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/internal/logtest"
	"github.com/wxphone/wxphone/wxmock"
)

const (
	obsApp    = "wxobserve0000001"
	obsSecret = "observe-secret-0123456789"
	obsKey    = "observe-api-key-0123456789"
)

func obsEmulator(t *testing.T) (*wxmock.Server, string) {
	t.Helper()
	emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: obsApp, Secret: obsSecret}},
		QuotaDailyLimits: map[string]int{wxmock.CGIPathPhone: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(emu)
	t.Cleanup(ts.Close)
	return emu, ts.URL
}

func obsEnv(base string, extra ...string) func(string) string {
	env := map[string]string{"WX_APPID": obsApp, "WX_SECRET": obsSecret, "WX_API_BASE": base, "WXPHONE_API_KEYS": obsKey}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return func(k string) string { return env[k] }
}

func TestQuotaCommand(t *testing.T) {
	emu, base := obsEmulator(t)
	c, err := wxphone.New(wxphone.Config{AppID: obsApp, Secret: obsSecret, BaseURL: base})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	code, _ := emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: "13800138000"})
	if _, err := c.PhoneNumber(context.Background(), code); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if st := run(context.Background(), []string{"quota"}, &out, &errb, obsEnv(base)); st != 0 {
		t.Fatalf("exit %d: %s %s", st, out.String(), errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "APPID") ||
		strings.Join(strings.Fields(lines[1]), " ") != obsApp+" getuserphonenumber 1000 1 999" ||
		!strings.HasPrefix(strings.Join(strings.Fields(lines[2]), " "), obsApp+" stable_token 100000 ") {
		t.Errorf("table:\n%s", out.String())
	}
	out.Reset()
	if st := run(context.Background(), []string{"quota", "--json", "--log-level", "warn"}, &out, &errb, obsEnv(base)); st != 0 {
		t.Fatalf("exit %d: %s", st, errb.String())
	}
	var rows []quotaRow
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil || len(rows) != 2 || rows[0].Used != 1 || rows[0].Remain != 999 || rows[0].CGIPath != wxphone.CGIPathPhoneNumber {
		t.Errorf("json %s (%v)", out.String(), err)
	}
	// A refused fetch: the rows say why and the exit status is 1.
	out.Reset()
	errb.Reset()
	if st := run(context.Background(), []string{"quota"}, &out, &errb, obsEnv(base, "WX_SECRET", "wrong-secret-0123456789")); st != 1 ||
		!strings.Contains(out.String(), "error:") || !strings.Contains(errb.String(), "2 of 2 quotas could not be read") {
		t.Errorf("exit %d: %s / %s", st, out.String(), errb.String())
	}
	for _, s := range []string{"wrong-secret-0123456789", obsSecret} {
		if strings.Contains(out.String()+errb.String(), s) {
			t.Error("the output carries a secret")
		}
	}
	if st := run(context.Background(), []string{"quota", "stray"}, &out, &errb, obsEnv(base)); st != 2 {
		t.Errorf("stray argument: exit %d", st)
	}
	out.Reset()
	if st := run(context.Background(), []string{"quota", "-h"}, &out, &errb, obsEnv(base)); st != 0 || !strings.Contains(out.String(), "quota/get") {
		t.Errorf("help: %d %s", st, out.String())
	}
}

func TestRIDCommand(t *testing.T) {
	_, base := obsEmulator(t)
	c, err := wxphone.New(wxphone.Config{AppID: obsApp, Secret: obsSecret, BaseURL: base})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const badCode = "never-minted-code-0123456789"
	_, err = c.PhoneNumber(context.Background(), badCode)
	var ae *wxphone.APIError
	if !errors.As(err, &ae) || ae.RID == "" {
		t.Fatalf("exchange: %v", err)
	}
	tok, _ := c.TokenSource().Token(context.Background())
	var out, errb bytes.Buffer
	if st := run(context.Background(), []string{"rid", ae.RID}, &out, &errb, obsEnv(base)); st != 0 {
		t.Fatalf("exit %d: %s", st, errb.String())
	}
	o := out.String()
	for _, want := range []string{"rid:", ae.RID, `request body:   {"code":"[REDACTED]"}`, "request url:    access_token=[REDACTED]", `"errcode":40029`} {
		if !strings.Contains(o, want) {
			t.Errorf("output lacks %q:\n%s", want, o)
		}
	}
	for _, s := range []string{badCode, tok.Value, obsSecret} {
		if strings.Contains(o+errb.String(), s) {
			t.Errorf("the output carries a secret:\n%s", o)
		}
	}
	out.Reset()
	if st := run(context.Background(), []string{"rid", "--json", "--app", obsApp, ae.RID}, &out, &errb, obsEnv(base)); st != 0 {
		t.Fatalf("json: exit %d: %s", st, errb.String())
	}
	var j map[string]any
	if err := json.Unmarshal(out.Bytes(), &j); err != nil || j["appid"] != obsApp || j["request_body"] != `{"code":"[REDACTED]"}` {
		t.Errorf("json %s", out.String())
	}
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"rid"}, 2, "exactly one rid"},
		{[]string{"rid", "a", "b"}, 2, "exactly one rid"},
		{[]string{"rid", "--app"}, 2, "--app needs"},
		{[]string{"rid", "--app", "wxnope", ae.RID}, 1, "unknown appid"},
		{[]string{"rid", "00000000-00000000-00000000"}, 1, "76001"},
		{[]string{"rid", "not a rid"}, 1, "invalid rid"},
		{[]string{"rid", "bad!rid"}, 1, "invalid rid"},
	} {
		errb.Reset()
		if st := run(context.Background(), tc.args, io.Discard, &errb, obsEnv(base)); st != tc.code || !strings.Contains(errb.String(), tc.msg) {
			t.Errorf("%v: exit %d: %s", tc.args, st, errb.String())
		}
	}
}

// TestServeObservability runs `wxphone serve` with an admin address and
// an OTLP endpoint: /metrics moves to the admin address, and the spans of
// an exchange reach the collector without a secret.
func TestServeObservability(t *testing.T) {
	emu, base := obsEmulator(t)
	var mu sync.Mutex
	var exported [][]byte
	col := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		exported = append(exported, b)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer col.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", col.URL)
	apiAddr, adminAddr := freeAddr(t), freeAddr(t)
	env := obsEnv(base, "WXPHONE_ADDR", apiAddr, "WXPHONE_ADMIN_ADDR", adminAddr, "WXPHONE_QUOTA_INTERVAL", "off")
	ctx, cancel := context.WithCancel(context.Background())
	var logs logtest.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"serve"}, &logs, io.Discard, env) }()
	waitFor(t, "http://"+adminAddr+"/metrics")
	code, _ := emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: "13800138000"})
	req, _ := http.NewRequest("POST", "http://"+apiAddr+"/v1/phone-number", strings.NewReader(`{"code":"`+code+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+obsKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("exchange %d", resp.StatusCode)
	}
	if resp, err := http.Get("http://" + apiAddr + "/metrics"); err != nil || resp.StatusCode != 404 {
		t.Errorf("API /metrics: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	cancel()
	if st := <-done; st != 0 {
		t.Fatalf("serve exit %d: %s", st, logs.String())
	}
	mu.Lock()
	all := bytes.Join(exported, nil)
	mu.Unlock()
	for _, want := range []string{"POST /v1/phone-number", "WeChat getuserphonenumber", "WeChat stable_token", "wxphone"} {
		if !bytes.Contains(all, []byte(want)) {
			t.Errorf("the collector got no %q (%d bytes)", want, len(all))
		}
	}
	tok := emu.ValidTokens(obsApp)
	for _, s := range append([]string{code, obsSecret, obsKey, "13800138000"}, tok...) {
		if bytes.Contains(all, []byte(s)) {
			t.Errorf("an exported span carries a secret")
		}
	}
	if !strings.Contains(logs.String(), "tracing: exporting spans") {
		t.Errorf("no tracing log line")
	}
}

func waitFor(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
