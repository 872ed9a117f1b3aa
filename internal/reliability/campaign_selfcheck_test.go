package reliability

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wxphone/wxphone/wxmock"
)

// The checker self-test: synthetic histories that break each invariant
// (and near misses that do not), so that the campaign's checker cannot
// pass silently. It is not named TestCampaign… so that
// `go test -run TestCampaign` runs the campaign alone.

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func testParams() campaignParams {
	return campaignParams{
		requestTimeout: 3 * time.Second, exchangeTimeout: 12 * time.Second, slack: 2 * time.Second,
		redisWindow: 3 * time.Second, killGrace: 500 * time.Millisecond, goroutineSlack: 10,
	}
}

// synth builds one code's history.
type synth struct {
	h    *history
	code string
	seq  int64
}

func newSynth(kind, phone string) *synth {
	h := newHistory(42, testParams())
	code := strings.Repeat("c0ffee", 10) + "abcd"
	h.addCode(&codeRec{code: code, kind: kind, phone: phone, minted: t0})
	return &synth{h: h, code: code}
}

// call adds an emulator call from replica r, received at ms and done at
// ms+dur; mod fills in what WeChat did.
func (s *synth) call(r, ms, dur int, mod func(*wxmock.Call)) {
	s.seq++
	c := wxmock.Call{Seq: s.seq, Endpoint: "phone", Code: s.code, Proto: "HTTP/1.1", Received: at(ms), Done: at(ms + dur),
		Status: 200, Result: wxmock.CallDelivered, Delivered: true}
	mod(&c)
	s.h.calls[s.code] = append(s.h.calls[s.code], call{Call: c, replica: r})
}

func (s *synth) obs(client, attempt, r, sent, done, status int, errCode, phone string) {
	s.h.obs[s.code] = append(s.h.obs[s.code], obs{code: s.code, client: client, attempt: attempt, replica: r,
		sent: at(sent), done: at(done), status: status, errCode: errCode, phone: phone})
}

func (s *synth) transportErr(client, attempt, r, sent, done int) {
	s.h.obs[s.code] = append(s.h.obs[s.code], obs{code: s.code, client: client, attempt: attempt, replica: r,
		sent: at(sent), done: at(done), err: "connection reset by peer"})
}

// degraded records that replica r was on its local fallback from start to
// end (ms).
func (s *synth) degraded(r, start, end int) {
	s.h.degraded[r] = append(s.h.degraded[r], [2]time.Time{at(start), at(end)})
}

func (s *synth) fault(class, kind string, r, start, end int) {
	f := faultEvent{class: class, kind: kind, replica: r, start: at(start)}
	if end > 0 {
		f.end = at(end)
	}
	s.h.faults = append(s.h.faults, f)
}

var (
	answered = func(c *wxmock.Call) { c.Processed, c.Consumed, c.Answered = true, true, true }
	refused  = func(c *wxmock.Call) { c.Processed, c.Errcode = true, 40029 }
	busy     = func(c *wxmock.Call) { c.Fault, c.Errcode = "errcode", -1 }
	usedBusy = func(c *wxmock.Call) { c.Fault, c.Processed, c.Consumed, c.Errcode = "errcode", true, true, -1 }
	limited  = func(c *wxmock.Call) { c.Fault, c.Errcode = "errcode", 45011 }
	gone     = func(c *wxmock.Call) {
		c.Processed, c.Consumed, c.Answered, c.Result, c.Delivered = true, true, true, wxmock.CallGone, false
	}
)

const number = "13900000001"

func TestCheckerFindsEveryViolation(t *testing.T) {
	tests := []struct {
		name  string
		build func() *synth
		want  []string // invariants reported, in order
		// exempt and excused counts expected
		exempt, excused int
	}{
		{"clean: one call, the number delivered", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 20, answered)
			s.obs(1, 1, 0, 0, 40, 200, "", number)
			return s
		}, nil, 0, 0},
		{"clean: -1, then the number on a retry", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 20, busy)
			s.call(0, 40, 20, busy)
			s.obs(1, 1, 0, 0, 70, 502, "wechat_busy", "")
			s.call(1, 300, 20, answered)
			s.obs(1, 2, 1, 290, 330, 200, "", number)
			return s
		}, nil, 0, 0},
		{"I1: a second use with Redis reachable", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 20, answered)
			s.obs(1, 1, 0, 0, 40, 200, "", number)
			s.call(1, 500, 20, refused)
			s.obs(2, 1, 1, 490, 530, 502, "outcome_unknown", "")
			return s
		}, []string{"I1"}, 0, 0},
		{"I1 excused: a second use while Redis was paused", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 20, answered)
			s.obs(1, 1, 0, 0, 40, 200, "", number)
			s.fault(faultRedis, "redis-pause", -1, 400, 1200)
			s.degraded(1, 480, 2300)
			s.call(1, 500, 20, refused)
			s.obs(2, 1, 1, 490, 530, 502, "outcome_unknown", "")
			return s
		}, nil, 0, 1},
		{"I1 excused: the first sender was on its local fallback, the second reached Redis", func() *synth {
			s := newSynth(codeDup, number)
			s.fault(faultRedis, "redis-stall", -1, 0, 400)
			s.degraded(0, 300, 1400)
			s.call(0, 500, 2, answered)
			s.call(1, 501, 2, refused)
			s.obs(1, 1, 0, 490, 510, 200, "", number)
			s.obs(101, 1, 1, 490, 510, 502, "outcome_unknown", "")
			return s
		}, nil, 0, 1},
		{"I1 excused: the resend after -1 of an exchange claimed during an outage", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 3000, answered)
			s.obs(1, 1, 0, 0, 3100, 200, "", number)
			s.fault(faultRedis, "redis-stall", -1, 400, 1200)
			s.degraded(1, 480, 1300)
			s.call(1, 500, 4000, busy)
			s.call(1, 4600, 20, refused) // Redis is back by now
			return s
		}, nil, 0, 1},
		{"I1 excused: the resend after a token error of an exchange claimed during an outage", func() *synth {
			// seed 1388595664866, 10 minutes: the first call's answer (40001,
			// the token revoked) took 11 s; the resend with a fresh token
			// came long after the outage, within the same exchange.
			s := newSynth(codeGarbage, "")
			s.call(2, 1, 12000, func(c *wxmock.Call) {
				c.Processed, c.Errcode, c.Result, c.Delivered = true, 40029, wxmock.CallGone, false
			})
			s.fault(faultRedis, "redis-sigstop", -1, 6000, 7500)
			s.degraded(1, 6100, 7600)
			s.call(1, 6700, 11280, func(c *wxmock.Call) { c.Processed, c.Errcode = true, 40001 })
			s.call(1, 17999, 1, refused)
			s.obs(1, 1, 1, 19300, 19320, 502, "outcome_unknown", "")
			return s
		}, nil, 0, 1},
		{"I1: the resend after a token error of an exchange claimed with Redis healthy", func() *synth {
			s := newSynth(codeGarbage, "")
			s.call(2, 1, 12000, func(c *wxmock.Call) {
				c.Processed, c.Errcode, c.Result, c.Delivered = true, 40029, wxmock.CallGone, false
			})
			s.call(1, 6700, 11280, func(c *wxmock.Call) { c.Processed, c.Errcode = true, 40001 })
			s.call(1, 17999, 1, refused)
			s.obs(1, 1, 1, 19300, 19320, 502, "outcome_unknown", "")
			return s
		}, []string{"I1"}, 0, 0},
		{"I1: a resend after -1 of an exchange claimed with Redis healthy", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 3000, answered)
			s.obs(1, 1, 0, 0, 3100, 200, "", number)
			s.call(1, 500, 4000, busy)
			s.call(1, 4600, 20, refused)
			return s
		}, []string{"I1"}, 0, 0},
		{"I1: Redis paused, but neither replica was on its local fallback", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 20, answered)
			s.obs(1, 1, 0, 0, 40, 200, "", number)
			s.fault(faultRedis, "redis-pause", -1, 400, 1200)
			s.degraded(2, 480, 2300)
			s.call(1, 500, 20, refused)
			s.obs(2, 1, 1, 490, 530, 502, "outcome_unknown", "")
			return s
		}, []string{"I1"}, 0, 0},
		{"I1: the replica on its local fallback without a Redis fault", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 20, answered)
			s.obs(1, 1, 0, 0, 40, 200, "", number)
			s.degraded(1, 480, 2300)
			s.call(1, 500, 20, refused)
			s.obs(2, 1, 1, 490, 530, 502, "outcome_unknown", "")
			return s
		}, []string{"I1"}, 0, 0},
		{"I1 excused: a second use after Redis restarted empty", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 20, answered)
			s.obs(1, 1, 0, 0, 40, 200, "", number)
			s.fault(faultWipe, "redis-restart-empty", -1, 100, 0)
			s.call(1, 20000, 20, refused)
			s.obs(2, 1, 1, 19990, 20030, 502, "outcome_unknown", "")
			return s
		}, nil, 0, 1},
		{"I1: a Redis fault long over excuses nothing", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 20, answered)
			s.obs(1, 1, 0, 0, 40, 200, "", number)
			s.fault(faultRedis, "redis-pause", -1, 100, 200)
			s.call(1, 20000, 20, refused)
			s.obs(2, 1, 1, 19990, 20030, 502, "outcome_unknown", "")
			return s
		}, []string{"I1"}, 0, 0},
		{"I1: a slow Redis within the timeouts excuses nothing", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 20, answered)
			s.obs(1, 1, 0, 0, 40, 200, "", number)
			s.fault(faultRedisLow, "redis-slow", -1, 400, 1200)
			s.call(1, 500, 20, refused)
			s.obs(2, 1, 1, 490, 530, 502, "outcome_unknown", "")
			return s
		}, []string{"I1"}, 0, 0},
		{"I1 and I3: invalid_code after a resend during a Redis outage", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 20, answered)
			s.obs(1, 1, 0, 0, 40, 200, "", number)
			s.fault(faultRedis, "redis-cut", -1, 400, 1200)
			s.degraded(1, 450, 2300)
			s.call(1, 500, 20, refused)
			s.obs(2, 1, 1, 490, 530, 422, "invalid_code", "")
			return s
		}, []string{"I1", "I3"}, 0, 1},
		{"I2: the number delivered, the client told outcome_unknown", func() *synth {
			s := newSynth(codeValid, number)
			s.obs(1, 1, 0, 0, 3000, 504, "upstream_timeout", "")
			s.call(0, 10, 11000, answered)
			s.obs(1, 2, 1, 3100, 6000, 504, "upstream_timeout", "")
			s.obs(1, 3, 2, 6100, 9000, 504, "upstream_timeout", "")
			s.obs(1, 4, 0, 12000, 12100, 502, "outcome_unknown", "")
			return s
		}, []string{"I2"}, 0, 0},
		{"I2 exempt: the replica was killed while the number came back", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 300, answered)
			s.fault(faultKill, "replica-sigkill", 0, 320, 0)
			s.transportErr(1, 1, 0, 0, 320)
			s.obs(1, 2, 1, 400, 3400, 504, "upstream_timeout", "")
			s.obs(1, 3, 2, 17500, 17600, 502, "outcome_unknown", "")
			return s
		}, nil, 1, 0},
		{"I2: a kill long after the answer exempts nothing", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 300, answered)
			s.fault(faultKill, "replica-sigkill", 0, 5000, 0)
			s.obs(1, 1, 0, 0, 3000, 504, "upstream_timeout", "")
			s.obs(1, 2, 1, 5100, 5200, 502, "outcome_unknown", "")
			return s
		}, []string{"I2"}, 0, 0},
		{"I2 exempt: the replica and Redis's data both lost", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 300, answered)
			s.obs(1, 1, 0, 0, 3000, 504, "upstream_timeout", "")
			s.fault(faultTerm, "replica-sigterm", 0, 3500, 0)
			s.fault(faultWipe, "redis-restart-empty", -1, 3600, 0)
			s.obs(1, 2, 1, 5100, 5200, 502, "outcome_unknown", "")
			return s
		}, nil, 1, 0},
		{"I2: an answer not delivered is not a loss", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 12000, func(c *wxmock.Call) { gone(c); c.LatencyMS = 13000 })
			s.obs(1, 1, 0, 0, 3000, 504, "upstream_timeout", "")
			s.obs(1, 2, 0, 12100, 12200, 502, "outcome_unknown", "")
			return s
		}, nil, 0, 0},
		{"I2: the replica hung up before its exchange timeout, WeChat's number ready in time", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 10000, func(c *wxmock.Call) { gone(c); c.LatencyMS = 11000 })
			s.obs(1, 1, 0, 0, 3000, 504, "upstream_timeout", "")
			s.obs(1, 2, 1, 10100, 10200, 502, "outcome_unknown", "")
			return s
		}, []string{"I2"}, 0, 0},
		{"I2 holds: WeChat slower than the exchange timeout", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 12000, func(c *wxmock.Call) { gone(c); c.LatencyMS = 14000 })
			s.obs(1, 1, 0, 0, 3000, 504, "upstream_timeout", "")
			s.obs(1, 2, 1, 12100, 12200, 502, "outcome_unknown", "")
			return s
		}, nil, 0, 0},
		{"I2 holds: the replica was killed while WeChat was slow", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 1000, func(c *wxmock.Call) { gone(c); c.LatencyMS = 5000 })
			s.fault(faultKill, "replica-sigkill", 0, 1000, 0)
			s.transportErr(1, 1, 0, 0, 1000)
			s.obs(1, 2, 1, 1100, 4100, 504, "upstream_timeout", "")
			s.obs(1, 3, 2, 17100, 17200, 502, "outcome_unknown", "")
			return s
		}, nil, 0, 0},
		{"I2: a 200 with another number", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 20, answered)
			s.obs(1, 1, 0, 0, 40, 200, "", "13900000002")
			return s
		}, []string{"I2", "I2"}, 0, 0},
		{"I2: a 200 for a code WeChat never issued", func() *synth {
			s := newSynth(codeGarbage, "")
			s.call(0, 10, 20, refused)
			s.obs(1, 1, 0, 0, 40, 200, "", number)
			return s
		}, []string{"I2"}, 0, 0},
		{"I3: invalid_code after -1 used the code (the resend after -1 is allowed)", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 20, usedBusy)
			s.obs(1, 1, 0, 0, 40, 502, "wechat_busy", "")
			s.call(1, 500, 20, refused)
			s.obs(1, 2, 1, 490, 530, 422, "invalid_code", "")
			return s
		}, []string{"I3"}, 0, 0},
		{"I1: a third send after -1 and the resend", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 20, usedBusy)
			s.call(0, 100, 20, refused)
			s.obs(1, 1, 0, 0, 130, 502, "outcome_unknown", "")
			s.call(1, 500, 20, refused)
			s.obs(2, 1, 1, 490, 530, 502, "outcome_unknown", "")
			return s
		}, []string{"I1"}, 0, 0},
		{"I3: invalid_code for a code that never reached WeChat", func() *synth {
			s := newSynth(codeValid, number)
			s.obs(1, 1, 0, 0, 40, 422, "invalid_code", "")
			return s
		}, []string{"I3"}, 0, 0},
		{"I3 holds: a garbage code refused with 40029", func() *synth {
			s := newSynth(codeGarbage, "")
			s.call(0, 10, 20, refused)
			s.obs(1, 1, 0, 0, 40, 422, "invalid_code", "")
			s.obs(1, 2, 1, 100, 140, 422, "invalid_code", "")
			return s
		}, nil, 0, 0},
		{"I3 holds: a code used by someone else first", func() *synth {
			s := newSynth(codePreUsed, number)
			s.call(-1, 0, 5, answered)
			s.call(0, 10, 20, refused)
			s.obs(1, 1, 0, 0, 40, 422, "invalid_code", "")
			return s
		}, nil, 0, 0},
		{"I4: outcome_unknown for a code that never reached WeChat", func() *synth {
			s := newSynth(codeValid, number)
			s.obs(1, 1, 0, 0, 40, 502, "outcome_unknown", "")
			return s
		}, []string{"I4"}, 0, 0},
		{"I4: outcome_unknown after 45011 only", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 20, limited)
			s.obs(1, 1, 0, 0, 40, 502, "outcome_unknown", "")
			return s
		}, []string{"I4"}, 0, 0},
		{"I4 holds: outcome_unknown after -1 (WeChat may have used it)", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 20, busy)
			s.obs(1, 1, 0, 0, 3000, 504, "outcome_unknown", "")
			return s
		}, nil, 0, 0},
		{"I4 holds: outcome_unknown when a token error's answer never reached the replica (its exchange timed out)", func() *synth {
			s := newSynth(codeValid, number)
			s.call(2, 10, 12000, func(c *wxmock.Call) {
				c.Processed, c.Errcode, c.Result, c.Delivered = true, 40001, wxmock.CallGone, false
			})
			s.obs(1, 1, 2, 0, 3000, 504, "upstream_timeout", "")
			s.obs(1, 2, 2, 9000, 12010, 502, "outcome_unknown", "")
			return s
		}, nil, 0, 0},
		{"I4: outcome_unknown after a token error the replica received", func() *synth {
			s := newSynth(codeValid, number)
			s.call(2, 10, 20, func(c *wxmock.Call) { c.Processed, c.Errcode = true, 40001 })
			s.obs(1, 1, 2, 0, 40, 502, "outcome_unknown", "")
			return s
		}, []string{"I4"}, 0, 0},
		{"I4 holds: outcome_unknown after the claiming replica was killed", func() *synth {
			s := newSynth(codeValid, number)
			s.transportErr(1, 1, 0, 0, 100)
			s.fault(faultKill, "replica-sigkill", 0, 90, 0)
			s.obs(1, 2, 1, 200, 3200, 504, "upstream_timeout", "")
			s.obs(1, 3, 1, 17200, 17300, 502, "outcome_unknown", "")
			return s
		}, nil, 0, 0},
		{"I5: an answer past the deadline", func() *synth {
			s := newSynth(codeValid, number)
			s.call(0, 10, 20, answered)
			s.obs(1, 1, 0, 0, 5100, 200, "", number)
			return s
		}, []string{"I5"}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.build()
			res := s.h.check()
			var got []string
			for _, v := range res.violations {
				got = append(got, v.inv)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("violations %v, want %v:\n%s", got, tt.want, s.h.report(res))
			}
			if len(res.exempt) != tt.exempt || res.excusedResends != tt.excused {
				t.Fatalf("exempt %d, excused resends %d; want %d, %d", len(res.exempt), res.excusedResends, tt.exempt, tt.excused)
			}
			if len(res.violations) > 0 {
				rep := s.h.report(res)
				for _, want := range []string{"VIOLATION " + tt.want[0], shortCode(s.code), "seed 42", "client 1 attempt 1 → replica"} {
					if !strings.Contains(rep, want) {
						t.Errorf("report lacks %q:\n%s", want, rep)
					}
				}
			}
		})
	}
}

// Goroutines that do not return to the baseline are an I5 violation.
func TestCheckerGoroutines(t *testing.T) {
	h := newHistory(7, testParams())
	h.gor = []goroutineCheck{{replica: 0, baseline: 20, after: 29}, {replica: 1, baseline: 20, after: 31}, {replica: 2, err: "connection refused"}}
	res := h.check()
	if len(res.violations) != 2 || res.violations[0].inv != "I5" || !strings.Contains(res.violations[0].detail, "replica 1: 31 goroutines") ||
		!strings.Contains(res.violations[1].detail, "replica 2") {
		t.Fatalf("violations %+v", res.violations)
	}
	if rep := h.report(res); !strings.Contains(rep, "seed 7") {
		t.Fatalf("report %q", rep)
	}
}

// The timeline merges client attempts, WeChat's calls and the faults
// around them, in time order.
func TestCheckerTimeline(t *testing.T) {
	s := newSynth(codeValid, number)
	s.obs(1, 1, 0, 0, 3000, 504, "upstream_timeout", "")
	s.call(0, 10, 11000, answered)
	s.fault(faultEmulator, "latency-10s", -1, -5, 0)
	s.obs(1, 2, 1, 13100, 13200, 502, "outcome_unknown", "")
	tl := s.h.timeline(s.code)
	var order []int
	for _, want := range []string{"fault emulator: latency-10s", "client 1 attempt 1 → replica 0", "WeChat ← replica 0: call #1 received",
		"client 1 attempt 1 ← replica 0: 504 upstream_timeout", "WeChat → replica 0: call #1 HTTP/1.1 consumed answered a number, delivered",
		"client 1 attempt 2 ← replica 1: 502 outcome_unknown"} {
		i := strings.Index(tl, want)
		if i < 0 {
			t.Fatalf("timeline lacks %q:\n%s", want, tl)
		}
		order = append(order, i)
	}
	if !slices.IsSorted(order) {
		t.Fatalf("timeline out of order:\n%s", tl)
	}
	if strings.Contains(tl, number) {
		t.Fatalf("timeline shows a full phone number:\n%s", tl)
	}
	_ = fmt.Sprint(http.StatusOK)
}

// The replicas' logs tell the checker when each replay store was on its
// local fallback, at the times the lines were logged.
func TestRingLogWindows(t *testing.T) {
	l := newRingLog(3)
	lines := []string{
		`{"time":"2026-01-02T03:04:05.100Z","level":"INFO","msg":"request","status":200}`,
		`{"time":"2026-01-02T03:04:05.200Z","level":"WARN","msg":"Redis unavailable: serving from the local fallback","component":"ratelimit"}`,
		`{"time":"2026-01-02T03:04:05.300Z","level":"WARN","msg":"Redis unavailable: serving from the local fallback","component":"replay"}`,
		`{"time":"2026-01-02T03:04:05.400Z","level":"WARN","msg":"Redis unavailable: serving from the local fallback","component":"replay"}`,
		`{"time":"2026-01-02T03:04:06.500Z","level":"INFO","msg":"Redis available again","component":"replay"}`,
		`{"time":"2026-01-02T03:04:07.000Z","level":"WARN","msg":"Redis unavailable: serving from the local fallback","component":"replay"}`,
	}
	// Written in uneven pieces, as a pipe delivers them.
	all := strings.Join(lines, "\n") + "\n"
	for len(all) > 0 {
		n := min(len(all), 37)
		if _, err := l.Write([]byte(all[:n])); err != nil {
			t.Fatal(err)
		}
		all = all[n:]
	}
	l.mu.Lock()
	l.closeWindow(t0.Add(3 * time.Second)) // the process was stopped
	l.mu.Unlock()
	w := l.degradedWindows()
	want := [][2]time.Time{{t0.Add(300 * time.Millisecond), t0.Add(1500 * time.Millisecond)}, {t0.Add(2 * time.Second), t0.Add(3 * time.Second)}}
	if len(w) != 2 || !w[0][0].Equal(want[0][0]) || !w[0][1].Equal(want[0][1]) || !w[1][0].Equal(want[1][0]) || !w[1][1].Equal(want[1][1]) {
		t.Fatalf("windows %v, want %v", w, want)
	}
	if tail := l.tail(10); strings.Contains(tail, `"level":"INFO"`) || strings.Count(tail, "\n") != 2 {
		t.Fatalf("kept lines:\n%s", tail)
	}
}
