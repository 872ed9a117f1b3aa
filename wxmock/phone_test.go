package wxmock

import (
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPhoneErrors(t *testing.T) {
	type fixture struct {
		s       *Server
		tokA    string
		tokB    string
		codeA   string
		expired string // expired classic token of app A
		stale   string // superseded classic token of app A
	}
	setup := func(t *testing.T) fixture {
		s := newTestServer(t, nil)
		var f fixture
		f.s = s
		f.expired = classicToken(t, s, appA, secretA)
		s.Advance(7200 * time.Second)
		f.stale = stableToken(t, s, appA, secretA, false).AccessToken
		stableToken(t, s, appA, secretA, true)
		f.tokA = classicToken(t, s, appA, secretA)
		f.tokB = classicToken(t, s, appB, secretB)
		f.codeA = mintPhone(t, s, appA, "13800138000")
		return f
	}
	tests := []struct {
		name     string
		method   string
		target   func(f fixture) string
		body     func(f fixture) string
		want     int
		consumed bool // the code is gone afterwards
	}{
		{"ok", http.MethodPost, func(f fixture) string { return phoneURL(f.tokA) }, func(f fixture) string { return codeBody(f.codeA) }, 0, true},
		{"GET", http.MethodGet, func(f fixture) string { return phoneURL(f.tokA) }, func(f fixture) string { return codeBody(f.codeA) }, 43002, false},
		{"PUT", http.MethodPut, func(f fixture) string { return phoneURL(f.tokA) }, func(f fixture) string { return codeBody(f.codeA) }, 43002, false},
		{"missing token", http.MethodPost, func(f fixture) string { return "/wxa/business/getuserphonenumber" }, func(f fixture) string { return codeBody(f.codeA) }, 41001, false},
		{"empty token", http.MethodPost, func(f fixture) string { return phoneURL("") }, func(f fixture) string { return codeBody(f.codeA) }, 41001, false},
		{"unknown token", http.MethodPost, func(f fixture) string { return phoneURL("86_nope") }, func(f fixture) string { return codeBody(f.codeA) }, 40001, false},
		{"force-invalidated token", http.MethodPost, func(f fixture) string { return phoneURL(f.stale) }, func(f fixture) string { return codeBody(f.codeA) }, 40001, false},
		{"expired token", http.MethodPost, func(f fixture) string { return phoneURL(f.expired) }, func(f fixture) string { return codeBody(f.codeA) }, 42001, false},
		{"token checked before body", http.MethodPost, func(f fixture) string { return phoneURL("86_nope") }, func(f fixture) string { return "" }, 40001, false},
		{"empty body", http.MethodPost, func(f fixture) string { return phoneURL(f.tokA) }, func(f fixture) string { return "" }, 44002, false},
		{"malformed JSON", http.MethodPost, func(f fixture) string { return phoneURL(f.tokA) }, func(f fixture) string { return `{"code":` }, 47001, false},
		{"code wrong type", http.MethodPost, func(f fixture) string { return phoneURL(f.tokA) }, func(f fixture) string { return `{"code":12}` }, 47001, false},
		{"body too large", http.MethodPost, func(f fixture) string { return phoneURL(f.tokA) }, func(f fixture) string {
			return `{"code":"` + f.codeA + `","pad":"` + strings.Repeat("x", MaxBodyBytes) + `"}`
		}, 47001, false},
		{"missing code", http.MethodPost, func(f fixture) string { return phoneURL(f.tokA) }, func(f fixture) string { return `{}` }, 40029, false},
		{"unknown code", http.MethodPost, func(f fixture) string { return phoneURL(f.tokA) }, func(f fixture) string { return codeBody(strings.Repeat("a", 64)) }, 40029, false},
		{"login code", http.MethodPost, func(f fixture) string { return phoneURL(f.tokA) }, func(f fixture) string {
			lc, _ := f.s.MintLoginCode(LoginGrant{AppID: appA})
			return codeBody(lc.Code)
		}, 40029, false},
		{"other app's token", http.MethodPost, func(f fixture) string { return phoneURL(f.tokB) }, func(f fixture) string { return codeBody(f.codeA) }, 40013, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t)
			r := wx(t, f.s, tt.method, tt.target(f), tt.body(f))
			if r.Errcode != tt.want {
				t.Fatalf("errcode = %d, want %d (%s)", r.Errcode, tt.want, r.body)
			}
			if tt.want == 0 && r.PhoneInfo == nil {
				t.Fatalf("no phone_info: %s", r.body)
			}
			if tt.want != 0 && r.PhoneInfo != nil {
				t.Fatalf("error carries phone_info: %s", r.body)
			}
			// A follow-up correct call shows whether the code survived.
			again := wx(t, f.s, http.MethodPost, phoneURL(f.tokA), codeBody(f.codeA))
			if consumed := again.Errcode == 40029; consumed != tt.consumed {
				t.Fatalf("code consumed = %v, want %v (follow-up %s)", consumed, tt.consumed, again.body)
			}
		})
	}
}

func TestPhoneSuccessShape(t *testing.T) {
	tests := []struct {
		name      string
		grant     PhoneGrant
		asNumber  bool
		wantPhone string
		wantCC    string // raw JSON
	}{
		{"mainland", PhoneGrant{PurePhoneNumber: "13800138000"}, false, "13800138000", `"86"`},
		{"mainland number cc", PhoneGrant{PurePhoneNumber: "13800138000"}, true, "13800138000", `86`},
		{"explicit 86", PhoneGrant{PurePhoneNumber: "13800138000", CountryCode: "86"}, false, "13800138000", `"86"`},
		{"foreign", PhoneGrant{PurePhoneNumber: "2025550123", CountryCode: "1"}, false, "+1 2025550123", `"1"`},
		{"foreign number cc", PhoneGrant{PurePhoneNumber: "91234567", CountryCode: "852"}, true, "+852 91234567", `852`},
		{"explicit phoneNumber", PhoneGrant{PurePhoneNumber: "91234567", CountryCode: "852", PhoneNumber: "+85291234567"}, false, "+85291234567", `"852"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, func(o *Options) { o.CountryCodeAsNumber = tt.asNumber })
			tt.grant.AppID = appB
			code, err := s.MintPhoneCode(tt.grant)
			if err != nil {
				t.Fatal(err)
			}
			if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(code) {
				t.Fatalf("code %q is not 64 lowercase hex", code)
			}
			grantTime := s.Now().Unix()
			s.Advance(2 * time.Minute)
			tok := classicToken(t, s, appB, secretB)
			r := wx(t, s, http.MethodPost, phoneURL(tok), codeBody(code))
			if r.Errcode != 0 || !strings.Contains(r.body, `"errmsg":"ok"`) {
				t.Fatalf("answer %s", r.body)
			}
			pi := r.PhoneInfo
			if pi.PhoneNumber != tt.wantPhone || pi.PurePhoneNumber != tt.grant.PurePhoneNumber {
				t.Errorf("numbers = %q / %q", pi.PhoneNumber, pi.PurePhoneNumber)
			}
			if string(pi.CountryCode) != tt.wantCC {
				t.Errorf("countryCode = %s, want %s", pi.CountryCode, tt.wantCC)
			}
			if pi.Watermark.AppID != appB || pi.Watermark.Timestamp != grantTime {
				t.Errorf("watermark = %+v, want %s/%d", pi.Watermark, appB, grantTime)
			}
		})
	}
}

func TestCountryCodeRuntimeSwitch(t *testing.T) {
	s := newTestServer(t, nil)
	tok := classicToken(t, s, appA, secretA)
	for _, tc := range []struct {
		asNumber bool
		want     string
	}{{true, `86`}, {false, `"86"`}, {true, `86`}} {
		s.SetCountryCodeAsNumber(tc.asNumber)
		r := wx(t, s, http.MethodPost, phoneURL(tok), codeBody(mintPhone(t, s, appA, "13800138000")))
		if got := string(r.PhoneInfo.CountryCode); got != tc.want {
			t.Errorf("asNumber=%v: countryCode %s, want %s", tc.asNumber, got, tc.want)
		}
	}
}

func TestPhoneCodeLifetime(t *testing.T) {
	tests := []struct {
		name   string
		wait   time.Duration
		second bool // call twice
		want   []int
	}{
		{"fresh", 0, false, []int{0}},
		{"at exactly 5 minutes", 5 * time.Minute, false, []int{0}},
		{"older than 5 minutes", 5*time.Minute + time.Second, false, []int{40029}},
		{"single use", 0, true, []int{0, 40029}},
		{"reuse later", time.Minute, true, []int{0, 40029}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, nil)
			tok := stableToken(t, s, appA, secretA, false).AccessToken
			code := mintPhone(t, s, appA, "13800138000")
			s.Advance(tt.wait)
			for i, want := range tt.want {
				if got := wx(t, s, http.MethodPost, phoneURL(tok), codeBody(code)).Errcode; got != want {
					t.Errorf("call %d: errcode %d, want %d", i, got, want)
				}
			}
		})
	}
}

func TestPhoneCodeSweep(t *testing.T) {
	s := newTestServer(t, nil)
	for range 1100 {
		mintPhone(t, s, appA, "13800138000")
	}
	s.Advance(6 * time.Minute)
	// The sweep is amortized: it runs when the table doubles (2048 here).
	for range 1000 {
		mintPhone(t, s, appA, "13800138000")
	}
	s.codeMu.Lock()
	n := len(s.phoneCodes)
	s.codeMu.Unlock()
	if n >= 1100 {
		t.Fatalf("expired codes were not swept: %d stored", n)
	}
}

func TestPhoneRateLimit(t *testing.T) {
	s := newTestServer(t, func(o *Options) { o.PhoneRateLimit = 2 })
	tokA := classicToken(t, s, appA, secretA)
	tokB := classicToken(t, s, appB, secretB)
	a1, a2, a3 := mintPhone(t, s, appA, "13800000001"), mintPhone(t, s, appA, "13800000002"), mintPhone(t, s, appA, "13800000003")
	b1 := mintPhone(t, s, appB, "13800000004")
	steps := []struct {
		tok, code string
		advance   time.Duration
		want      int
	}{
		{tokA, a1, 0, 0},
		{tokA, "unknown", 0, 40029}, // invalid codes do not use quota
		{tokA, a2, 0, 0},
		{tokA, a3, 0, 45011},
		{tokB, b1, 0, 0},           // per app
		{tokA, a3, 0, 45011},       // 45011 did not consume a3
		{tokA, a3, time.Minute, 0}, // next minute
	}
	for i, st := range steps {
		s.Advance(st.advance)
		r := wx(t, s, http.MethodPost, phoneURL(st.tok), codeBody(st.code))
		if r.Errcode != st.want {
			t.Fatalf("step %d: errcode %d, want %d (%s)", i, r.Errcode, st.want, r.body)
		}
	}
	// Runtime change: unlimited.
	if err := s.SetPhoneRateLimit(0); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if r := wx(t, s, http.MethodPost, phoneURL(tokA), codeBody(mintPhone(t, s, appA, "13800000005"))); r.Errcode != 0 {
			t.Fatalf("unlimited call %d: %s", i, r.body)
		}
	}
	if err := s.SetPhoneRateLimit(-1); err == nil {
		t.Fatal("negative limit accepted")
	}
}

func TestLoadMode(t *testing.T) {
	s := newTestServer(t, func(o *Options) { o.LoadPrefix = "load-" })
	tokA := classicToken(t, s, appA, secretA)
	tokB := classicToken(t, s, appB, secretB)
	r := wx(t, s, http.MethodPost, phoneURL(tokA), codeBody("load-0001"))
	if r.Errcode != 0 {
		t.Fatalf("load code: %s", r.body)
	}
	if !regexp.MustCompile(`^13[0-9]{9}$`).MatchString(r.PhoneInfo.PurePhoneNumber) ||
		r.PhoneInfo.PhoneNumber != r.PhoneInfo.PurePhoneNumber || string(r.PhoneInfo.CountryCode) != `"86"` {
		t.Fatalf("load phone info: %s", r.body)
	}
	if r.PhoneInfo.Watermark.AppID != appA || r.PhoneInfo.Watermark.Timestamp != baseTime.Unix() {
		t.Fatalf("watermark %+v", r.PhoneInfo.Watermark)
	}
	// Deterministic: the same code yields the same number (on another server).
	s2 := newTestServer(t, func(o *Options) { o.LoadPrefix = "load-" })
	r2 := wx(t, s2, http.MethodPost, phoneURL(classicToken(t, s2, appB, secretB)), codeBody("load-0001"))
	if r2.PhoneInfo.PurePhoneNumber != r.PhoneInfo.PurePhoneNumber || r2.PhoneInfo.Watermark.AppID != appB {
		t.Fatalf("load number not deterministic or appid wrong: %s vs %s", r.body, r2.body)
	}
	tests := []struct {
		name string
		tok  string
		code string
		want int
	}{
		{"second use", tokA, "load-0001", 40029},
		{"second use other app", tokB, "load-0001", 40029},
		{"other app fresh", tokB, "load-0002", 0},
		{"no prefix", tokA, "0003", 40029},
		{"prefix only in the middle", tokA, "x-load-0004", 40029},
		{"too long", tokA, "load-" + strings.Repeat("9", MaxLoadCodeLen), 40029},
		{"token still checked", "86_nope", "load-0005", 40001},
		{"minted codes still work", tokA, mintPhone(t, s, appA, "13912345678"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := wx(t, s, http.MethodPost, phoneURL(tt.tok), codeBody(tt.code)).Errcode; got != tt.want {
				t.Fatalf("errcode %d, want %d", got, tt.want)
			}
		})
	}
	// Token errors do not consume load codes.
	if got := wx(t, s, http.MethodPost, phoneURL(tokA), codeBody("load-0005")).Errcode; got != 0 {
		t.Fatalf("load-0005 after token error: %d", got)
	}
	// Distinct codes give (almost always) distinct numbers.
	if loadPhone("load-a") == loadPhone("load-b") {
		t.Error("loadPhone collision on trivial inputs")
	}
	st := s.Stats()
	if c := st.Codes["load-0001"]; c.Calls != 3 || c.Answered != 1 {
		t.Errorf("load-0001 stats %+v", c)
	}
	if _, ok := st.Codes["0003"]; ok {
		t.Error("stats recorded an unknown code")
	}
}

func TestLoadModeRateLimitDoesNotConsume(t *testing.T) {
	s := newTestServer(t, func(o *Options) { o.LoadPrefix = "L"; o.PhoneRateLimit = 1 })
	tok := classicToken(t, s, appA, secretA)
	for i, want := range []int{0, 45011} {
		if got := wx(t, s, http.MethodPost, phoneURL(tok), codeBody("L"+string(rune('a'+i)))).Errcode; got != want {
			t.Fatalf("call %d: %d, want %d", i, got, want)
		}
	}
	s.Advance(time.Minute)
	if got := wx(t, s, http.MethodPost, phoneURL(tok), codeBody("Lb")).Errcode; got != 0 {
		t.Fatalf("Lb after 45011: %d", got)
	}
}

func TestPhoneConcurrentSingleUse(t *testing.T) {
	s := newTestServer(t, func(o *Options) { o.LoadPrefix = "load-" })
	tok := classicToken(t, s, appA, secretA)
	codes := []string{mintPhone(t, s, appA, "13800138000"), "load-race"}
	for _, code := range codes {
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for range 32 {
			wg.Go(func() {
				rec := serve(s, http.MethodPost, phoneURL(tok), codeBody(code))
				if strings.Contains(rec.Body.String(), `"errcode":0,`) {
					mu.Lock()
					wins++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if wins != 1 {
			t.Errorf("code used %d times concurrently, want 1", wins)
		}
	}
}

func TestMintPhoneCodeValidation(t *testing.T) {
	single := newTestServer(t, func(o *Options) { o.Apps = o.Apps[:1] })
	multi := newTestServer(t, nil)
	tests := []struct {
		name string
		s    *Server
		g    PhoneGrant
		ok   bool
	}{
		{"single app default", single, PhoneGrant{PurePhoneNumber: "13800138000"}, true},
		{"multi app needs appid", multi, PhoneGrant{PurePhoneNumber: "13800138000"}, false},
		{"unknown app", multi, PhoneGrant{AppID: "wxnope", PurePhoneNumber: "13800138000"}, false},
		{"short number", multi, PhoneGrant{AppID: appA, PurePhoneNumber: "123"}, false},
		{"4 digits", multi, PhoneGrant{AppID: appA, PurePhoneNumber: "1234"}, true},
		{"20 digits", multi, PhoneGrant{AppID: appA, PurePhoneNumber: strings.Repeat("1", 20)}, true},
		{"21 digits", multi, PhoneGrant{AppID: appA, PurePhoneNumber: strings.Repeat("1", 21)}, false},
		{"non-digit", multi, PhoneGrant{AppID: appA, PurePhoneNumber: "1380013800a"}, false},
		{"plus", multi, PhoneGrant{AppID: appA, PurePhoneNumber: "+8613800138000"}, false},
		{"cc 4 digits", multi, PhoneGrant{AppID: appA, PurePhoneNumber: "13800138000", CountryCode: "1234"}, true},
		{"cc 5 digits", multi, PhoneGrant{AppID: appA, PurePhoneNumber: "13800138000", CountryCode: "12345"}, false},
		{"cc with plus", multi, PhoneGrant{AppID: appA, PurePhoneNumber: "13800138000", CountryCode: "+86"}, false},
		{"phoneNumber control char", multi, PhoneGrant{AppID: appA, PurePhoneNumber: "13800138000", PhoneNumber: "1\n2"}, false},
		{"phoneNumber too long", multi, PhoneGrant{AppID: appA, PurePhoneNumber: "13800138000", PhoneNumber: strings.Repeat("1", 41)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.s.MintPhoneCode(tt.g)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
