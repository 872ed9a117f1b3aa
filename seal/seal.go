// Package seal encrypts what wxphone keeps at rest (replayable results,
// tokens in a shared store) and derives the keyed hashes it stores them
// under, so that neither a code nor a phone number nor a token is ever
// stored in clear.
//
// A Keyring holds one or more 32-byte data keys. The first key seals and
// indexes; every key opens, so keys can be rotated: add the new key second,
// roll it out everywhere, then move it first, then drop the old one.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// KeySize is the size of a data key in bytes.
const KeySize = 32

// ErrOpen is returned when sealed data cannot be opened with any key: it was
// tampered with, sealed for another purpose, or with a key no longer held.
var ErrOpen = errors.New("seal: cannot open sealed data")

// Keyring seals and indexes with its first key and opens with any.
type Keyring struct {
	keys []key
}

type key struct {
	id   [4]byte     // first bytes of SHA-256 of the encryption key, stored with each sealed value
	aead cipher.AEAD // AES-256-GCM under a key derived for sealing
	macs *sync.Pool  // of *indexer: HMACs under the key derived for indexing
}

// indexer is an HMAC under one key with its scratch space, reused from a
// pool: an index then costs one allocation (its string) instead of 12,
// and a third of the time (BenchmarkIndex, docs/benchmarks.md).
type indexer struct {
	mac           hash.Hash
	msg, sum, hex []byte
}

// NewKeyring returns a keyring over the given 32-byte keys (the first seals).
func NewKeyring(keys ...[]byte) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("seal: at least one key is required")
	}
	kr := &Keyring{}
	for i, k := range keys {
		if len(k) != KeySize {
			return nil, fmt.Errorf("seal: key %d is %d bytes, want %d", i+1, len(k), KeySize)
		}
		encKey := derive(k, "wxphone seal v1")
		block, err := aes.NewCipher(encKey)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		var id [4]byte
		sum := sha256.Sum256(encKey)
		copy(id[:], sum[:4])
		index := derive(k, "wxphone index v1")
		macs := &sync.Pool{New: func() any { return &indexer{mac: hmac.New(sha256.New, index)} }}
		kr.keys = append(kr.keys, key{id: id, aead: aead, macs: macs})
	}
	return kr, nil
}

// NewRandomKeyring returns a keyring with one fresh random key: what a
// single process uses when no data key is configured (its sealed data dies
// with it).
func NewRandomKeyring() *Keyring {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		panic("seal: crypto/rand failed: " + err.Error()) // cannot happen on supported platforms
	}
	kr, _ := NewKeyring(k)
	return kr
}

// ParseKeys parses a comma-separated list of base64 (standard or URL, padded
// or not) 32-byte keys, as in WXPHONE_DATA_KEY. Errors name the position of
// a bad key, never its text.
func ParseKeys(s string) (*Keyring, error) {
	var keys [][]byte
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("seal: key %d is empty", i+1)
		}
		k, err := decodeKey(part)
		if err != nil {
			return nil, fmt.Errorf("seal: key %d is not base64", i+1)
		}
		if len(k) != KeySize {
			return nil, fmt.Errorf("seal: key %d decodes to %d bytes, want %d", i+1, len(k), KeySize)
		}
		keys = append(keys, k)
	}
	return NewKeyring(keys...)
}

func decodeKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

func derive(k []byte, purpose string) []byte {
	m := hmac.New(sha256.New, k)
	m.Write([]byte(purpose))
	return m.Sum(nil)
}

// String describes the keyring without any key material. It and the other
// printing methods have value receivers so that a Keyring printed by value
// (*kr) does not print its fields, which hold the index key.
func (kr Keyring) String() string { return fmt.Sprintf("seal.Keyring(%d keys)", len(kr.keys)) }

// GoString describes the keyring without any key material.
func (kr Keyring) GoString() string { return kr.String() }

// Format writes String for every verb, so %+v and %#v reveal no key.
func (kr Keyring) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, kr.String()) }

// LogValue implements slog.LogValuer without any key material.
func (kr Keyring) LogValue() slog.Value { return slog.StringValue(kr.String()) }

// Len is the number of keys.
func (kr *Keyring) Len() int { return len(kr.keys) }

// Seal encrypts plaintext with the first key. aad binds the sealed value to
// its context (e.g. the store key it is stored under): opening it under
// another aad fails.
func (kr *Keyring) Seal(plaintext, aad []byte) []byte {
	k := kr.keys[0]
	out := make([]byte, 4+k.aead.NonceSize(), 4+k.aead.NonceSize()+len(plaintext)+k.aead.Overhead())
	copy(out, k.id[:])
	if _, err := rand.Read(out[4:]); err != nil {
		panic("seal: crypto/rand failed: " + err.Error())
	}
	return k.aead.Seal(out, out[4:], plaintext, aad)
}

// Open decrypts a value made by Seal with any key of the ring.
func (kr *Keyring) Open(sealed, aad []byte) ([]byte, error) {
	if len(sealed) < 4 {
		return nil, ErrOpen
	}
	for _, k := range kr.keys {
		if [4]byte(sealed[:4]) != k.id {
			continue
		}
		ns := k.aead.NonceSize()
		if len(sealed) < 4+ns+k.aead.Overhead() {
			return nil, ErrOpen
		}
		pt, err := k.aead.Open(nil, sealed[4:4+ns], sealed[4+ns:], aad)
		if err != nil {
			return nil, ErrOpen
		}
		return pt, nil
	}
	return nil, ErrOpen
}

// Index returns the keyed hash (hex HMAC-SHA256 under the first key) of the
// parts, unambiguously joined. Use it to store things under codes, appids,
// openids or phone numbers without storing those values; unlike a plain
// SHA-256 it cannot be reversed by trying every phone number.
func (kr *Keyring) Index(parts ...string) string {
	return kr.indexWith(0, parts)
}

// Indexes returns the index under every key, first key first, so a lookup
// can find values indexed by instances that still seal with an older key.
func (kr *Keyring) Indexes(parts ...string) []string {
	out := make([]string, len(kr.keys))
	for i := range kr.keys {
		out[i] = kr.indexWith(i, parts)
	}
	return out
}

func (kr *Keyring) indexWith(i int, parts []string) string {
	k := &kr.keys[i]
	x := k.macs.Get().(*indexer)
	x.mac.Reset()
	x.msg = x.msg[:0]
	for _, p := range parts {
		// length-prefix each part so ("ab","c") and ("a","bc") differ
		x.msg = binary.BigEndian.AppendUint32(x.msg, uint32(len(p))) // #nosec G115 -- big-endian bytes of a length, truncation intended (the format is fixed: stored indexes depend on it)
		x.msg = append(x.msg, p...)
	}
	x.mac.Write(x.msg)
	x.sum = x.mac.Sum(x.sum[:0])
	x.hex = hex.AppendEncode(x.hex[:0], x.sum)
	out := string(x.hex)
	if cap(x.msg) <= 4<<10 {
		clear(x.msg) // the parts may be codes or phone numbers
		k.macs.Put(x)
	}
	return out
}
