package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/server"
	"github.com/wxphone/wxphone/service"
	"github.com/wxphone/wxphone/wxmock"
)

// TestInvalidateWithALiveToken: a token-key holder reports the current
// token, which WeChat still accepts. The server checks with WeChat
// (get_api_domain_ip) and answers 409 token_still_valid: nothing is
// dropped, fetched or spent. A report WeChat confirms, and one whose check
// fails, are handled as documented.
func TestInvalidateWithALiveToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	e.collectTokens()
	cur := e.emu.ValidTokens(appA)[0]
	report := func(tok string) (int, http.Header, []byte) {
		return e.do(request{path: server.PathTokenInvalidate, key: keyToken, body: `{"appid":"` + appA + `","access_token":"` + tok + `"}`})
	}
	before := e.emu.Stats().Endpoints
	for range 3 {
		s, _, b := report(cur)
		if s != http.StatusConflict || decodeErr(t, b).Error.Code != string(server.CodeTokenStillValid) {
			t.Fatalf("live token: %d %s; want 409 token_still_valid", s, b)
		}
	}
	after := e.emu.Stats().Endpoints
	if after.StableToken.Calls != before.StableToken.Calls {
		t.Errorf("stable_token calls %d -> %d: a live token's report fetched", before.StableToken.Calls, after.StableToken.Calls)
	}
	if after.APIDomainIP.Calls-before.APIDomainIP.Calls != 3 {
		t.Errorf("checks = %d, want 3", after.APIDomainIP.Calls-before.APIDomainIP.Calls)
	}
	if s, _, b := e.do(request{method: "GET", path: server.PathAccessToken, key: keyToken}); s != 200 || !strings.Contains(string(b), cur) {
		t.Errorf("GET after the reports: %d; want the same token", s)
	}
	if s, _, b := e.phone(keyPhone, map[string]string{"code": e.mint(appA, "13922227777")}); s != 200 {
		t.Errorf("exchange after the reports: %d %s", s, b)
	}

	// The check fails (-1) while WeChat keeps handing out the token in
	// normal mode: 503, and no force refresh is attempted.
	e.fault(wxmock.Fault{Endpoint: wxmock.EndpointAPIDomainIP, Kind: wxmock.FaultErrcode, Errcode: -1, Count: 1})
	if s, h, b := report(cur); s != http.StatusServiceUnavailable || decodeErr(t, b).Error.Code != string(server.CodeTokenUnavailable) || h.Get("Retry-After") == "" {
		t.Errorf("check failed: %d %s; want 503 token_unavailable with Retry-After", s, b)
	}
	// A revoked token: confirmed, replaced in normal mode, no force.
	if _, err := e.emu.RevokeTokens(appA); err != nil {
		t.Fatal(err)
	}
	s, _, b := report(cur)
	if s != 200 || strings.Contains(string(b), cur) {
		t.Fatalf("revoked token: %d; want 200 with a new token", s)
	}
	e.collectTokens()
	if f := e.emu.Stats().Endpoints.StableToken.Force; f != 0 {
		t.Errorf("force refreshes = %d, want 0", f)
	}
	e.checkNoLeaks()
}

// memTransport serves requests with a handler in memory (no sockets, no
// goroutines), so that it works inside a synctest bubble.
type memTransport struct{ h http.Handler }

func (m memTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		_ = req.Body.Close()
	}
	sreq := req.Clone(req.Context())
	sreq.Body = io.NopCloser(bytes.NewReader(body))
	sreq.ContentLength = int64(len(body))
	sreq.RequestURI = req.URL.RequestURI()
	sreq.RemoteAddr = "127.0.0.1:40000"
	rec := httptest.NewRecorder()
	m.h.ServeHTTP(rec, sreq)
	res := rec.Result()
	res.Request = req
	return res, nil
}

// TestReadyzRecoversWithoutTraffic: every token is lost (revoked; WeChat
// refuses fetches, IP not whitelisted, for 5 minutes). With no request
// arriving (a load balancer sends none to a replica whose /readyz says
// 503), the replica fetches a token by itself: /readyz answers 200 within
// the cool-down (1 min) plus 30 s after WeChat accepts fetches again.
func TestReadyzRecoversWithoutTraffic(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		emu, err := wxmock.New(wxmock.Options{Apps: []wxmock.App{{AppID: appA, Secret: secretA}}})
		if err != nil {
			t.Fatal(err)
		}
		c, err := wxphone.New(wxphone.Config{AppID: appA, Secret: secretA, BaseURL: "http://127.0.0.1",
			HTTPClient: &http.Client{Transport: memTransport{emu}}})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := service.New(service.Config{Clients: []*wxphone.Client{c}})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = svc.Close(context.Background()) }()
		srv, err := server.New(server.Config{Service: svc, APIKeys: []wxphone.Secret{keyPhone}})
		if err != nil {
			t.Fatal(err)
		}
		call := func(method, path, key, body string) (int, []byte) {
			req := httptest.NewRequest(method, path, strings.NewReader(body))
			if key != "" {
				req.Header.Set("Authorization", "Bearer "+key)
				req.Header.Set("Content-Type", "application/json")
			}
			rec := httptest.NewRecorder()
			srv.Handler().ServeHTTP(rec, req)
			return rec.Code, rec.Body.Bytes()
		}
		readyz := func() int {
			s, _ := call(http.MethodGet, server.PathReadyz, "", "")
			return s
		}
		if err := svc.Warm(context.Background()); err != nil {
			t.Fatal(err)
		}
		if s := readyz(); s != 200 {
			t.Fatalf("readyz after warm-up: %d", s)
		}
		if _, err := emu.RevokeTokens(appA); err != nil {
			t.Fatal(err)
		}
		if _, err := emu.AddFault(wxmock.Fault{Endpoint: wxmock.EndpointStableToken, Kind: wxmock.FaultErrcode, Errcode: 40164}); err != nil {
			t.Fatal(err)
		}
		code, err := emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: "13911112222"})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := json.Marshal(map[string]string{"code": code})
		// The last request before the balancer stops sending any.
		if s, b := call(http.MethodPost, server.PathPhoneNumber, keyPhone, string(body)); s != http.StatusServiceUnavailable {
			t.Fatalf("exchange with the token revoked and fetches refused: %d %s", s, b)
		}
		time.Sleep(5 * time.Minute)
		if s := readyz(); s != http.StatusServiceUnavailable {
			t.Fatalf("readyz while fetches are refused: %d", s)
		}
		emu.ClearFaults()
		fixed := time.Now()
		for readyz() != 200 {
			if time.Since(fixed) > time.Minute+30*time.Second {
				t.Fatalf("readyz still 503 %v after WeChat accepted fetches again, with no traffic", time.Since(fixed))
			}
			time.Sleep(time.Second)
		}
		t.Logf("ready %v after WeChat accepted fetches again", time.Since(fixed))
		// Exchanges work again (the first code's five minutes are over).
		code, err = emu.MintPhoneCode(wxmock.PhoneGrant{PurePhoneNumber: "13911112222"})
		if err != nil {
			t.Fatal(err)
		}
		body, _ = json.Marshal(map[string]string{"code": code})
		if s, b := call(http.MethodPost, server.PathPhoneNumber, keyPhone, string(body)); s != 200 {
			t.Errorf("exchange after the recovery: %d %s", s, b)
		}
	})
}
