package wxmock

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxphone/wxphone/internal/logtest"
)

func TestLogsCarryNoSecrets(t *testing.T) {
	var buf logtest.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := newTestServer(t, func(o *Options) { o.Logger = logger })
	tok := classicToken(t, s, appA, secretA)
	stable := stableToken(t, s, appA, secretA, true).AccessToken
	code := mintPhone(t, s, appA, "13812345678")
	wx(t, s, http.MethodPost, phoneURL(tok), codeBody(code))
	lc, _ := s.MintLoginCode(LoginGrant{AppID: appA})
	wx(t, s, http.MethodGet, sessionURL(appA, secretA, lc.Code), "")
	lp, _ := s.MintLegacyPayload(LegacyGrant{AppID: appA, PurePhoneNumber: "13987654321"})
	if _, err := s.AddFault(Fault{Endpoint: "phone", Kind: "errcode", Errcode: -1}); err != nil {
		t.Fatal(err)
	}
	wx(t, s, http.MethodPost, phoneURL(tok), codeBody(code))
	if _, err := s.RevokeTokens(""); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "wxmock: request") || !strings.Contains(out, "5678") {
		t.Fatalf("expected debug logs, got %q", out)
	}
	for name, secret := range map[string]string{
		"secret": secretA, "token": tok, "stable token": stable, "phone code": code,
		"login code": lc.Code, "session key": lc.SessionKey, "legacy key": lp.SessionKey,
		"phone": "13812345678", "legacy phone": "13987654321",
	} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains the %s", name)
		}
	}
}

// TestConcurrentMixedTraffic exercises every path at once; run with -race.
func TestConcurrentMixedTraffic(t *testing.T) {
	s := newTestServer(t, func(o *Options) { o.LoadPrefix = "load-"; o.Seed = 0; o.Now = nil })
	srv := httptest.NewServer(s)
	defer srv.Close()
	tok := classicToken(t, s, appA, secretA)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 40 {
				switch i % 8 {
				case 0:
					serve(s, http.MethodGet, tokenURL(appB, secretB), "")
				case 1:
					serve(s, http.MethodPost, "/cgi-bin/stable_token", stableBody(appA, secretA, i%16 == 1))
				case 2:
					code, _ := s.MintPhoneCode(PhoneGrant{AppID: appA, PurePhoneNumber: "13800138000"})
					if rec := serve(s, http.MethodPost, phoneURL(tok), codeBody(code)); strings.Contains(rec.Body.String(), `"errcode":0,`) {
						ok.Add(1)
					}
				case 3:
					lc, _ := s.MintLoginCode(LoginGrant{AppID: appA, OpenID: "oSame"})
					serve(s, http.MethodGet, sessionURL(appA, secretA, lc.Code), "")
				case 4:
					serve(s, http.MethodGet, "/admin/stats", "")
					s.ValidTokens("")
				case 5:
					id, _ := s.AddFault(Fault{Endpoint: "jscode2session", Kind: "latency", LatencyMS: 1, Count: 1})
					_ = id
					s.Faults()
				case 6:
					resp, err := http.Post(srv.URL+phoneURL(tok), "application/json", strings.NewReader(codeBody(fmt.Sprintf("load-%d-%d", g, i))))
					if err == nil {
						resp.Body.Close()
						ok.Add(1)
					}
				case 7:
					s.SetCountryCodeAsNumber(i%2 == 0)
					s.Advance(time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	if got := ok.Load(); got != 16*5*2 {
		t.Fatalf("%d successful phone exchanges, want %d", got, 16*5*2)
	}
	if a := s.Stats().Endpoints.Phone.ByErrcode[0]; a != 16*5*2 {
		t.Fatalf("stats count %d successes", a)
	}
}

func BenchmarkPhoneLoadMode(b *testing.B) {
	s := newTestServer(b, func(o *Options) { o.LoadPrefix = "load-"; o.Now = nil })
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tokenURL(appA, secretA), nil))
	tok := strings.Split(rec.Body.String(), `"`)[3]
	target := phoneURL(tok)
	var n atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			body := codeBody(fmt.Sprintf("load-%d", n.Add(1)))
			req := httptest.NewRequest(http.MethodPost, target, strings.NewReader(body))
			w := httptest.NewRecorder()
			s.ServeHTTP(w, req)
			if w.Code != 200 {
				b.Fatal(w.Code)
			}
		}
	})
}

func TestBodyWithoutContentLength(t *testing.T) {
	s := newTestServer(t, nil)
	tests := []struct {
		name string
		body string
		want int
	}{
		{"small", stableBody(appA, secretA, false), 0},
		{"empty", "", 44002},
		{"too large", `{"appid":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, 47001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/cgi-bin/stable_token", strings.NewReader(tt.body))
			req.ContentLength = -1 // as for a chunked request
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if r := parseWX(t, rec.Code, rec.Header(), rec.Body.Bytes()); r.Errcode != tt.want {
				t.Fatalf("errcode %d, want %d", r.Errcode, tt.want)
			}
		})
	}
}
