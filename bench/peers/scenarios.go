package main

// Cold-burst and fault scenarios. Each uses a fresh instance (fresh appid,
// so a cold token cache) in its default configuration, and runs alone, so
// the emulator's global counters are exact for it.

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/wxphone/wxphone"
	"github.com/wxphone/wxphone/wxmock"
)

type outcome struct {
	OK      bool
	Text    string // "ok" or a sanitised error summary
	Leaks   []string
	Elapsed time.Duration
}

type faultResult struct {
	Outcome      outcome
	PhoneCalls   int64 // upstream getuserphonenumber requests during the call
	TokenFetches int64 // token-endpoint fetches during the call
	Canceled     int64 // requests the emulator saw abandoned during a latency
	Consumed     bool  // the emulator answered the code successfully (it is used up)
	Next         *outcome
	Err          string // setup failure
}

type coldResult struct {
	N            int
	OK           int
	Errors       int
	TokenFetches int64
	Wall         time.Duration
	FirstErr     string
	Err          string
}

type sdkScenarios struct {
	SDK     string
	Cold    coldResult
	Revoke  faultResult
	Busy    faultResult
	Slow    faultResult
	HTTP500 faultResult
}

type scenarioOpts struct {
	coldN    int
	deadline time.Duration // caller deadline in the slow scenario
	latency  time.Duration // injected latency, beyond the deadline
	logf     func(format string, args ...any)
}

var (
	tokenRe  = regexp.MustCompile(`86_[A-Za-z0-9_-]{20,}`)
	paramRe  = regexp.MustCompile(`(access_token|secret|appid|js_code)=[^&\s"]*`)
	spacesRe = regexp.MustCompile(`\s+`)
)

// summarise turns an exchange result into a short, secret-free string and
// notes which secrets the raw error text contained.
func (e *env) summarise(appid, code string, phone string, err error, elapsed time.Duration) outcome {
	o := outcome{Elapsed: elapsed}
	if err == nil {
		if expectedPhone(code, phone) {
			o.OK, o.Text = true, "ok"
		} else {
			o.Text = "wrong number"
		}
		return o
	}
	msg := err.Error()
	if strings.Contains(msg, secretFor(appid)) {
		o.Leaks = append(o.Leaks, "secret")
	}
	if tokenRe.MatchString(msg) {
		o.Leaks = append(o.Leaks, "token")
	}
	if strings.Contains(msg, code) {
		o.Leaks = append(o.Leaks, "code")
	}
	var kind string
	switch {
	case errors.Is(err, wxphone.ErrOutcomeUnknown):
		kind = "ErrOutcomeUnknown"
	case errors.Is(err, wxphone.ErrTokenInvalid):
		kind = "ErrTokenInvalid"
	case errors.Is(err, wxphone.ErrSystemBusy):
		kind = "ErrSystemBusy"
	case errors.Is(err, wxphone.ErrInvalidCode):
		kind = "ErrInvalidCode"
	case errors.Is(err, context.DeadlineExceeded):
		kind = "DeadlineExceeded"
	}
	msg = strings.ReplaceAll(msg, e.emu.URL, "<emu>")
	msg = strings.ReplaceAll(msg, e.emuHost, "<emu>")
	msg = strings.ReplaceAll(msg, secretFor(appid), "<secret>")
	msg = strings.ReplaceAll(msg, code, "<code>")
	msg = tokenRe.ReplaceAllString(msg, "<token>")
	msg = paramRe.ReplaceAllString(msg, "$1=…")
	msg = spacesRe.ReplaceAllString(msg, " ")
	if len(msg) > 90 {
		msg = msg[:87] + "…"
	}
	t := fmt.Sprintf("%T", err)
	if kind != "" && strings.HasPrefix(t, "*wxphone.") {
		// Our errors are typed; the class says it all.
		o.Text = t + " (errors.Is " + kind + ")"
		return o
	}
	if kind != "" {
		t += " (" + kind + ")"
	}
	o.Text = t + ": " + msg
	return o
}

func (e *env) call(in *instance, code string, deadline time.Duration) outcome {
	ctx := context.Background()
	if deadline > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, deadline)
		defer cancel()
	}
	t0 := time.Now()
	phone, err := in.exchange(ctx, code)
	return e.summarise(in.AppID, code, phone, err, time.Since(t0))
}

func (e *env) coldBurst(sdk string, n int) coldResult {
	res := coldResult{N: n}
	in, err := e.newInstance(sdk, modeDefault, "wxb-"+sdk+"-cold")
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer in.close()
	in.enter()
	defer in.leave()
	codes := newCodes(n)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		ready sync.WaitGroup
		gate  = make(chan struct{})
	)
	ready.Add(n)
	wg.Add(n)
	for i := range n {
		go func() {
			defer wg.Done()
			ready.Done()
			<-gate
			o := e.call(in, codes[i], 30*time.Second)
			mu.Lock()
			if o.OK {
				res.OK++
			} else {
				res.Errors++
				if res.FirstErr == "" {
					res.FirstErr = o.Text
				}
			}
			mu.Unlock()
		}()
	}
	ready.Wait()
	t0 := time.Now()
	close(gate)
	wg.Wait()
	res.Wall = time.Since(t0)
	st, err := e.emu.Stats()
	if err != nil {
		res.Err = err.Error()
		return res
	}
	res.TokenFetches = tokenFetches(st, in.AppID)
	return res
}

// fault runs one fault scenario: a warmed-up fresh instance, then inject,
// then one exchange.
func (e *env) fault(sdk, name string, o scenarioOpts, inject func(appid string) error, deadline time.Duration, settle time.Duration, next bool) faultResult {
	var res faultResult
	in, err := e.newInstance(sdk, modeDefault, "wxb-"+sdk+"-"+name)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer in.close()
	in.enter()
	defer in.leave()
	if w := e.call(in, newCode(), 10*time.Second); !w.OK {
		res.Err = "warm-up failed: " + w.Text
		return res
	}
	st0, err := e.emu.Stats()
	if err != nil {
		res.Err = err.Error()
		return res
	}
	if err := inject(in.AppID); err != nil {
		res.Err = err.Error()
		return res
	}
	t0 := time.Now()
	code := newCode()
	res.Outcome = e.call(in, code, deadline)
	if wait := settle - time.Since(t0); wait > 0 {
		time.Sleep(wait) // let a delayed request finish or be abandoned at the emulator
	}
	st1, err := e.emu.Stats()
	if err != nil {
		res.Err = err.Error()
		return res
	}
	res.PhoneCalls = st1.Endpoints.Phone.Calls - st0.Endpoints.Phone.Calls
	res.Canceled = st1.Endpoints.Phone.Canceled - st0.Endpoints.Phone.Canceled
	res.TokenFetches = tokenFetches(st1, in.AppID) - tokenFetches(st0, in.AppID)
	res.Consumed = st1.Codes[code].Answered > 0
	if next {
		n := e.call(in, newCode(), 10*time.Second)
		res.Next = &n
	}
	_ = e.emu.ClearFaults()
	return res
}

func (e *env) runScenarios(sdks []string, o scenarioOpts) []sdkScenarios {
	_ = e.emu.ResetStats()
	out := make([]sdkScenarios, 0, len(sdks))
	for _, sdk := range sdks {
		s := sdkScenarios{SDK: sdk}
		s.Cold = e.coldBurst(sdk, o.coldN)
		o.logf("%-12s cold burst N=%d: %d token fetches, %d ok, %d errors, %v", sdk, o.coldN, s.Cold.TokenFetches, s.Cold.OK, s.Cold.Errors, s.Cold.Wall.Round(time.Millisecond))
		s.Revoke = e.fault(sdk, "revoke", o, func(appid string) error {
			_, err := e.emu.RevokeTokens(appid)
			return err
		}, 10*time.Second, 0, true)
		o.logf("%-12s revoked token: %s", sdk, s.Revoke.Outcome.Text)
		s.Busy = e.fault(sdk, "busy", o, func(appid string) error {
			return e.emu.AddFault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, AppID: appid, Kind: wxmock.FaultErrcode, Errcode: -1, Count: 1})
		}, 10*time.Second, 0, false)
		o.logf("%-12s errcode -1 once: %s", sdk, s.Busy.Outcome.Text)
		s.Slow = e.fault(sdk, "slow", o, func(appid string) error {
			return e.emu.AddFault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, AppID: appid, Kind: wxmock.FaultLatency, LatencyMS: int(o.latency / time.Millisecond), Count: 1})
		}, o.deadline, o.latency+200*time.Millisecond, false)
		o.logf("%-12s slow upstream: %s after %v", sdk, s.Slow.Outcome.Text, s.Slow.Outcome.Elapsed.Round(time.Millisecond))
		s.HTTP500 = e.fault(sdk, "http500", o, func(appid string) error {
			return e.emu.AddFault(wxmock.Fault{Endpoint: wxmock.EndpointPhone, AppID: appid, Kind: wxmock.FaultHTTPStatus, Status: 500, Count: 1})
		}, 10*time.Second, 0, false)
		o.logf("%-12s HTTP 500 once: %s", sdk, s.HTTP500.Outcome.Text)
		out = append(out, s)
	}
	return out
}
