package service

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/internal/logtest"
	"github.com/wxphone/wxphone/internal/replaytest"
	"github.com/wxphone/wxphone/wxmock"
)

// renderAll prints v every way a program might: fmt verbs, slog's text
// and JSON handlers at DEBUG, encoding/json and encoding/xml.
func renderAll(v any) []string {
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		out = append(out, fmt.Sprintf(verb, v), fmt.Sprintf(verb, []any{v}), fmt.Sprintf(verb, struct{ V any }{v}))
	}
	var buf bytes.Buffer
	opts := &slog.HandlerOptions{Level: slog.LevelDebug}
	for _, h := range []slog.Handler{slog.NewTextHandler(&buf, opts), slog.NewJSONHandler(&buf, opts)} {
		l := slog.New(h)
		l.Debug("v", "v", v, slog.Any("any", v), slog.Group("g", "v", v))
		l.With("with", v).Debug("with")
	}
	out = append(out, buf.String())
	if b, err := json.Marshal(map[string]any{"v": v}); err == nil {
		out = append(out, string(b))
	}
	if b, err := xml.Marshal(struct {
		XMLName xml.Name `xml:"w"`
		V       any
	}{V: v}); err == nil {
		out = append(out, string(b))
	}
	return out
}

// TestServiceTypesAndErrorsLeakNothing drives the service's failure paths
// with a DEBUG logger and renders every request, result, status and error
// every way: no code, full phone number, access token or AppSecret shows.
func TestServiceTypesAndErrorsLeakNothing(t *testing.T) {
	var logs logtest.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFixture(t, []string{appA}, Config{Logger: logger, ExchangeTimeout: 300 * time.Millisecond})
	down := newFixture(t, []string{appA}, Config{Logger: logger, Replay: replaytest.Down{QuoteKey: true}})
	ctx := context.Background()
	hidden := []string{secretA}
	var values []any
	keep := func(res *Result, err error, req Request) {
		values = append(values, req, &req)
		if res != nil {
			values = append(values, res, *res)
		}
		for e := err; e != nil; e = errors.Unwrap(e) {
			values = append(values, e)
		}
	}
	mint := func(fx *fixture, phone string) string {
		code := fx.mint(t, appA, phone)
		hidden = append(hidden, code, phone)
		return code
	}

	// Success, then a replay, then the same code for another caller.
	req := Request{Code: wxphone.Secret(mint(f, "13900001111")), Caller: "caller-1", OpenID: "oUser1"}
	res, err := f.svc.Exchange(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	keep(res, err, req)
	res, err = f.svc.Exchange(ctx, req)
	keep(res, err, req)
	other := req
	other.Caller = "caller-2"
	_, err = f.svc.Exchange(ctx, other)
	if !errors.Is(err, ErrForeignReplay) {
		t.Errorf("foreign replay: %v", err)
	}
	keep(nil, err, other)
	// Bad requests.
	for _, r := range []Request{
		{AppID: "wxnotserved000001", Code: wxphone.Secret(mint(f, "13900001112"))},
		{Code: "code with spaces " + secretA},
		{Code: wxphone.Secret(mint(f, "13900001113")), OpenID: "o\n" + strings.Repeat("x", 200)},
	} {
		_, err := f.svc.Exchange(ctx, r)
		keep(nil, err, r)
	}
	// WeChat's failures: a final 40029, lost answers, a timeout.
	for _, flt := range []wxmock.Fault{
		{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: 40029, Count: 1},
		{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultDropAfterConsume, Count: 1},
		{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultErrcode, Errcode: -1, Consume: true, Count: 1},
		{Endpoint: wxmock.EndpointPhone, Kind: wxmock.FaultLatency, LatencyMS: 2000, Count: 1},
	} {
		f.fault(t, flt)
		r := Request{Code: wxphone.Secret(mint(f, "13900001114")), Caller: "caller-1"}
		res, err := f.svc.Exchange(ctx, r)
		keep(res, err, r)
		// The replayed outcome.
		res, err = f.svc.Exchange(ctx, r)
		keep(res, err, r)
	}
	// The replay store is down.
	r := Request{Code: wxphone.Secret(mint(down, "13900001115")), Caller: "caller-1"}
	_, err = down.svc.Exchange(ctx, r)
	if !errors.Is(err, ErrStore) {
		t.Errorf("store down: %v", err)
	}
	keep(nil, err, r)
	// Token state and the token endpoints' errors.
	for _, st := range f.svc.Status() {
		values = append(values, st)
	}
	const rejected = "86_rejected_token_value"
	hidden = append(hidden, rejected)
	for _, app := range []string{"wxnotserved000001", appA} {
		tok, err := f.svc.InvalidateToken(ctx, app, rejected)
		keep(nil, err, Request{})
		values = append(values, tok, &tok)
	}
	// After Close.
	_ = f.svc.Close(ctx)
	r = Request{Code: wxphone.Secret(mint(f, "13900001116"))}
	_, err = f.svc.Exchange(ctx, r)
	keep(nil, err, r)
	hidden = append(hidden, f.mock.ValidTokens("")...)
	hidden = append(hidden, down.mock.ValidTokens("")...)

	text := logs.String()
	if !strings.Contains(text, "replay store") {
		t.Errorf("the store failure was not logged: %s", text)
	}
	for _, v := range values {
		for _, r := range renderAll(v) {
			for _, h := range hidden {
				if strings.Contains(r, h) {
					t.Errorf("a rendering of a %T shows %.6s…: %s", v, h, r)
				}
			}
		}
	}
	for _, h := range hidden {
		if strings.Contains(text, h) {
			t.Errorf("the logs show %.6s…", h)
		}
	}
}
