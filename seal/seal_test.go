package seal

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

func TestSealOpenRoundTripAndBinding(t *testing.T) {
	kr, err := NewKeyring(testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	pt := []byte(`{"n":"13800138000"}`)
	s1, s2 := kr.Seal(pt, []byte("k1")), kr.Seal(pt, []byte("k1"))
	if bytes.Equal(s1, s2) {
		t.Fatal("two seals of the same plaintext are equal (nonce reuse)")
	}
	if bytes.Contains(s1, pt) || bytes.Contains(s1, []byte("13800138000")) {
		t.Fatal("plaintext visible in sealed output")
	}
	got, err := kr.Open(s1, []byte("k1"))
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	tests := []struct {
		name   string
		sealed []byte
		aad    string
	}{
		{"other aad", s1, "k2"},
		{"flipped byte", flip(s1, len(s1)-1), "k1"},
		{"flipped key id", flip(s1, 0), "k1"},
		{"truncated", s1[:10], "k1"},
		{"empty", nil, "k1"},
		{"id only", s1[:4], "k1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := kr.Open(tt.sealed, []byte(tt.aad)); !errors.Is(err, ErrOpen) {
				t.Fatalf("err = %v, want ErrOpen", err)
			}
		})
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 1
	return c
}

func TestRotation(t *testing.T) {
	old, _ := NewKeyring(testKey(1))
	both, _ := NewKeyring(testKey(2), testKey(1))
	newOnly, _ := NewKeyring(testKey(2))
	s := old.Seal([]byte("x"), nil)
	if _, err := both.Open(s, nil); err != nil {
		t.Fatalf("rotated ring cannot open old data: %v", err)
	}
	if _, err := newOnly.Open(s, nil); !errors.Is(err, ErrOpen) {
		t.Fatalf("a ring without the old key opened old data: %v", err)
	}
	if s2 := both.Seal([]byte("x"), nil); !bytes.Equal(s2[:4], newOnly.Seal(nil, nil)[:4]) {
		t.Fatal("rotated ring does not seal with its first key")
	}
	ix := both.Indexes("a", "b")
	if ix[0] != newOnly.Index("a", "b") || ix[1] != old.Index("a", "b") || len(ix) != 2 {
		t.Fatalf("Indexes = %v", ix)
	}
}

func TestIndexIsKeyedAndUnambiguous(t *testing.T) {
	a, _ := NewKeyring(testKey(1))
	b, _ := NewKeyring(testKey(2))
	if a.Index("phone", "13800138000") == b.Index("phone", "13800138000") {
		t.Fatal("index does not depend on the key")
	}
	if a.Index("ab", "c") == a.Index("a", "bc") {
		t.Fatal("index parts are ambiguous")
	}
	plain := sha256.Sum256([]byte("13800138000"))
	if strings.Contains(a.Index("13800138000"), hex.EncodeToString(plain[:])) {
		t.Fatal("index is a plain SHA-256")
	}
	if first, second := a.Index("x"), a.Index("x"); first != second {
		t.Fatal("index not deterministic")
	}
}

func TestParseKeys(t *testing.T) {
	k1 := base64.StdEncoding.EncodeToString(testKey(1))
	k2 := base64.RawURLEncoding.EncodeToString(testKey(2))
	short := base64.StdEncoding.EncodeToString(testKey(1)[:16])
	tests := []struct {
		in      string
		n       int
		wantErr string
	}{
		{k1, 1, ""},
		{k1 + "," + k2, 2, ""},
		{" " + k1 + " , " + k2 + " ", 2, ""},
		{"", 0, "key 1 is empty"},
		{k1 + ",", 0, "key 2 is empty"},
		{"not base64!!", 0, "key 1 is not base64"},
		{k1 + "," + short, 0, "key 2 decodes to 16 bytes"},
	}
	for _, tt := range tests {
		kr, err := ParseKeys(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseKeys(%q) err = %v, want %q", tt.in, err, tt.wantErr)
			}
			if err != nil && (strings.Contains(err.Error(), k1) || strings.Contains(err.Error(), short)) {
				t.Errorf("error echoes a key: %v", err)
			}
			continue
		}
		if err != nil || kr.Len() != tt.n {
			t.Errorf("ParseKeys(%q) = %v keys, %v", tt.in, kr, err)
		}
	}
	if _, err := NewKeyring(); err == nil {
		t.Error("empty keyring accepted")
	}
}

func TestKeyringPrintsNoKeyMaterial(t *testing.T) {
	kr, _ := NewKeyring(testKey(0x41))
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(verb, kr)
		if strings.Contains(out, "AAAA") || strings.Contains(out, "65 65") || strings.Contains(out, "[") {
			t.Errorf("%s prints %q", verb, out)
		}
	}
}

func FuzzOpen(f *testing.F) {
	kr, _ := NewKeyring(testKey(1))
	f.Add(kr.Seal([]byte("hello"), []byte("k")), []byte("k"))
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, sealed, aad []byte) {
		_, _ = kr.Open(sealed, aad) // must not panic
	})
}

// parseKeysErr is every shape a ParseKeys error has: a position and a
// size, never the text of a key.
var parseKeysErr = regexp.MustCompile(`^seal: key [0-9]+ (is empty|is not base64|decodes to [0-9]+ bytes, want 32)$`)

func FuzzParseKeys(f *testing.F) {
	f.Add(base64.StdEncoding.EncodeToString(testKey(1)))
	f.Add("a,b,,c")
	f.Fuzz(func(t *testing.T, s string) {
		kr, err := ParseKeys(s)
		if err != nil {
			if kr != nil || !parseKeysErr.MatchString(err.Error()) {
				t.Fatalf("ParseKeys = %v, %q: an error must name a position, never a key", kr, err)
			}
			return
		}
		parts := strings.Split(s, ",")
		if kr.Len() != len(parts) {
			t.Fatalf("%d keys from %d parts", kr.Len(), len(parts))
		}
		// The keyring works and prints no key material, in any form.
		if pt, err := kr.Open(kr.Seal([]byte("x"), []byte("aad")), []byte("aad")); err != nil || string(pt) != "x" {
			t.Fatalf("seal/open round trip: %q, %v", pt, err)
		}
		for _, p := range parts {
			p = strings.TrimSpace(p)
			raw, err := decodeKey(p)
			if err != nil || len(raw) != KeySize {
				t.Fatalf("accepted key %q", p)
			}
			for _, out := range []string{fmt.Sprintf("%v %+v %#v %s %x %q", kr, kr, kr, kr, kr, kr), fmt.Sprintf("%v %+v %#v %x", *kr, *kr, *kr, *kr)} {
				for _, material := range [][]byte{raw, derive(raw, "wxphone index v1"), derive(raw, "wxphone seal v1")} {
					if strings.Contains(out, p) || strings.Contains(out, fmt.Sprintf("%x", material)) || strings.Contains(out, strings.Trim(fmt.Sprint(material), "[]")) {
						t.Fatalf("the keyring prints key material: %s", out)
					}
				}
			}
		}
	})
}

// TestIndexFormatIsStable pins Index's output: stored records are found by
// it, so a change of format (or of the pooled HMAC's handling) would lose
// them. The values were computed by the implementation before the pool.
func TestIndexFormatIsStable(t *testing.T) {
	kr, _ := NewKeyring(testKey(1))
	for _, c := range []struct {
		parts []string
		want  string
	}{
		{[]string{"phone", "wx0123456789abcdef", "code-1"}, "c1f96fc6f9a28bb22d878c0b5f7e645f2f0175e60fb45c99b30a53e9df27aa1f"},
		{[]string{""}, "6776e133d87a2b73507c996ac8fecd897c5e58f40cab9e5c4f673e3c4e4a9368"},
		{nil, "6cd01d115df54fe3785ca8bd492ae38b40275dc2153ab30cec24fe6797d70606"},
	} {
		for range 3 { // pooled HMACs are reset between uses
			if got := kr.Index(c.parts...); got != c.want {
				t.Fatalf("Index(%q) = %s, want %s", c.parts, got, c.want)
			}
		}
	}
}

func TestIndexConcurrent(t *testing.T) {
	kr, _ := NewKeyring(testKey(1))
	want := kr.Index("phone", "a", "b")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				if got := kr.Index("phone", "a", "b"); got != want {
					t.Errorf("goroutine %d, call %d: %s, want %s", g, i, got, want)
					return
				}
				_ = kr.Index("other", strings.Repeat("x", i))
			}
		})
	}
	wg.Wait()
}

// BenchmarkIndex: one allocation per index (its string) with the pooled
// HMAC; hmac.New per call made 12.
func BenchmarkIndex(b *testing.B) {
	kr, _ := NewKeyring(testKey(1))
	b.ReportAllocs()
	for b.Loop() {
		_ = kr.Index("phone", "wx0123456789abcdef", "0a1b2c3d4e5f60718293a4b5c6d7e8f9")
	}
}
