package wxphone

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// oldRules is the errcode knowledge as it stood spread over errors.go,
// client.go, metrics and the service before it became one table (the
// table must answer exactly as these did).
var oldRules = struct {
	token, refused, metrics map[int]bool
}{
	token: map[int]bool{40001: true, 40014: true, 42001: true, 41001: true},
	refused: map[int]bool{
		40001: true, 40002: true, 40013: true, 40125: true, 40164: true, 40243: true,
		41002: true, 41004: true, 45009: true, 50004: true, 50007: true,
		61024: true, 89501: true, 89503: true, 89506: true, 89507: true,
	},
	metrics: map[int]bool{
		-1: true, 0: true, 40001: true, 40002: true, 40013: true, 40014: true, 40029: true,
		40125: true, 40163: true, 40164: true, 40226: true, 40243: true, 41001: true,
		41002: true, 41004: true, 42001: true, 43002: true, 44002: true, 45009: true,
		45011: true, 47001: true, 50004: true, 50007: true,
		40003: true, 40230: true, 40231: true, 40232: true, 40233: true, 40234: true,
		40235: true, 40236: true, 40237: true, 40238: true, 40239: true, 40240: true,
	},
}

func oldIs(op string, code int, target error) bool {
	switch target {
	case ErrSystemBusy:
		return code == -1
	case ErrRateLimited:
		return code == 45011
	case ErrQuotaExhausted:
		return code == 45009
	case ErrAPISecurity:
		return code >= 40230 && code <= 40240
	case ErrAPISecurityConfig:
		return code >= 40234 && code <= 40239
	case ErrClockSkew:
		return code == 40240
	}
	if op == OpStableToken || op == OpToken {
		return target == ErrTokenFetchRefused && oldRules.refused[code]
	}
	switch target {
	case ErrInvalidCode:
		return code == 40029 || (op == OpCode2Session && code == 40163)
	case ErrAppIDMismatch:
		return code == 40013
	case ErrTokenInvalid:
		return oldRules.token[code]
	}
	return false
}

// TestErrcodeTableKeepsTheRules: APIError's sentinels, Temporary, the
// service's "may have used the code" rule and the metrics' known errcodes
// read one table, and it answers as the rules it replaced did, for every
// operation and every errcode in WeChat's ranges.
func TestErrcodeTableKeepsTheRules(t *testing.T) {
	sentinels := []error{
		ErrInvalidInput, ErrInvalidCode, ErrAppIDMismatch, ErrRateLimited, ErrSystemBusy, ErrTokenInvalid,
		ErrOutcomeUnknown, ErrCodeMayBeUsed, ErrTokenFetchRefused, ErrQuotaExhausted, ErrTokenUnavailable,
		ErrForceRefreshLimited, ErrTokenStillValid, ErrTokenCheckFailed, ErrRefreshLockNotHeld,
		ErrWatermarkMismatch, ErrMalformedResponse, ErrUpstream, ErrDecrypt, ErrClosed,
		ErrAnswerUnverified, ErrAPISecurity, ErrAPISecurityConfig, ErrClockSkew,
	}
	ops := []string{OpPhoneNumber, OpStableToken, OpToken, OpCode2Session, OpAPIDomainIP, OpAPIQuota, OpRIDInfo}
	codes := []int{-2, -1, 0, 1, 99999, 1400001}
	for _, r := range [][2]int{{40000, 40300}, {41000, 41010}, {42000, 42010}, {43000, 43010}, {44000, 44010},
		{45000, 45020}, {47000, 47010}, {48000, 48010}, {50000, 50010}, {61000, 61030}, {87000, 87010}, {89500, 89510}} {
		for c := r[0]; c <= r[1]; c++ {
			codes = append(codes, c)
		}
	}
	for _, op := range ops {
		for _, code := range codes {
			e := &APIError{Op: op, ErrCode: code}
			for _, target := range sentinels {
				if got, want := errors.Is(e, target), oldIs(op, code, target); got != want {
					t.Errorf("%s errcode %d: errors.Is(%v) = %v, want %v", op, code, target, got, want)
				}
			}
			if got, want := e.Temporary(), code == -1 || code == 45011; got != want {
				t.Errorf("%s errcode %d: Temporary = %v, want %v", op, code, got, want)
			}
			// The service's rule: an exchange's errcode leaves the code
			// possibly used unless it is a token error, 45011 or a refusal
			// of the API security mode.
			want := (op == OpPhoneNumber || op == OpCode2Session) &&
				!oldIs(op, code, ErrTokenInvalid) && code != 45011 && !oldIs(op, code, ErrAPISecurity)
			if got := e.MayHaveUsedCode(); got != want {
				t.Errorf("%s errcode %d: MayHaveUsedCode = %v, want %v", op, code, got, want)
			}
		}
	}
	for code := range oldRules.metrics {
		if !KnownErrcode(code) {
			t.Errorf("errcode %d lost its metric label", code)
		}
	}
	for code := range oldRules.refused {
		if !KnownErrcode(code) {
			t.Errorf("refused errcode %d is not known", code)
		}
	}
	for _, code := range []int{-2, 1, 40004, 99999} {
		if KnownErrcode(code) {
			t.Errorf("errcode %d is known", code)
		}
	}
}

func TestAPIErrorIs(t *testing.T) {
	t.Parallel()
	sentinels := map[string]error{
		"ErrInvalidCode": ErrInvalidCode, "ErrAppIDMismatch": ErrAppIDMismatch, "ErrRateLimited": ErrRateLimited,
		"ErrSystemBusy": ErrSystemBusy, "ErrTokenInvalid": ErrTokenInvalid, "ErrTokenFetchRefused": ErrTokenFetchRefused,
		"ErrQuotaExhausted": ErrQuotaExhausted, "ErrOutcomeUnknown": ErrOutcomeUnknown,
	}
	tests := []struct {
		op   string
		code int
		want []string
	}{
		{OpPhoneNumber, 40029, []string{"ErrInvalidCode"}},
		{OpPhoneNumber, 40013, []string{"ErrAppIDMismatch"}},
		{OpPhoneNumber, 45011, []string{"ErrRateLimited"}},
		{OpPhoneNumber, -1, []string{"ErrSystemBusy"}},
		{OpPhoneNumber, 40001, []string{"ErrTokenInvalid"}},
		{OpPhoneNumber, 40014, []string{"ErrTokenInvalid"}},
		{OpPhoneNumber, 42001, []string{"ErrTokenInvalid"}},
		{OpPhoneNumber, 41001, []string{"ErrTokenInvalid"}},
		{OpPhoneNumber, 40163, nil},
		{OpPhoneNumber, 47001, nil},
		{OpCode2Session, 40029, []string{"ErrInvalidCode"}},
		{OpCode2Session, 40163, []string{"ErrInvalidCode"}},
		{OpCode2Session, -1, []string{"ErrSystemBusy"}},
		{OpStableToken, 40013, []string{"ErrTokenFetchRefused"}},
		{OpStableToken, 40125, []string{"ErrTokenFetchRefused"}},
		{OpStableToken, 40164, []string{"ErrTokenFetchRefused"}},
		{OpStableToken, 40243, []string{"ErrTokenFetchRefused"}},
		{OpStableToken, 45009, []string{"ErrTokenFetchRefused", "ErrQuotaExhausted"}},
		{OpStableToken, 89503, []string{"ErrTokenFetchRefused"}},
		{OpStableToken, -1, []string{"ErrSystemBusy"}},
		{OpStableToken, 45011, []string{"ErrRateLimited"}},
		{OpToken, 40001, []string{"ErrTokenFetchRefused"}},
		{OpToken, 40164, []string{"ErrTokenFetchRefused"}},
		{OpToken, 45009, []string{"ErrTokenFetchRefused", "ErrQuotaExhausted"}},
	}
	for _, tt := range tests {
		err := error(&APIError{Op: tt.op, ErrCode: tt.code})
		for name, s := range sentinels {
			want := false
			for _, w := range tt.want {
				want = want || w == name
			}
			if got := errors.Is(err, s); got != want {
				t.Errorf("%s errcode %d: errors.Is(%s) = %v, want %v", tt.op, tt.code, name, got, want)
			}
		}
	}
}

func TestParseRID(t *testing.T) {
	t.Parallel()
	tests := []struct{ msg, want string }{
		{"invalid code hint: [hElexSDNRa-XiBFgA] rid: 632d16be-15ad5486-1e378de4", "632d16be-15ad5486-1e378de4"},
		{"invalid code, hints: [ req_id: GEbaO6yFe-g8Msfa ]", "GEbaO6yFe-g8Msfa"},
		{"code been used, hints: [ req_id: abc123 ]", "abc123"},
		{"access_token missing rid: 66739825-2e4f4a1d-0f8e7b6a", "66739825-2e4f4a1d-0f8e7b6a"},
		{"rid:nospace", "nospace"},
		{"system error", ""},
		{"rid: ", ""},
		{"req_id: ]", ""},
		{"", ""},
		{"rid: " + strings.Repeat("a", 100), strings.Repeat("a", 64)},
	}
	for _, tt := range tests {
		if got := parseRID(tt.msg); got != tt.want {
			t.Errorf("parseRID(%q) = %q, want %q", tt.msg, got, tt.want)
		}
	}
}

// TestAPIErrorFromStub covers rid formats the emulator does not produce and
// the scrubbing of echoed secrets.
func TestAPIErrorFromStub(t *testing.T) {
	t.Parallel()
	const code = "code-0123456789abcdef"
	tests := []struct {
		name, body string
		errcode    int
		rid        string
		sentinel   error
	}{
		{"req_id format", `{"errcode":40029,"errmsg":"invalid code, hints: [ req_id: GEbaO6yFe-g8Msfa ]"}`, 40029, "GEbaO6yFe-g8Msfa", ErrInvalidCode},
		{"rid format", `{"errcode":45011,"errmsg":"api minute-quota reach limit mustslower retry next minute rid: 632d16be-15ad5486-1e378de4"}`, 45011, "632d16be-15ad5486-1e378de4", ErrRateLimited},
		{"errcode as string", `{"errcode":"40029","errmsg":"invalid code"}`, 40029, "", ErrInvalidCode},
		{"echoes code and token", `{"errcode":40029,"errmsg":"invalid code ` + code + ` for STATIC-TOKEN-0123456789 rid: 1-2-3"}`, 40029, "1-2-3", ErrInvalidCode},
		{"control characters", "{\"errcode\":40029,\"errmsg\":\"bad\\n\\u0000code\"}", 40029, "", ErrInvalidCode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stub := newStub(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, "text/plain", tt.body) })
			c := stubClient(t, stub.URL)
			_, err := c.PhoneNumber(ctxTimeout(t, 10*time.Second), code)
			var ae *APIError
			if !errors.As(err, &ae) || ae.ErrCode != tt.errcode || ae.RID != tt.rid || !errors.Is(err, tt.sentinel) {
				t.Fatalf("err = %#v; want APIError %d rid %q", err, tt.errcode, tt.rid)
			}
			if s := err.Error(); strings.Contains(s, code) || strings.Contains(s, "STATIC-TOKEN") || strings.ContainsAny(s, "\n\x00") {
				t.Errorf("error not sanitised: %q", s)
			}
		})
	}
}

func TestAPIErrorMessageBounded(t *testing.T) {
	t.Parallel()
	msg := sanitizeMsg(strings.Repeat("é", 1000))
	if n := len(msg); n > maxErrMsg+8 {
		t.Errorf("sanitized message is %d bytes", n)
	}
	if !strings.HasSuffix(msg, "…") {
		t.Errorf("truncated message lacks an ellipsis: %q", msg[len(msg)-8:])
	}
}
