package wxmock

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

type quotaResp struct {
	Errcode int    `json:"errcode"`
	Errmsg  string `json:"errmsg"`
	Quota   *Quota `json:"quota"`
}

type ridResp struct {
	Errcode int      `json:"errcode"`
	Errmsg  string   `json:"errmsg"`
	Request *ridInfo `json:"request"`
}

func quotaURL(tok string) string { return CGIPathQuotaGet + "?access_token=" + url.QueryEscape(tok) }
func ridURL(tok string) string   { return CGIPathRIDGet + "?access_token=" + url.QueryEscape(tok) }

func getQuota(t *testing.T, s *Server, tok, path string) quotaResp {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"cgi_path": path})
	r := wx(t, s, http.MethodPost, quotaURL(tok), string(b))
	var q quotaResp
	if err := json.Unmarshal([]byte(r.body), &q); err != nil {
		t.Fatal(err)
	}
	return q
}

func getRID(t *testing.T, s *Server, tok, rid string) ridResp {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"rid": rid})
	r := wx(t, s, http.MethodPost, ridURL(tok), string(b))
	var out ridResp
	if err := json.Unmarshal([]byte(r.body), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func ridOf(errmsg string) string {
	i := strings.LastIndex(errmsg, "rid: ")
	if i < 0 {
		return ""
	}
	return errmsg[i+5:]
}

// TestQuotaCountsRealCalls: quota/get reports the calls the emulator
// served for the token's app today, per cgi path, and resets at UTC+8
// midnight.
func TestQuotaCountsRealCalls(t *testing.T) {
	s := newTestServer(t, func(o *Options) {
		o.QuotaDailyLimits = map[string]int{CGIPathPhone: 5}
	})
	tokA := stableToken(t, s, appA, secretA, false).AccessToken
	stableToken(t, s, appA, secretA, false)
	tokB := stableToken(t, s, appB, secretB, false).AccessToken
	for range 3 {
		code := mintPhone(t, s, appA, "13800138000")
		if r := wx(t, s, http.MethodPost, phoneURL(tokA), codeBody(code)); r.Errcode != 0 {
			t.Fatalf("exchange: %s", r.body)
		}
	}
	// A failed exchange (reused code) is a call too; one with a bad token
	// cannot be attributed and is not.
	wx(t, s, http.MethodPost, phoneURL(tokA), codeBody("nope-not-a-code"))
	wx(t, s, http.MethodPost, phoneURL("bogus-token"), codeBody("x"))

	tests := []struct {
		tok, path        string
		limit, used, rem int64
	}{
		{tokA, CGIPathPhone, 5, 4, 1},
		{tokA, CGIPathStableToken, DefaultQuotaDailyLimit, 2, DefaultQuotaDailyLimit - 2},
		{tokA, CGIPathToken, DefaultClassicDailyLimit, 0, DefaultClassicDailyLimit},
		{tokB, CGIPathPhone, 5, 0, 5},
		{tokB, CGIPathStableToken, DefaultQuotaDailyLimit, 1, DefaultQuotaDailyLimit - 1},
		// quota/get counts itself: this is B's third call.
		{tokB, CGIPathQuotaGet, DefaultQuotaDailyLimit, 3, DefaultQuotaDailyLimit - 3},
	}
	for _, tc := range tests {
		q := getQuota(t, s, tc.tok, tc.path)
		if q.Errcode != 0 || q.Quota == nil {
			t.Fatalf("%s: %+v", tc.path, q)
		}
		if *q.Quota != (Quota{tc.limit, tc.used, tc.rem}) {
			t.Errorf("%s: quota %+v, want {%d %d %d}", tc.path, *q.Quota, tc.limit, tc.used, tc.rem)
		}
	}
	// Remain never goes negative.
	for range 3 {
		code := mintPhone(t, s, appA, "13800138000")
		wx(t, s, http.MethodPost, phoneURL(tokA), codeBody(code))
	}
	if q := getQuota(t, s, tokA, CGIPathPhone); *q.Quota != (Quota{5, 7, 0}) {
		t.Errorf("over the limit: %+v", *q.Quota)
	}
	// baseTime is 18:00 in Beijing: six hours later is the next day.
	s.Advance(6 * time.Hour)
	tokA = stableToken(t, s, appA, secretA, false).AccessToken
	if q := getQuota(t, s, tokA, CGIPathPhone); *q.Quota != (Quota{5, 0, 5}) {
		t.Errorf("next day: %+v", *q.Quota)
	}
}

func TestQuotaErrors(t *testing.T) {
	s := newTestServer(t, nil)
	tok := stableToken(t, s, appA, secretA, false).AccessToken
	tests := []struct {
		name, method, target, body string
		errcode                    int
	}{
		{"GET", http.MethodGet, quotaURL(tok), "", 43002},
		{"no token", http.MethodPost, CGIPathQuotaGet, `{"cgi_path":"/cgi-bin/token"}`, 41001},
		{"bad token", http.MethodPost, quotaURL("bogus"), `{"cgi_path":"/cgi-bin/token"}`, 40001},
		{"empty body", http.MethodPost, quotaURL(tok), "", 44002},
		{"not JSON", http.MethodPost, quotaURL(tok), `{"cgi_path":`, 47001},
		{"unknown path", http.MethodPost, quotaURL(tok), `{"cgi_path":"/cgi-bin/nope"}`, 76021},
		{"no leading slash", http.MethodPost, quotaURL(tok), `{"cgi_path":"cgi-bin/token"}`, 76021},
		{"sns path", http.MethodPost, quotaURL(tok), `{"cgi_path":"/sns/jscode2session"}`, 76022},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if r := wx(t, s, tc.method, tc.target, tc.body); r.Errcode != tc.errcode {
				t.Errorf("errcode %d, want %d: %s", r.Errcode, tc.errcode, r.body)
			}
		})
	}
	if _, err := New(Options{Apps: []App{{appA, secretA}}, QuotaDailyLimits: map[string]int{"/nope": 1}}); err == nil {
		t.Error("New accepted an unknown cgi path")
	}
	if err := s.SetQuotaDailyLimit(CGIPathPhone, -1); err == nil {
		t.Error("negative limit accepted")
	}
}

func TestAdminQuota(t *testing.T) {
	s := newTestServer(t, nil)
	if st := admin(t, s, http.MethodPost, "/admin/quota", `{"cgi_path":"/cgi-bin/stable_token","daily_limit":7}`, nil); st != 200 {
		t.Fatalf("status %d", st)
	}
	if q, _ := s.QuotaUsage(appA, CGIPathStableToken); q.DailyLimit != 7 {
		t.Errorf("limit %d", q.DailyLimit)
	}
	for _, body := range []string{`{"cgi_path":"/x","daily_limit":7}`, `{"cgi_path":"/cgi-bin/token"}`, `{"cgi_path":"/cgi-bin/token","daily_limit":-1}`, `{"nope":1}`} {
		if st := admin(t, s, http.MethodPost, "/admin/quota", body, nil); st != 400 {
			t.Errorf("%s: status %d", body, st)
		}
	}
}

// TestRIDRemembersFailedCalls: rid/get returns the request and response
// behind a failed call's rid, to the same app only, for 7 days.
func TestRIDRemembersFailedCalls(t *testing.T) {
	s := newTestServer(t, nil)
	tokA := stableToken(t, s, appA, secretA, false).AccessToken
	tokB := stableToken(t, s, appB, secretB, false).AccessToken
	failed := wx(t, s, http.MethodPost, phoneURL(tokA), codeBody("used-or-unknown-code"))
	if failed.Errcode != 40029 {
		t.Fatalf("exchange: %s", failed.body)
	}
	rid := ridOf(failed.Errmsg)
	got := getRID(t, s, tokA, rid)
	if got.Errcode != 0 || got.Request == nil {
		t.Fatalf("rid/get: %+v", got)
	}
	r := got.Request
	if r.RequestBody != codeBody("used-or-unknown-code") || r.ResponseBody != failed.body {
		t.Errorf("bodies: %q / %q", r.RequestBody, r.ResponseBody)
	}
	if r.RequestURL != "access_token="+url.QueryEscape(tokA) || r.InvokeTime != baseTime.Unix() || r.ClientIP != "192.0.2.1" {
		t.Errorf("request: %+v", r)
	}

	// A fault's errcode is remembered too, with the stable_token body.
	if _, err := s.AddFault(Fault{Endpoint: EndpointStableToken, Kind: FaultErrcode, Errcode: -1, Count: 1}); err != nil {
		t.Fatal(err)
	}
	busy := wx(t, s, http.MethodPost, "/cgi-bin/stable_token", stableBody(appA, secretA, false))
	if got := getRID(t, s, tokA, ridOf(busy.Errmsg)); got.Errcode != 0 || !strings.Contains(got.Request.RequestBody, secretA) {
		t.Errorf("fault rid: %+v", got)
	}

	// Another app's token may not read it.
	if got := getRID(t, s, tokB, rid); got.Errcode != 76003 {
		t.Errorf("other app: %+v", got)
	}
	// jscode2session rids are not supported.
	bad := wx(t, s, http.MethodGet, sessionURL(appA, secretA, "nope"), "")
	if got := getRID(t, s, tokA, ridOf(bad.Errmsg)); got.Errcode != 76022 {
		t.Errorf("sns rid: %+v", got)
	}
	for _, tc := range []struct {
		rid     string
		errcode int
	}{{"", 76002}, {"not a rid!", 76002}, {"00000000-00000000-00000000", 76001}} {
		if got := getRID(t, s, tokA, tc.rid); got.Errcode != tc.errcode {
			t.Errorf("rid %q: %+v", tc.rid, got)
		}
	}
	// rid/get's own failures are not remembered.
	notFound := wx(t, s, http.MethodPost, ridURL(tokA), `{"rid":"00000000-00000000-00000000"}`)
	if got := getRID(t, s, tokA, ridOf(notFound.Errmsg)); got.Errcode != 76001 {
		t.Errorf("rid/get's own rid: %+v", got)
	}
	// Seven days later the rid is forgotten.
	s.Advance(RIDRetention + time.Second)
	tokA = stableToken(t, s, appA, secretA, false).AccessToken
	if got := getRID(t, s, tokA, rid); got.Errcode != 76001 {
		t.Errorf("after 7 days: %+v", got)
	}
}

// TestRIDBounded: only the last MaxRIDs failures are remembered.
func TestRIDBounded(t *testing.T) {
	s := newTestServer(t, nil)
	tok := stableToken(t, s, appA, secretA, false).AccessToken
	var first, last string
	for i := range MaxRIDs + 10 {
		r := wx(t, s, http.MethodPost, phoneURL(tok), codeBody("bad-code"))
		if i == 0 {
			first = ridOf(r.Errmsg)
		}
		last = ridOf(r.Errmsg)
	}
	if got := getRID(t, s, tok, first); got.Errcode != 76001 {
		t.Errorf("oldest rid still remembered: %+v", got)
	}
	if got := getRID(t, s, tok, last); got.Errcode != 0 {
		t.Errorf("newest rid forgotten: %+v", got)
	}
	s.openapi.mu.Lock()
	n := len(s.openapi.rids)
	s.openapi.mu.Unlock()
	if n != MaxRIDs {
		t.Errorf("%d rids remembered, want %d", n, MaxRIDs)
	}
}
