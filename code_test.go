package wxphone

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidateCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, code string
		ok         bool
	}{
		{"real phone code", "e31968a7f94cc5ee25fafc2aef2773f0bb8c3937b22520eb8ee345274d00c144", true},
		{"login code", "0a3Xk0000d5FMR1Jb0000ExZ5g0Xk00e", true},
		{"punctuation", `a"b\c<d>{}`, true},
		{"max length", strings.Repeat("a", MaxCodeLen), true},
		{"empty", "", false},
		{"too long", strings.Repeat("a", MaxCodeLen+1), false},
		{"huge", strings.Repeat("a", 1<<20), false},
		{"space", "abc def", false},
		{"leading space", " abc", false},
		{"tab", "abc\tdef", false},
		{"newline", "abc\n", false},
		{"NUL", "abc\x00", false},
		{"DEL", "abc\x7f", false},
		{"non-ASCII", "abcé", false},
		{"full-width", "ａｂｃ", false},
		{"invalid UTF-8", "abc\xff", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateCode(tt.code)
			if tt.ok {
				if err != nil {
					t.Fatalf("ValidateCode: %v", err)
				}
				return
			}
			var ie *InputError
			if !errors.As(err, &ie) || !errors.Is(err, ErrInvalidInput) || ie.Field != "code" {
				t.Fatalf("ValidateCode = %v; want an *InputError for field code", err)
			}
			if len(tt.code) >= 3 && strings.Contains(err.Error(), tt.code) {
				t.Errorf("error contains the code: %v", err)
			}
		})
	}
}

func TestBadCodesNeverReachWeChat(t *testing.T) {
	t.Parallel()
	env := newSrvEnv(t)
	c := newTestClient(t, env.config(t))
	ctx := ctxTimeout(t, 10*time.Second)
	bad := []string{"", strings.Repeat("x", MaxCodeLen+1), "has space", "ctl\x01", "non-ascii-é", "nul\x00"}
	for _, code := range bad {
		if p, err := c.PhoneNumber(ctx, code); p != nil || !errors.Is(err, ErrInvalidInput) {
			t.Errorf("PhoneNumber(%q) = %v, %v; want ErrInvalidInput", code, p, err)
		}
		if s, err := c.Code2Session(ctx, code); s != nil || !errors.Is(err, ErrInvalidInput) {
			t.Errorf("Code2Session(%q) = %v, %v; want ErrInvalidInput", code, s, err)
		}
	}
	// Not even a token fetch: the code is checked before anything else.
	if n := len(env.rec.requests()); n != 0 {
		t.Errorf("upstream requests = %d, want 0", n)
	}
}
