package wxmock

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// MaxFaultLatency bounds Fault.LatencyMS.
const MaxFaultLatency = 10 * time.Minute

// Fault is an injected misbehaviour of the WeChat endpoints. Faults apply in
// insertion order: each matching latency fault adds its delay, and the
// first matching non-latency fault decides the outcome (no matching
// non-latency fault: normal processing). Every fault that is applied to a
// request uses up one of its Count.
type Fault struct {
	// ID is assigned by [Server.AddFault] ("f1", "f2", …); ignored on input.
	ID string `json:"id,omitempty"`
	// Endpoint is one of [EndpointPhone], [EndpointToken],
	// [EndpointStableToken], [EndpointJSCode2Session],
	// [EndpointAPIDomainIP] or [EndpointAll].
	Endpoint string `json:"endpoint"`
	// AppID, when set, restricts the fault to requests for that app: the
	// appid parameter for token, stable_token and jscode2session, the
	// access token's app for phone and get_api_domain_ip.
	AppID string `json:"appid,omitempty"`
	// Kind is one of the Fault* constants.
	Kind string `json:"kind"`
	// LatencyMS is the delay of a latency fault, 1..600000.
	LatencyMS int `json:"latency_ms,omitempty"`
	// Errcode is the non-zero errcode of an errcode fault.
	Errcode int `json:"errcode,omitempty"`
	// Errmsg optionally overrides the errmsg text of an errcode fault; the
	// emulator appends " rid: …".
	Errmsg string `json:"errmsg,omitempty"`
	// Status is the HTTP status (200..599) of an http_status fault.
	Status int `json:"status,omitempty"`
	// Consume makes errcode and http_status faults process the request
	// normally first (consuming a code, minting a token) and then discard
	// the real answer.
	Consume bool `json:"consume,omitempty"`
	// Count is how many matching requests the fault applies to; 0 means
	// until cleared.
	Count int `json:"count,omitempty"`
	// Remaining is, in [Server.Faults] output, how many applications are
	// left for a fault with a Count; ignored on input.
	Remaining int `json:"remaining,omitempty"`
}

// validate checks f and returns a description of the first problem.
func (f *Fault) validate() error {
	switch f.Endpoint {
	case EndpointPhone, EndpointToken, EndpointStableToken, EndpointJSCode2Session, EndpointAPIDomainIP, EndpointAll:
	default:
		return errors.New(`endpoint must be one of "phone", "token", "stable_token", "jscode2session", "get_api_domain_ip", "*"`)
	}
	if f.AppID != "" && !validIdent(f.AppID, 64) {
		return errors.New("appid must be 1..64 characters of [A-Za-z0-9_-]")
	}
	if f.Count < 0 {
		return errors.New("count must not be negative")
	}
	if f.Kind != FaultLatency && f.LatencyMS != 0 {
		return errors.New("latency_ms applies only to latency faults")
	}
	if f.Kind != FaultErrcode && (f.Errcode != 0 || f.Errmsg != "") {
		return errors.New("errcode and errmsg apply only to errcode faults")
	}
	if f.Kind != FaultHTTPStatus && f.Status != 0 {
		return errors.New("status applies only to http_status faults")
	}
	if f.Consume && f.Kind != FaultErrcode && f.Kind != FaultHTTPStatus {
		return errors.New("consume applies only to errcode and http_status faults")
	}
	switch f.Kind {
	case FaultLatency:
		if f.LatencyMS <= 0 || time.Duration(f.LatencyMS)*time.Millisecond > MaxFaultLatency {
			return errors.New("latency_ms must be 1..600000")
		}
	case FaultErrcode:
		if f.Errcode == 0 {
			return errors.New("errcode must be non-zero")
		}
		if f.Errmsg != "" && !validFreeText(f.Errmsg, 256) {
			return errors.New("errmsg must be at most 256 printable characters")
		}
	case FaultHTTPStatus:
		if f.Status < 200 || f.Status > 599 {
			return errors.New("status must be 200..599")
		}
	case FaultDropAfterConsume, FaultResetBeforeRead:
	case FaultUnsignedSuccess, FaultBadSignature:
		if f.Endpoint != EndpointPhone {
			return errors.New(`unsigned_success and bad_signature apply only to the "phone" endpoint`)
		}
	default:
		return errors.New(`kind must be one of "latency", "errcode", "http_status", "drop_after_consume", "reset_before_read", "unsigned_success", "bad_signature"`)
	}
	return nil
}

type faultEntry struct {
	f         Fault
	remaining int // meaningful when f.Count > 0
}

// faultStore holds the active faults. active mirrors len(list) so that the
// request path can skip the lock when no fault is configured.
type faultStore struct {
	mu     sync.Mutex
	list   []*faultEntry
	nextID int
	active atomic.Int32
}

// pick selects the faults for one request: the summed latency of the
// matching latency faults before the first matching non-latency fault, and
// that fault (nil when none). Applied faults use up one of their count.
func (fs *faultStore) pick(endpoint, appid string) (time.Duration, *Fault) {
	if fs.active.Load() == 0 {
		return 0, nil
	}
	var (
		delay  time.Duration
		action *Fault
		spent  bool
	)
	fs.mu.Lock()
	for _, e := range fs.list {
		if e.f.Endpoint != EndpointAll && e.f.Endpoint != endpoint {
			continue
		}
		if e.f.AppID != "" && e.f.AppID != appid {
			continue
		}
		if e.f.Count > 0 {
			e.remaining--
			spent = spent || e.remaining == 0
		}
		if e.f.Kind == FaultLatency {
			delay += time.Duration(e.f.LatencyMS) * time.Millisecond
			continue
		}
		f := e.f
		action = &f
		break
	}
	if spent {
		kept := fs.list[:0]
		for _, e := range fs.list {
			if e.f.Count == 0 || e.remaining > 0 {
				kept = append(kept, e)
			}
		}
		clear(fs.list[len(kept):])
		fs.list = kept
		fs.active.Store(int32(len(kept))) // #nosec G115 -- a handful of faults; AddFault bounds the list far below 2^31
	}
	fs.mu.Unlock()
	return delay, action
}

// AddFault validates f, appends it to the active faults and returns its id.
func (s *Server) AddFault(f Fault) (string, error) {
	f.ID, f.Remaining = "", 0
	if err := f.validate(); err != nil {
		return "", err
	}
	fs := &s.faults
	fs.mu.Lock()
	fs.nextID++
	f.ID = "f" + strconv.Itoa(fs.nextID)
	fs.list = append(fs.list, &faultEntry{f: f, remaining: f.Count})
	fs.active.Store(int32(len(fs.list))) // #nosec G115 -- see above
	fs.mu.Unlock()
	s.log.Info("wxmock: fault added", "id", f.ID, "endpoint", f.Endpoint, "kind", f.Kind, "count", f.Count)
	return f.ID, nil
}

// ClearFaults removes every active fault.
func (s *Server) ClearFaults() {
	fs := &s.faults
	fs.mu.Lock()
	fs.list = nil
	fs.active.Store(0)
	fs.mu.Unlock()
	s.log.Info("wxmock: faults cleared")
}

// Faults returns the active faults in application order.
func (s *Server) Faults() []Fault {
	fs := &s.faults
	fs.mu.Lock()
	defer fs.mu.Unlock()
	out := make([]Fault, 0, len(fs.list))
	for _, e := range fs.list {
		f := e.f
		if f.Count > 0 {
			f.Remaining = e.remaining
		}
		out = append(out, f)
	}
	return out
}

// sleepCtx waits d or until ctx is done; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// abortConn takes the connection away from net/http and closes it. With rst
// it sets SO_LINGER 0 first so that the peer sees a TCP reset. When the
// ResponseWriter cannot be hijacked (HTTP/2, httptest.ResponseRecorder) it
// panics with http.ErrAbortHandler, which net/http turns into an aborted
// response.
func abortConn(w http.ResponseWriter, rst bool) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if rst {
		c := conn
		if u, ok := c.(interface{ NetConn() net.Conn }); ok {
			c = u.NetConn()
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	}
	_ = conn.Close()
}

// gatewayPage returns a short HTML error page like a reverse proxy's.
func gatewayPage(status int) []byte {
	text := http.StatusText(status)
	if text == "" {
		text = "Error"
	}
	title := strconv.Itoa(status) + " " + text
	return []byte("<html>\r\n<head><title>" + title + "</title></head>\r\n<body>\r\n<center><h1>" +
		title + "</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
}
