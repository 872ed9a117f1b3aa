package wxmock

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestAddFaultValidation(t *testing.T) {
	tests := []struct {
		name string
		f    Fault
		ok   bool
	}{
		{"latency", Fault{Endpoint: "phone", Kind: "latency", LatencyMS: 10}, true},
		{"errcode", Fault{Endpoint: "*", Kind: "errcode", Errcode: -1, Count: 3}, true},
		{"errcode consume", Fault{Endpoint: "phone", Kind: "errcode", Errcode: -1, Consume: true}, true},
		{"errcode with text", Fault{Endpoint: "token", Kind: "errcode", Errcode: 40164, Errmsg: "invalid ip 1.2.3.4"}, true},
		{"http_status", Fault{Endpoint: "stable_token", Kind: "http_status", Status: 502}, true},
		{"drop", Fault{Endpoint: "jscode2session", Kind: "drop_after_consume", AppID: appA}, true},
		{"reset", Fault{Endpoint: "phone", Kind: "reset_before_read"}, true},
		{"id and remaining ignored", Fault{ID: "x", Remaining: 9, Endpoint: "phone", Kind: "reset_before_read"}, true},
		{"bad endpoint", Fault{Endpoint: "sms", Kind: "latency", LatencyMS: 1}, false},
		{"empty endpoint", Fault{Kind: "latency", LatencyMS: 1}, false},
		{"bad kind", Fault{Endpoint: "phone", Kind: "explode"}, false},
		{"latency zero", Fault{Endpoint: "phone", Kind: "latency"}, false},
		{"latency too long", Fault{Endpoint: "phone", Kind: "latency", LatencyMS: 600001}, false},
		{"errcode zero", Fault{Endpoint: "phone", Kind: "errcode"}, false},
		{"errmsg control", Fault{Endpoint: "phone", Kind: "errcode", Errcode: 1, Errmsg: "a\nb"}, false},
		{"status too low", Fault{Endpoint: "phone", Kind: "http_status", Status: 99}, false},
		{"status 1xx", Fault{Endpoint: "phone", Kind: "http_status", Status: 101}, false},
		{"status too high", Fault{Endpoint: "phone", Kind: "http_status", Status: 600}, false},
		{"negative count", Fault{Endpoint: "phone", Kind: "reset_before_read", Count: -1}, false},
		{"consume on latency", Fault{Endpoint: "phone", Kind: "latency", LatencyMS: 1, Consume: true}, false},
		{"consume on drop", Fault{Endpoint: "phone", Kind: "drop_after_consume", Consume: true}, false},
		{"status on errcode", Fault{Endpoint: "phone", Kind: "errcode", Errcode: 1, Status: 500}, false},
		{"errcode on latency", Fault{Endpoint: "phone", Kind: "latency", LatencyMS: 1, Errcode: 1}, false},
		{"latency on reset", Fault{Endpoint: "phone", Kind: "reset_before_read", LatencyMS: 1}, false},
		{"bad appid", Fault{Endpoint: "phone", Kind: "reset_before_read", AppID: "a b"}, false},
		{"reset after consume", Fault{Endpoint: "phone", Kind: "reset_after_consume"}, true},
		{"reset after consume h2 code", Fault{Endpoint: "phone", Kind: "reset_after_consume", H2Error: "PROTOCOL_ERROR"}, true},
		{"bad h2 code", Fault{Endpoint: "phone", Kind: "reset_after_consume", H2Error: "OOPS"}, false},
		{"h2 code on drop", Fault{Endpoint: "phone", Kind: "drop_after_consume", H2Error: "CANCEL"}, false},
		{"consume on reset after", Fault{Endpoint: "phone", Kind: "reset_after_consume", Consume: true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, nil)
			id, err := s.AddFault(tt.f)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && (id != "f1" || len(s.Faults()) != 1 || s.Faults()[0].ID != "f1") {
				t.Fatalf("id %q, faults %+v", id, s.Faults())
			}
			if !tt.ok && len(s.Faults()) != 0 {
				t.Fatal("invalid fault stored")
			}
		})
	}
}

func TestErrcodeFaultCountAndConsume(t *testing.T) {
	tests := []struct {
		name        string
		fault       Fault
		wantCalls   []int // errcodes of successive calls with fresh codes
		wantSurvive bool  // the first call's code is still usable afterwards
	}{
		{"count 2", Fault{Endpoint: "phone", Kind: "errcode", Errcode: -1, Count: 2}, []int{-1, -1, 0, 0}, true},
		{"count 0 until cleared", Fault{Endpoint: "phone", Kind: "errcode", Errcode: 45011}, []int{45011, 45011, 45011}, true},
		{"consume", Fault{Endpoint: "phone", Kind: "errcode", Errcode: -1, Count: 1, Consume: true}, []int{-1, 0}, false},
		{"wildcard", Fault{Endpoint: "*", Kind: "errcode", Errcode: -1, Count: 1}, []int{-1, 0}, true},
		{"other endpoint", Fault{Endpoint: "token", Kind: "errcode", Errcode: -1}, []int{0}, false},
		{"appid filter matches", Fault{Endpoint: "phone", AppID: appA, Kind: "errcode", Errcode: -1, Count: 1}, []int{-1, 0}, true},
		{"appid filter other", Fault{Endpoint: "phone", AppID: appB, Kind: "errcode", Errcode: -1}, []int{0}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, nil)
			tok := classicToken(t, s, appA, secretA)
			if _, err := s.AddFault(tt.fault); err != nil {
				t.Fatal(err)
			}
			var first string
			for i, want := range tt.wantCalls {
				code := mintPhone(t, s, appA, "13800138000")
				if i == 0 {
					first = code
				}
				r := wx(t, s, http.MethodPost, phoneURL(tok), codeBody(code))
				if r.Errcode != want {
					t.Fatalf("call %d: errcode %d, want %d (%s)", i, r.Errcode, want, r.body)
				}
				if want == -1 && !strings.HasPrefix(r.Errmsg, "system error rid: ") {
					t.Errorf("errmsg %q", r.Errmsg)
				}
			}
			s.ClearFaults()
			survived := wx(t, s, http.MethodPost, phoneURL(tok), codeBody(first)).Errcode == 0
			if survived != tt.wantSurvive {
				t.Fatalf("first code survived = %v, want %v", survived, tt.wantSurvive)
			}
			if tt.fault.Kind == FaultErrcode && tt.fault.Consume {
				if c := s.Stats().Codes[first]; c.Answered != 0 || c.Calls != 2 {
					t.Errorf("consumed code stats %+v", c)
				}
			}
		})
	}
}

func TestErrcodeFaultCustomMessage(t *testing.T) {
	s := newTestServer(t, nil)
	if _, err := s.AddFault(Fault{Endpoint: "token", Kind: "errcode", Errcode: 40164, Errmsg: `invalid ip 1.2.3.4 "x"`}); err != nil {
		t.Fatal(err)
	}
	r := wx(t, s, http.MethodGet, tokenURL(appA, secretA), "")
	if r.Errcode != 40164 || !strings.HasPrefix(r.Errmsg, `invalid ip 1.2.3.4 "x" rid: `) {
		t.Fatalf("answer %s", r.body)
	}
	if len(s.ValidTokens(appA)) != 0 {
		t.Fatal("errcode fault without consume minted a token")
	}
}

func TestConsumeOnTokenEndpointMintsToken(t *testing.T) {
	s := newTestServer(t, nil)
	old := classicToken(t, s, appA, secretA)
	if _, err := s.AddFault(Fault{Endpoint: "token", Kind: "errcode", Errcode: -1, Consume: true, Count: 1}); err != nil {
		t.Fatal(err)
	}
	if r := wx(t, s, http.MethodGet, tokenURL(appA, secretA), ""); r.Errcode != -1 {
		t.Fatalf("answer %s", r.body)
	}
	// A token was minted behind the client's back: the old one is now
	// superseded (valid for the overlap only).
	s.Advance(TokenOverlap)
	if got := wx(t, s, http.MethodPost, phoneURL(old), codeBody("x")).Errcode; got != 40001 {
		t.Fatalf("old token: %d", got)
	}
	if st := s.Stats(); st.Apps[appA].TokensMinted != 2 || st.Endpoints.Token.ByErrcode[-1] != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestHTTPStatusFault(t *testing.T) {
	for _, consume := range []bool{false, true} {
		s := newTestServer(t, nil)
		tok := classicToken(t, s, appA, secretA)
		if _, err := s.AddFault(Fault{Endpoint: "phone", Kind: "http_status", Status: 502, Consume: consume, Count: 1}); err != nil {
			t.Fatal(err)
		}
		code := mintPhone(t, s, appA, "13800138000")
		rec := serve(s, http.MethodPost, phoneURL(tok), codeBody(code))
		if rec.Code != 502 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") ||
			!strings.Contains(rec.Body.String(), "<title>502 Bad Gateway</title>") {
			t.Fatalf("consume=%v: %d %q %q", consume, rec.Code, rec.Header().Get("Content-Type"), rec.Body.String())
		}
		got := wx(t, s, http.MethodPost, phoneURL(tok), codeBody(code)).Errcode
		if want := map[bool]int{false: 0, true: 40029}[consume]; got != want {
			t.Errorf("consume=%v: follow-up %d, want %d", consume, got, want)
		}
		if st := s.Stats().Endpoints.Phone; st.ByHTTPStatus[502] != 1 || st.Calls != 2 {
			t.Errorf("stats %+v", st)
		}
	}
}

func TestLatencyFault(t *testing.T) {
	s := newTestServer(t, nil)
	tok := classicToken(t, s, appA, secretA)
	for _, f := range []Fault{
		{Endpoint: "phone", Kind: "latency", LatencyMS: 60, Count: 1},
		{Endpoint: "*", Kind: "latency", LatencyMS: 40, Count: 2},
		{Endpoint: "phone", Kind: "errcode", Errcode: -1, Count: 1},
	} {
		if _, err := s.AddFault(f); err != nil {
			t.Fatal(err)
		}
	}
	type step struct {
		minDelay time.Duration
		want     int
	}
	for i, st := range []step{
		{100 * time.Millisecond, -1}, // both latencies, then the errcode fault
		{40 * time.Millisecond, 0},   // second latency, then normal
		{0, 0},
	} {
		code := mintPhone(t, s, appA, "13800138000")
		start := time.Now()
		r := wx(t, s, http.MethodPost, phoneURL(tok), codeBody(code))
		if el := time.Since(start); el < st.minDelay {
			t.Errorf("step %d: took %v, want ≥ %v", i, el, st.minDelay)
		}
		if r.Errcode != st.want {
			t.Errorf("step %d: errcode %d, want %d", i, r.Errcode, st.want)
		}
	}
	if n := len(s.Faults()); n != 0 {
		t.Errorf("%d faults left, want 0", n)
	}
}

// A client that leaves during an injected latency gets no answer, but
// WeChat had its request and processed it: the code is used, and the
// statistics say the answer was produced and not delivered.
func TestLatencyFaultCanceled(t *testing.T) {
	s := newTestServer(t, nil)
	tok := classicToken(t, s, appA, secretA)
	if _, err := s.AddFault(Fault{Endpoint: "phone", Kind: "latency", LatencyMS: 600000}); err != nil {
		t.Fatal(err)
	}
	code := mintPhone(t, s, appA, "13800138000")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, phoneURL(tok), strings.NewReader(codeBody(code)))
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { s.ServeHTTP(rec, req); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("latency ignored context cancellation")
	}
	if rec.Body.Len() != 0 {
		t.Fatalf("canceled request got a body %q", rec.Body.String())
	}
	st := s.Stats()
	if c := st.Endpoints.Phone.Canceled; c != 1 {
		t.Fatalf("canceled = %d", c)
	}
	if cs := st.Codes[code]; cs.Calls != 1 || cs.Answered != 1 || cs.Delivered != 0 {
		t.Fatalf("code stats %+v, want 1 call answered and not delivered", cs)
	}
	s.ClearFaults()
	if got := wx(t, s, http.MethodPost, phoneURL(tok), codeBody(code)).Errcode; got != 40029 {
		t.Fatalf("code after canceled request: %d, want 40029 (used)", got)
	}
}

func TestFaultsRemainingAndClear(t *testing.T) {
	s := newTestServer(t, nil)
	id1, _ := s.AddFault(Fault{Endpoint: "token", Kind: "errcode", Errcode: -1, Count: 3})
	id2, _ := s.AddFault(Fault{Endpoint: "phone", Kind: "reset_before_read"})
	wx(t, s, http.MethodGet, tokenURL(appA, secretA), "")
	fs := s.Faults()
	if len(fs) != 2 || fs[0].ID != id1 || fs[0].Remaining != 2 || fs[1].ID != id2 || fs[1].Remaining != 0 {
		t.Fatalf("faults %+v", fs)
	}
	s.ClearFaults()
	if len(s.Faults()) != 0 {
		t.Fatal("ClearFaults left faults")
	}
	if r := wx(t, s, http.MethodGet, tokenURL(appA, secretA), ""); r.Errcode != 0 {
		t.Fatal("fault applied after clear")
	}
	if id3, _ := s.AddFault(Fault{Endpoint: "phone", Kind: "reset_before_read"}); id3 != "f3" {
		t.Fatalf("ids restart after clear: %q", id3)
	}
}

func TestStableTokenFaultAppIDFromBody(t *testing.T) {
	s := newTestServer(t, nil)
	if _, err := s.AddFault(Fault{Endpoint: "stable_token", AppID: appB, Kind: "errcode", Errcode: -1}); err != nil {
		t.Fatal(err)
	}
	if r := wx(t, s, http.MethodPost, "/cgi-bin/stable_token", stableBody(appA, secretA, false)); r.Errcode != 0 {
		t.Fatalf("app A: %s", r.body)
	}
	if r := wx(t, s, http.MethodPost, "/cgi-bin/stable_token", stableBody(appB, secretB, false)); r.Errcode != -1 {
		t.Fatalf("app B: %s", r.body)
	}
}

func TestHijackFaultsWithoutHijacker(t *testing.T) {
	for _, kind := range []string{FaultDropAfterConsume, FaultResetBeforeRead} {
		s := newTestServer(t, nil)
		tok := classicToken(t, s, appA, secretA)
		if _, err := s.AddFault(Fault{Endpoint: "phone", Kind: kind, Count: 1}); err != nil {
			t.Fatal(err)
		}
		code := mintPhone(t, s, appA, "13800138000")
		func() {
			defer func() {
				if p := recover(); p != http.ErrAbortHandler {
					t.Errorf("%s: recovered %v, want http.ErrAbortHandler", kind, p)
				}
			}()
			serve(s, http.MethodPost, phoneURL(tok), codeBody(code))
		}()
	}
}

// networkServer starts s on a real listener; clients get fresh connections
// so that net/http never silently retries a dropped request.
func networkServer(t *testing.T, s *Server) (*httptest.Server, *http.Client) {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv, &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
}

func post(c *http.Client, url, body string) (int, []byte, error) {
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func TestDropAfterConsume(t *testing.T) {
	s := newTestServer(t, nil)
	srv, client := networkServer(t, s)
	tok := classicToken(t, s, appA, secretA)
	code := mintPhone(t, s, appA, "13800138000")
	if _, err := s.AddFault(Fault{Endpoint: "phone", Kind: "drop_after_consume", Count: 1}); err != nil {
		t.Fatal(err)
	}
	if _, b, err := post(client, srv.URL+phoneURL(tok), codeBody(code)); !errors.Is(err, io.EOF) {
		t.Fatalf("client got %q, %v; want EOF (orderly close without a response)", b, err)
	}
	// The code was used by "WeChat": a retry fails.
	status, b, err := post(client, srv.URL+phoneURL(tok), codeBody(code))
	if err != nil || status != 200 || !strings.Contains(string(b), `"errcode":40029`) {
		t.Fatalf("retry: %d %q %v", status, b, err)
	}
	st := s.Stats()
	if c := st.Codes[code]; c.Calls != 2 || c.Answered != 1 {
		t.Errorf("code stats %+v", c)
	}
	if p := st.Endpoints.Phone; p.Dropped != 1 || p.ByErrcode[0] != 1 || p.ByErrcode[40029] != 1 || p.Calls != 2 {
		t.Errorf("phone stats %+v", p)
	}
}

func TestDropAfterConsumeOtherEndpoints(t *testing.T) {
	s := newTestServer(t, nil)
	srv, client := networkServer(t, s)
	if _, err := s.AddFault(Fault{Endpoint: "*", Kind: "drop_after_consume", Count: 2}); err != nil {
		t.Fatal(err)
	}
	if resp, err := client.Get(srv.URL + tokenURL(appA, secretA)); err == nil {
		resp.Body.Close()
		t.Fatal("token: client got a response")
	}
	lc, _ := s.MintLoginCode(LoginGrant{AppID: appA})
	if resp, err := client.Get(srv.URL + sessionURL(appA, secretA, lc.Code)); err == nil {
		resp.Body.Close()
		t.Fatal("jscode2session: client got a response")
	}
	if len(s.ValidTokens(appA)) != 1 {
		t.Error("dropped token fetch did not mint")
	}
	if r := wx(t, s, http.MethodGet, sessionURL(appA, secretA, lc.Code), ""); r.Errcode != 40163 {
		t.Errorf("login code after drop: %s", r.body)
	}
}

func TestResetBeforeRead(t *testing.T) {
	tests := []struct {
		name string
		do   func(t *testing.T, s *Server, url string, c *http.Client) error
	}{
		{"phone", func(t *testing.T, s *Server, url string, c *http.Client) error {
			_, _, err := post(c, url+phoneURL(classicToken(t, s, appA, secretA)), codeBody("x"))
			return err
		}},
		{"stable_token", func(t *testing.T, s *Server, url string, c *http.Client) error {
			_, _, err := post(c, url+"/cgi-bin/stable_token", stableBody(appA, secretA, false))
			return err
		}},
		{"token", func(t *testing.T, s *Server, url string, c *http.Client) error {
			resp, err := c.Get(url + tokenURL(appA, secretA))
			if err == nil {
				resp.Body.Close()
			}
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, nil)
			srv, client := networkServer(t, s)
			if _, err := s.AddFault(Fault{Endpoint: tt.name, Kind: "reset_before_read", Count: 1}); err != nil {
				t.Fatal(err)
			}
			err := tt.do(t, s, srv.URL, client)
			if err == nil {
				t.Fatal("client got a response")
			}
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("client error %v, want a connection reset", err)
			}
			want := 0
			if tt.name == "phone" {
				want = 1 // classicToken before the request
			}
			if n := len(s.ValidTokens(appA)); n != want {
				t.Errorf("%d valid tokens, want %d", n, want)
			}
			var reset int64
			st := s.Stats().Endpoints
			switch tt.name {
			case "phone":
				reset = st.Phone.Reset
			case "stable_token":
				reset = st.StableToken.Reset
			default:
				reset = st.Token.Reset
			}
			if reset != 1 {
				t.Errorf("reset = %d", reset)
			}
		})
	}
}

func TestResetBeforeReadKeepsCode(t *testing.T) {
	s := newTestServer(t, nil)
	srv, client := networkServer(t, s)
	tok := classicToken(t, s, appA, secretA)
	code := mintPhone(t, s, appA, "13800138000")
	if _, err := s.AddFault(Fault{Endpoint: "phone", AppID: appA, Kind: "reset_before_read", Count: 1}); err != nil {
		t.Fatal(err)
	}
	if _, b, err := post(client, srv.URL+phoneURL(tok), codeBody(code)); err == nil {
		t.Fatalf("client got a response %q", b)
	}
	status, b, err := post(client, srv.URL+phoneURL(tok), codeBody(code))
	if err != nil || status != 200 || !strings.Contains(string(b), `"errcode":0,`) {
		t.Fatalf("code after reset: %d %q %v", status, b, err)
	}
	if c := s.Stats().Codes[code]; c.Calls != 1 || c.Answered != 1 {
		t.Errorf("code stats %+v (the reset request never read the code)", c)
	}
}

func TestJSCode2SessionFaults(t *testing.T) {
	tests := []struct {
		name      string
		fault     Fault
		wantFirst int // errcode of the faulted call
		wantNext  int // errcode of the retry with the same code
	}{
		{"errcode keeps code", Fault{Endpoint: "jscode2session", Kind: "errcode", Errcode: -1, Count: 1}, -1, 0},
		{"errcode consume", Fault{Endpoint: "jscode2session", Kind: "errcode", Errcode: -1, Count: 1, Consume: true}, -1, 40163},
		{"blocked user", Fault{Endpoint: "*", AppID: appA, Kind: "errcode", Errcode: 40226, Count: 1}, 40226, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, nil)
			lc, err := s.MintLoginCode(LoginGrant{AppID: appA})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.AddFault(tt.fault); err != nil {
				t.Fatal(err)
			}
			if r := wx(t, s, http.MethodGet, sessionURL(appA, secretA, lc.Code), ""); r.Errcode != tt.wantFirst {
				t.Fatalf("faulted call: %s", r.body)
			}
			if r := wx(t, s, http.MethodGet, sessionURL(appA, secretA, lc.Code), ""); r.Errcode != tt.wantNext {
				t.Fatalf("retry: %s", r.body)
			}
			if c := s.Stats().Codes[lc.Code]; c.Calls != 2 {
				t.Fatalf("code stats %+v", c)
			}
		})
	}
}
