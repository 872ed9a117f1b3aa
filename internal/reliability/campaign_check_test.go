package reliability

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/wxphone/wxphone/wxmock"
)

// The fault campaign's history and its checker. The checker is a pure
// function of the history: what every client attempt saw (obs), what the
// emulator did with every call (wxmock's call log), and when each fault was
// active. campaign_test.go records a history; the checker self-test feeds
// it synthetic ones.

// Code kinds in a campaign.
const (
	codeValid   = "valid"   // minted, sent once (with retries)
	codeDup     = "dup"     // minted, sent by two clients at once
	codeGarbage = "garbage" // well-formed, never minted: WeChat says 40029
	codePreUsed = "preused" // minted and used at WeChat by someone else first
)

// codeRec is one code the clients sent.
type codeRec struct {
	code   string
	kind   string
	phone  string // the number WeChat holds for it ("" for garbage)
	minted time.Time
	gaveUp bool // a client ran out of budget without a final answer
}

// obs is one client attempt: a request to a replica and what came back.
type obs struct {
	code     string
	client   int
	attempt  int
	replica  int
	sent     time.Time
	done     time.Time
	status   int
	errCode  string // error.code of an error answer
	errno    int    // error.errcode (WeChat's) of an error answer
	phone    string // phoneNumber of a 200
	replayed bool
	err      string // transport error ("" when an answer came)
	// retryAfter is the Retry-After header of a 429 or 503.
	retryAfter time.Duration
}

// final reports whether a client stops retrying after o: a 200, a 4xx
// other than 429 and 408, or outcome_unknown.
func (o obs) final() bool {
	switch {
	case o.err != "":
		return false
	case o.status == http.StatusOK:
		return true
	case o.errCode == "outcome_unknown":
		return true
	case o.status == http.StatusTooManyRequests, o.status == http.StatusRequestTimeout:
		return false
	case o.status >= 400 && o.status < 500:
		return true
	}
	return false
}

func (o obs) String() string {
	switch {
	case o.err != "":
		return "transport error: " + o.err
	case o.status == http.StatusOK:
		s := "200 " + maskNumber(o.phone)
		if o.replayed {
			s += " (replayed)"
		}
		return s
	}
	s := fmt.Sprintf("%d %s", o.status, o.errCode)
	if o.errno != 0 {
		s += fmt.Sprintf(" (errcode %d)", o.errno)
	}
	return s
}

func maskNumber(p string) string {
	if len(p) <= 4 {
		return p
	}
	return strings.Repeat("*", len(p)-4) + p[len(p)-4:]
}

// call is one emulator call with the replica whose listener it came in on
// (-1: the campaign itself, pre-using a code).
type call struct {
	wxmock.Call
	replica int
}

// use reports whether, after this call, the code may have been used as far
// as its sender can tell, so that it must not be sent again: anything but
// an answer of -1 (without consume), a token error or 45011. WeChat's
// truth (Consumed) counts first.
func (c call) use() bool {
	if c.Consumed {
		return true
	}
	if c.Result == wxmock.CallResetBeforeRead || c.Status != http.StatusOK {
		return true
	}
	if c.Result == wxmock.CallDropped || c.Result == wxmock.CallResetAfterConsume {
		return true
	}
	switch c.Errcode {
	case -1, 40001, 40014, 42001, 41001, 45011:
		return false
	}
	return true
}

// exchangeStart returns the call that began the exchange c belongs to,
// following the same replica's calls back while each was a resend the
// library makes within one exchange: the one jittered resend after -1
// (within a second of the -1), and the resend with a fresh token after a
// token error (within 3 s: a token fetch fits; seed 1388595664866, 10
// minutes: the 40001 took 11 s to arrive and the resend followed it at
// once, long after the outage in which the exchange was claimed).
func exchangeStart(calls []call, c call) call {
	start := c
	for {
		var prev *call
		for i := len(calls) - 1; i >= 0; i-- {
			pc := calls[i]
			if pc.Seq != start.Seq && pc.replica == start.replica && pc.Received.Before(start.Received) {
				prev = &calls[i]
				break
			}
		}
		if prev == nil || prev.Status != http.StatusOK || !prev.Delivered {
			return start
		}
		gap := start.Received.Sub(prev.Done)
		switch prev.Errcode {
		case -1:
			if gap >= time.Second {
				return start
			}
		case 40001, 40014, 42001:
			if gap >= 3*time.Second {
				return start
			}
		default:
			return start
		}
		start = *prev
	}
}

// ambiguous reports whether the call left its sender unable to know if the
// code was used: a use, a -1 (WeChat also says -1 after using a code), or
// an answer that never reached it (the code reached WeChat, and only
// WeChat knows what it did with it; seed 1388595664866: a 40001 answered
// after the replica's exchange timeout).
func (c call) ambiguous() bool {
	return c.use() || c.Errcode == -1 || !c.Delivered
}

func (c call) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "call #%d %s", c.Seq, c.Proto)
	if c.Fault != "" {
		fmt.Fprintf(&b, " fault=%s", c.Fault)
	}
	if c.LatencyMS > 0 {
		fmt.Fprintf(&b, " latency=%dms", c.LatencyMS)
	}
	if c.Consumed {
		b.WriteString(" consumed")
	}
	switch {
	case c.Answered:
		b.WriteString(" answered a number")
	case c.Status != 0 && c.Status != http.StatusOK:
		fmt.Fprintf(&b, " HTTP %d", c.Status)
	case c.Status == http.StatusOK:
		fmt.Fprintf(&b, " errcode %d", c.Errcode)
	}
	fmt.Fprintf(&b, ", %s", c.Result)
	if c.H2Error != "" {
		fmt.Fprintf(&b, " (%s)", c.H2Error)
	}
	return b.String()
}

// Fault classes in the history.
const (
	faultEmulator = "emulator"
	faultRedis    = "redis"   // Redis unreachable (pause, cut, reset, stall, kill)
	faultRedisLow = "redis-"  // Redis slower but within the timeouts: no excuse
	faultWipe     = "wipe"    // Redis restarted empty (at start: the data is gone)
	faultKill     = "kill"    // a replica SIGKILLed (at start)
	faultTerm     = "term"    // a replica SIGTERMed (at start)
	faultReplica  = "replica" // a replica down (start..end), from kill or term to restart
)

// faultEvent is one injected fault.
type faultEvent struct {
	class   string
	kind    string // e.g. "latency-beyond", "redis-pause", "replica-sigkill"
	detail  string
	replica int // for replica faults
	start   time.Time
	end     time.Time // zero for instantaneous faults
}

func (f faultEvent) String() string {
	s := f.kind
	if f.detail != "" {
		s += " " + f.detail
	}
	return s
}

// goroutineCheck is one replica's goroutine count, at the baseline and
// after the campaign.
type goroutineCheck struct {
	replica         int
	baseline, after int
	err             string
}

// campaignParams are the timeouts the checker reasons with.
type campaignParams struct {
	requestTimeout  time.Duration // WXPHONE_REQUEST_TIMEOUT
	exchangeTimeout time.Duration // WXPHONE_EXCHANGE_TIMEOUT
	slack           time.Duration // allowed past the request deadline (I5)
	redisWindow     time.Duration // a Redis fault still counts this long after it ended
	killGrace       time.Duration // a kill this soon after an answer may have beaten its recording
	goroutineSlack  int           // allowed above the baseline (I5)
}

// history is everything a campaign observed.
type history struct {
	seed   uint64
	params campaignParams
	codes  map[string]*codeRec
	order  []string
	obs    map[string][]obs
	calls  map[string][]call
	faults []faultEvent
	gor    []goroutineCheck
	// degraded holds, per replica, when its replay store was on its local
	// fallback (it could not reach Redis), from its own log.
	degraded map[int][][2]time.Time
}

func newHistory(seed uint64, p campaignParams) *history {
	return &history{seed: seed, params: p, codes: map[string]*codeRec{}, obs: map[string][]obs{}, calls: map[string][]call{},
		degraded: map[int][][2]time.Time{}}
}

// replicaDegraded reports whether replica r's replay store was on its local
// fallback at some time in [from, to].
func (h *history) replicaDegraded(r int, from, to time.Time) bool {
	for _, w := range h.degraded[r] {
		if !w[0].After(to) && !w[1].Before(from) {
			return true
		}
	}
	return false
}

func (h *history) addCode(c *codeRec) {
	if _, ok := h.codes[c.code]; !ok {
		h.order = append(h.order, c.code)
	}
	h.codes[c.code] = c
}

// violation is one broken invariant.
type violation struct {
	inv    string // I1..I5
	code   string // "" for fleet-wide (goroutines)
	detail string
}

// exemption is a documented reason a number WeChat delivered did not
// reach a client.
type exemption struct {
	code, reason string
}

// checkResult is the checker's verdict.
type checkResult struct {
	violations []violation
	exempt     []exemption
	// excusedResends counts second uses excused by a Redis outage.
	excusedResends int
	// resendsAfterBusy counts sends that followed a -1 which had used the
	// code (the documented resend after -1).
	resendsAfterBusy int
}

// replicaCalls returns the code's calls from replicas, in Seq order.
func (h *history) replicaCalls(code string) []call {
	var out []call
	for _, c := range h.calls[code] {
		if c.replica >= 0 {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b call) int { return int(a.Seq - b.Seq) })
	return out
}

// redisOut reports whether Redis was unreachable (a Redis fault active, or
// ended less than redisWindow ago) at some time in [from, to].
func (h *history) redisOut(from, to time.Time) bool {
	for _, f := range h.faults {
		if f.class != faultRedis && f.class != faultWipe {
			continue
		}
		end := f.end
		if end.IsZero() {
			end = f.start
		}
		if !f.start.After(to) && !end.Add(h.params.redisWindow).Before(from) {
			return true
		}
	}
	return false
}

// wiped reports whether Redis lost its data in (from, to].
func (h *history) wiped(from, to time.Time) bool {
	for _, f := range h.faults {
		if f.class == faultWipe && f.start.After(from) && !f.start.After(to) {
			return true
		}
	}
	return false
}

// killed returns the times replica r was SIGKILLed in [from, to].
func (h *history) killed(r int, from, to time.Time) bool {
	for _, f := range h.faults {
		if f.class == faultKill && f.replica == r && !f.start.Before(from) && !f.start.After(to) {
			return true
		}
	}
	return false
}

// stopped reports whether replica r was killed or terminated in [from, to].
func (h *history) stopped(r int, from, to time.Time) bool {
	for _, f := range h.faults {
		if (f.class == faultKill || f.class == faultTerm) && f.replica == r && !f.start.Before(from) && !f.start.After(to) {
			return true
		}
	}
	return false
}

// check verifies I1..I5 over the history.
func (h *history) check() checkResult {
	var res checkResult
	p := h.params
	for _, code := range h.order {
		rec := h.codes[code]
		os := h.obs[code]
		calls := h.replicaCalls(code)
		var uses []call
		for _, c := range calls {
			if c.use() {
				uses = append(uses, c)
			}
		}
		bad := func(inv, format string, args ...any) {
			res.violations = append(res.violations, violation{inv: inv, code: code, detail: fmt.Sprintf(format, args...)})
		}

		// I1: at most one call that may have used the code, unless the
		// next one was made while a Redis fault was active and it or the
		// previous one came from a replica on its local fallback, or
		// Redis lost its data in between; and then never invalid_code.
		degraded := false
		for k := 1; k < len(uses); k++ {
			prev, c := uses[k-1], uses[k]
			if prev.Errcode == -1 && prev.Status == http.StatusOK {
				// Documented (I1): wxphone resends once after -1, WeChat's
				// "busy, retry"; -1 may follow a use, so I3 then forbids
				// invalid_code.
				res.resendsAfterBusy++
				continue
			}
			// Degraded mode: a replica on its local fallback claims on its
			// own, so either it sends a code another replica holds, or
			// another replica sends a code it claimed.
			fellBack := func(x call) bool {
				return h.replicaDegraded(x.replica, x.Received.Add(-p.redisWindow/2), x.Received.Add(200*time.Millisecond))
			}
			// The one resend after -1 belongs to the exchange of the -1
			// call it follows: its claim, made then, decides (an exchange
			// claimed during an outage may resend after Redis is back).
			first := exchangeStart(calls, c)
			out := h.redisOut(first.Received.Add(-p.redisWindow), first.Received) && (fellBack(first) || fellBack(prev))
			if out || h.wiped(prev.Received, c.Received) {
				degraded = true
				res.excusedResends++
				continue
			}
			var notes []string
			if c.replica == prev.replica && c.Received.Sub(prev.Done) < time.Second {
				notes = append(notes, fmt.Sprintf("the same replica resent it %d ms after the first call ended", c.Received.Sub(prev.Done).Milliseconds()))
			}
			if h.redisOut(c.Received.Add(-p.redisWindow), c.Received) {
				notes = append(notes, "a Redis fault was active but neither replica was on its local fallback")
			}
			if h.redisOut(prev.Received.Add(-p.redisWindow), prev.Received) {
				notes = append(notes, "the earlier call was made during or just after a Redis fault")
			}
			note := ""
			if len(notes) > 0 {
				note = " (" + strings.Join(notes, "; ") + ")"
			}
			bad("I1", "call #%d (replica %d) reached WeChat after call #%d (replica %d: %s) may have used the code%s", c.Seq, c.replica, prev.Seq, prev.replica, prev, note)
		}
		if degraded {
			for _, o := range os {
				if o.errCode == "invalid_code" {
					bad("I1", "invalid_code (client %d attempt %d) for a code sent twice during a Redis outage", o.client, o.attempt)
					break
				}
			}
		}

		// I2: a number WeChat delivered reaches a client; no 200 carries
		// another number.
		for _, o := range os {
			if o.status == http.StatusOK && (rec.phone == "" || o.phone != rec.phone) {
				bad("I2", "a 200 with number %s, WeChat's number for the code is %q", maskNumber(o.phone), maskNumber(rec.phone))
				break
			}
		}
		var delivered []call
		for _, c := range calls {
			if c.Answered && c.Delivered {
				delivered = append(delivered, c)
			}
		}
		if len(delivered) > 0 {
			got := false
			for _, o := range os {
				got = got || (o.status == http.StatusOK && o.phone == rec.phone && rec.phone != "")
			}
			if !got {
				c := delivered[0]
				var last time.Time
				for _, o := range os {
					last = maxTime(last, o.done)
				}
				switch {
				case h.killed(c.replica, c.Received, c.Done.Add(p.killGrace)):
					res.exempt = append(res.exempt, exemption{code, "replica killed mid-exchange"})
				case h.stopped(c.replica, c.Done, maxTime(last, c.Done)) && h.wiped(c.Done, maxTime(last, c.Done)):
					res.exempt = append(res.exempt, exemption{code, "replica and Redis data both lost"})
				default:
					bad("I2", "WeChat delivered the number to replica %d (call #%d) and no client got it", c.replica, c.Seq)
				}
			}
		}

		// I2, continued: a replica must wait for WeChat until its own
		// exchange timeout. An answer WeChat had ready within that time
		// and could not deliver because the replica had hung up (not
		// killed) is a number lost by the replica.
		for _, c := range calls {
			ready := time.Duration(c.LatencyMS) * time.Millisecond
			if !c.Answered || c.Result != wxmock.CallGone || ready == 0 || ready >= p.exchangeTimeout-500*time.Millisecond {
				continue
			}
			if h.killed(c.replica, c.Received, c.Received.Add(ready)) {
				continue
			}
			bad("I2", "replica %d hung up on call #%d after %v, before its exchange timeout (%v); WeChat's number was ready after %v", c.replica, c.Seq,
				c.Done.Sub(c.Received).Round(time.Millisecond), p.exchangeTimeout, ready)
		}

		// I3: invalid_code only when the first call that may have used
		// the code was refused with 40029.
		for _, o := range os {
			if o.errCode != "invalid_code" {
				continue
			}
			if len(uses) == 0 {
				bad("I3", "invalid_code, but no call that could have been refused reached WeChat")
			} else if f := uses[0]; f.Consumed || f.Errcode != 40029 || f.Status != http.StatusOK || f.Result == wxmock.CallResetBeforeRead {
				bad("I3", "invalid_code, but WeChat's first use of the code (call #%d) was not a 40029 refusal: %s", f.Seq, f)
			}
			break
		}

		// I4: outcome_unknown only when the code may have reached WeChat,
		// or an attempt was cut by a replica being killed.
		for _, o := range os {
			if o.errCode != "outcome_unknown" {
				continue
			}
			ok := false
			for _, c := range calls {
				ok = ok || c.ambiguous()
			}
			for _, a := range os {
				ok = ok || h.killed(a.replica, a.sent, a.done.Add(p.exchangeTimeout))
			}
			if !ok {
				bad("I4", "outcome_unknown (client %d attempt %d) for a code that never reached WeChat in a way that could have used it", o.client, o.attempt)
			}
			break
		}

		// I5: every request answered within its deadline plus slack.
		for _, o := range os {
			if d := o.done.Sub(o.sent); d > p.requestTimeout+p.slack {
				bad("I5", "client %d attempt %d on replica %d took %v (deadline %v + slack %v): %s", o.client, o.attempt, o.replica, d.Round(time.Millisecond), p.requestTimeout, p.slack, o)
			}
		}
	}
	for _, g := range h.gor {
		switch {
		case g.err != "":
			res.violations = append(res.violations, violation{inv: "I5", detail: fmt.Sprintf("replica %d: goroutines not measured: %s", g.replica, g.err)})
		case g.after > g.baseline+h.params.goroutineSlack:
			res.violations = append(res.violations, violation{inv: "I5", detail: fmt.Sprintf("replica %d: %d goroutines after the campaign, baseline %d (slack %d)", g.replica, g.after, g.baseline, h.params.goroutineSlack)})
		}
	}
	return res
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// shortCode names a code in reports: a prefix (the emulator's codes are
// test data).
func shortCode(code string) string {
	if len(code) > 12 {
		return code[:12] + "…"
	}
	return code
}

// timeline renders what happened to code: client attempts, emulator calls
// and the faults active around them, in time order, in milliseconds from
// the code's first send.
func (h *history) timeline(code string) string {
	type line struct {
		at   time.Time
		text string
	}
	var ls []line
	var from, to time.Time
	for _, o := range h.obs[code] {
		if from.IsZero() || o.sent.Before(from) {
			from = o.sent
		}
		to = maxTime(to, o.done)
		ls = append(ls, line{o.sent, fmt.Sprintf("client %d attempt %d → replica %d", o.client, o.attempt, o.replica)})
		ls = append(ls, line{o.done, fmt.Sprintf("client %d attempt %d ← replica %d: %s", o.client, o.attempt, o.replica, o)})
	}
	for _, c := range h.calls[code] {
		who := fmt.Sprintf("replica %d", c.replica)
		if c.replica < 0 {
			who = "the campaign (pre-use)"
		}
		if from.IsZero() || c.Received.Before(from) {
			from = c.Received
		}
		to = maxTime(to, c.Done)
		ls = append(ls, line{c.Received, fmt.Sprintf("WeChat ← %s: call #%d received", who, c.Seq)})
		ls = append(ls, line{c.Done, fmt.Sprintf("WeChat → %s: %s", who, c)})
	}
	for _, f := range h.faults {
		end := f.end
		if end.IsZero() {
			end = f.start
		}
		// Infrastructure faults around the code's life; emulator faults
		// only just before and during it (a call shows the fault that
		// decided it).
		lead := 5 * time.Second
		if f.class == faultEmulator {
			lead = 2 * time.Second
		}
		if f.start.After(to.Add(time.Second)) || end.Before(from.Add(-lead)) {
			continue
		}
		ls = append(ls, line{f.start, "fault " + f.class + ": " + f.String()})
		if !f.end.IsZero() {
			ls = append(ls, line{f.end, "fault " + f.class + " ends: " + f.kind})
		}
	}
	sort.SliceStable(ls, func(i, j int) bool { return ls[i].at.Before(ls[j].at) })
	var b strings.Builder
	for _, l := range ls {
		fmt.Fprintf(&b, "    %+8d ms  %s\n", l.at.Sub(from).Milliseconds(), l.text)
	}
	return b.String()
}

// report renders the violations, grouped by code, each code with its
// timeline.
func (h *history) report(res checkResult) string {
	var b strings.Builder
	var codes []string
	byCode := map[string][]violation{}
	for _, v := range res.violations {
		if v.code == "" {
			fmt.Fprintf(&b, "VIOLATION %s: %s (seed %d)\n", v.inv, v.detail, h.seed)
			continue
		}
		if _, ok := byCode[v.code]; !ok {
			codes = append(codes, v.code)
		}
		byCode[v.code] = append(byCode[v.code], v)
	}
	for _, code := range codes {
		kind := ""
		if c := h.codes[code]; c != nil {
			kind = c.kind
		}
		for _, v := range byCode[code] {
			fmt.Fprintf(&b, "VIOLATION %s: code %s (%s): %s (seed %d)\n", v.inv, shortCode(code), kind, v.detail, h.seed)
		}
		fmt.Fprintf(&b, "  timeline of %s (ms from its first send):\n%s", shortCode(code), h.timeline(code))
	}
	return b.String()
}
