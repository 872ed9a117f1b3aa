package apisec

import (
	"net/http"
	"testing"
	"time"
)

// BenchmarkSeal is the client's cost of sealing one exchange: AES-256-GCM
// and an RSA-2048 PSS signature.
func BenchmarkSeal(b *testing.B) {
	pr := newPair(b)
	params := []byte(`{"code":"e31968a7f94cc5ee25fafc2aef2773f0bb8c3937b22520eb8ee345274d00c144"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pr.c.Seal(testURL, params); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpen is the client's cost of opening one answer: an RSA-2048
// PSS verification and AES-256-GCM.
func BenchmarkOpen(b *testing.B) {
	pr := newPair(b)
	pr.clientAt = time.Now()
	s, _ := pr.c.Seal(testURL, []byte(`{"code":"x"}`))
	body, h, err := pr.p.SealResponse(testURL, []byte(successAnswer), time.Now())
	if err != nil {
		b.Fatal(err)
	}
	hh := http.Header(h)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pr.c.Open(s, hh, body); err != nil {
			b.Fatal(err)
		}
	}
}
