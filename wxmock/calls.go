package wxmock

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Call results: how a request to the phone or jscode2session endpoint
// ended, in [Call.Result].
const (
	// CallDelivered: the answer was written to a client that was still
	// connected.
	CallDelivered = "delivered"
	// CallGone: the client left before the answer could be written (during
	// an injected latency, or the write failed). Unless the deciding fault
	// was reset_before_read, the request was processed all the same.
	CallGone = "gone"
	// CallDropped: drop_after_consume; processed, then the connection was
	// closed without a byte.
	CallDropped = "dropped"
	// CallResetBeforeRead: reset_before_read; nothing was processed.
	CallResetBeforeRead = "reset_before_read"
	// CallResetAfterConsume: reset_after_consume; processed, then the
	// stream (HTTP/2) or the connection (HTTP/1) was reset.
	CallResetAfterConsume = "reset_after_consume"
)

// Call is one request to the phone or jscode2session endpoint, as kept in
// the call log when [Options.RecordCalls] is set (see [Server.Calls] and
// GET /admin/calls). It says what WeChat did with the request and whether
// its answer reached the client.
type Call struct {
	// Seq orders the calls by when the emulator decided them (processed
	// the code, or chose not to), from 1.
	Seq int64 `json:"seq"`
	// Endpoint is "phone" or "jscode2session".
	Endpoint string `json:"endpoint"`
	// Code is the code the request carried ("" when none could be read).
	Code string `json:"code"`
	// Local is the emulator address the request arrived at (useful when
	// one emulator listens on several addresses).
	Local string `json:"local"`
	// Proto is the request's protocol, "HTTP/1.1" or "HTTP/2.0".
	Proto string `json:"proto"`
	// Received is the real time the request reached the emulator.
	Received time.Time `json:"received"`
	// Done is the real time the answer was written, or the request ended
	// without one.
	Done time.Time `json:"done"`
	// Fault is the kind of the deciding fault ("" for none).
	Fault string `json:"fault,omitempty"`
	// LatencyMS is the injected delay before the answer, in milliseconds.
	LatencyMS int `json:"latency_ms,omitempty"`
	// Processed reports whether the endpoint's logic ran (code checks and
	// consumption): false for faults without consume and for
	// reset_before_read.
	Processed bool `json:"processed"`
	// Consumed reports whether this call used the code: it was valid
	// before and is spent now, whatever the answer said.
	Consumed bool `json:"consumed"`
	// Answered reports whether a successful answer (a phone number, a
	// session) was produced, delivered or not.
	Answered bool `json:"answered"`
	// Errcode is the errcode of the answer produced (0 = success); 0 for
	// http_status faults and reset_before_read.
	Errcode int `json:"errcode"`
	// Status is the HTTP status of the answer produced: 200, an
	// http_status fault's status, or 0 when none was produced
	// (reset_before_read).
	Status int `json:"status"`
	// Result is one of the Call* constants.
	Result string `json:"result"`
	// H2Error is the RST_STREAM error code sent by reset_after_consume
	// over HTTP/2.
	H2Error string `json:"h2_error,omitempty"`
	// Delivered reports whether the answer was written to a client that
	// was still connected (Result == CallDelivered).
	Delivered bool `json:"delivered"`
}

// callLog is the optional per-call record.
type callLog struct {
	on  atomic.Bool
	seq atomic.Int64
	mu  sync.Mutex
	log []Call
}

// add appends c and returns its index (for undeliver).
func (l *callLog) add(c Call) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log = append(l.log, c)
	return len(l.log) - 1
}

// undeliver marks the call at i, logged as delivered, as gone: the write
// of its answer failed. A reset of the log since makes it a no-op.
func (l *callLog) undeliver(i int, seq int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i < len(l.log) && l.log[i].Seq == seq {
		l.log[i].Result, l.log[i].Delivered = CallGone, false
	}
}

func (l *callLog) reset() {
	l.mu.Lock()
	l.log = nil
	l.mu.Unlock()
}

// SetRecordCalls switches the call log on or off (see
// [Options.RecordCalls]). Switching it off keeps what was recorded.
func (s *Server) SetRecordCalls(on bool) {
	s.calls.on.Store(on)
}

// Calls returns the call log in Seq order: every phone and jscode2session
// request that ended while [Options.RecordCalls] was on, since the start
// or the last [Server.ResetStats].
func (s *Server) Calls() []Call {
	s.calls.mu.Lock()
	out := slices.Clone(s.calls.log)
	s.calls.mu.Unlock()
	slices.SortFunc(out, func(a, b Call) int {
		switch {
		case a.Seq < b.Seq:
			return -1
		case a.Seq > b.Seq:
			return 1
		}
		return 0
	})
	return out
}
