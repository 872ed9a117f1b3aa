package wxmock

import (
	crand "crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"sync"
	"time"
)

// entropy is the emulator's randomness source: a seeded PCG guarded by a
// mutex when Options.Seed is set, crypto/rand otherwise.
type entropy struct {
	mu sync.Mutex
	r  *rand.Rand // nil: crypto/rand
}

func (e *entropy) read(b []byte) {
	if e.r == nil {
		_, _ = crand.Read(b) // never fails since Go 1.24
		return
	}
	e.mu.Lock()
	for i := 0; i < len(b); i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], e.r.Uint64())
		copy(b[i:], w[:])
	}
	e.mu.Unlock()
}

// fastUint64 returns a non-secret random value (used for rids). Unseeded it
// uses the runtime's generator, which needs no lock.
func (e *entropy) fastUint64() uint64 {
	if e.r == nil {
		return rand.Uint64() // #nosec G404 -- emulator rids, not secrets
	}
	e.mu.Lock()
	v := e.r.Uint64()
	e.mu.Unlock()
	return v
}

const lowerHex = "0123456789abcdef"

func putHex32(dst []byte, v uint32) {
	for i := 7; i >= 0; i-- {
		dst[i] = lowerHex[v&0xf]
		v >>= 4
	}
}

// rid returns a request id like WeChat's: three groups of eight lowercase
// hex digits, the first being the emulated Unix time.
func (s *Server) rid(now time.Time) string {
	var b [26]byte
	putHex32(b[0:8], uint32(now.Unix())) // #nosec G115 -- WeChat's rid carries the low 32 bits of the time
	b[8] = '-'
	v := s.ent.fastUint64()
	putHex32(b[9:17], uint32(v>>32))
	b[17] = '-'
	putHex32(b[18:26], uint32(v)) // #nosec G115 -- low half of a random value
	return string(b[:])
}

// newToken returns a token that looks like a real one: "86_" followed by
// 133 characters of [A-Za-z0-9_-] (136 in total).
func (s *Server) newToken() string {
	var raw [100]byte // 100 bytes -> 134 base64url characters
	s.ent.read(raw[:])
	var out [136]byte
	copy(out[:], "86_")
	var enc [134]byte
	base64.RawURLEncoding.Encode(enc[:], raw[:])
	copy(out[3:], enc[:133])
	return string(out[:])
}

// newPhoneCode returns 64 lowercase hex characters.
func (s *Server) newPhoneCode() string {
	var raw [32]byte
	s.ent.read(raw[:])
	return hex.EncodeToString(raw[:])
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// newLoginCode returns 32 characters of [A-Za-z0-9].
func (s *Server) newLoginCode() string {
	var raw [32]byte
	s.ent.read(raw[:])
	for i, c := range raw {
		// 62 does not divide 256; the slight bias is irrelevant here.
		raw[i] = alnum[int(c)%len(alnum)]
	}
	return string(raw[:])
}

// newOpenID returns "o" followed by 27 characters of [A-Za-z0-9_-], the
// shape of real openids.
func (s *Server) newOpenID() string {
	var raw [20]byte
	s.ent.read(raw[:])
	return "o" + base64.RawURLEncoding.EncodeToString(raw[:])
}

// newSessionKey returns base64 (standard encoding) of 16 random bytes.
func (s *Server) newSessionKey() string {
	var raw [16]byte
	s.ent.read(raw[:])
	return base64.StdEncoding.EncodeToString(raw[:])
}
